/// <reference lib="dom" />
/** One Server-Sent Event: its name (default "message") and its data lines joined. */
export interface SseEvent {
  event: string;
  data: string;
}

/**
 * Reads an SSE body by hand (the page uses fetch() so it can send the token, which EventSource cannot):
 * yields each event as its blank line arrives; comments (keep-alives) are skipped.
 */
export async function* readSse(body: ReadableStream<Uint8Array>): AsyncGenerator<SseEvent> {
  const decoder = new TextDecoder();
  let buffer = "";
  // A CR at the end of a read may be the first half of a CRLF: held until the next read says.
  let heldCr = "";
  const reader = body.getReader();
  try {
    while (true) {
      const { value, done } = await reader.read();
      if (done) return;
      let text = heldCr + decoder.decode(value, { stream: true });
      heldCr = text.endsWith("\r") ? "\r" : "";
      if (heldCr) text = text.slice(0, -1);
      buffer += text.replace(/\r\n?/g, "\n");
      let end: number;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let event = "message";
        const data: string[] = [];
        for (const line of block.split("\n")) {
          if (line.startsWith(":")) continue;
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (field === "event") event = value;
          else if (field === "data") data.push(value);
        }
        if (data.length > 0) yield { event, data: data.join("\n") };
      }
    }
  } finally {
    // The reader stopped reading (or the body ended): let the server know, so it drops this watcher.
    void reader.cancel().catch(() => {});
  }
}
