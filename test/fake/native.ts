// What the /v1 and /v1/messages adapters share: they turn their request into a native one, run it on the
// fake's GPU, and rewrite the native answer (one object or an NDJSON stream) in their own wire format,
// the way Ollama's middleware wraps its native handlers.

/** One object of a native NDJSON stream (or a native non-streamed answer). */
export type NativeChunk = Record<string, unknown> & {
  message?: { role?: string; content?: string; tool_calls?: Array<{ id: string; function: NativeFunction }> };
  response?: string;
  done?: boolean;
  done_reason?: string;
  prompt_eval_count?: number;
  eval_count?: number;
  error?: string;
};
export type NativeFunction = { index: number; name: string; arguments: Record<string, unknown> };

const encoder = new TextEncoder();

/** Parses a request body as Ollama's middleware does: the JSON decoder's message on failure. */
export async function readJson(request: Request): Promise<{ body: Record<string, unknown> } | { error: string }> {
  const text = await request.text();
  if (!text) return { error: "EOF" };
  try {
    const body = JSON.parse(text);
    if (!body || typeof body !== "object" || Array.isArray(body)) return { error: "request body must be a JSON object" };
    return { body };
  } catch (error) {
    return { error: (error as Error).message };
  }
}

/** The native chunks of a streamed native answer, in order; throws if the connection drops. */
export async function* nativeChunks(reader: ReadableStreamDefaultReader<Uint8Array>): AsyncGenerator<NativeChunk> {
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let newline: number;
    while ((newline = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, newline);
      buffer = buffer.slice(newline + 1);
      if (line.trim()) yield JSON.parse(line) as NativeChunk;
    }
  }
  if (buffer.trim()) yield JSON.parse(buffer) as NativeChunk;
}

/**
 * A response body of text frames pulled from `frames`. If the native stream under it drops, this one
 * drops too (controller.error() without a reason, so Bun prints nothing); cancelling it cancels the native
 * stream, which frees the fake's GPU.
 */
export function frameStream(
  frames: AsyncGenerator<string>,
  reader: ReadableStreamDefaultReader<Uint8Array>,
): ReadableStream<Uint8Array> {
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        const { value, done } = await frames.next();
        if (done) controller.close();
        else controller.enqueue(encoder.encode(value));
      } catch {
        controller.error();
      }
    },
    cancel: async () => {
      await reader.cancel().catch(() => {});
    },
  });
}

/** Server-sent-event headers as Ollama's /v1 middleware sets them. */
export const SSE_HEADERS = { "content-type": "text/event-stream", "cache-control": "no-cache", connection: "keep-alive" };

/** A JSON body as Go's json.Encoder writes it: with a trailing newline. */
export const encoded = (body: unknown, status = 200) =>
  new Response(`${JSON.stringify(body)}\n`, { status, headers: { "content-type": "application/json" } });

/** Content as a string: a string, or the concatenated text of an array of text parts. */
export function textOf(content: unknown): string {
  if (typeof content === "string") return content;
  if (!Array.isArray(content)) return "";
  return content
    .filter((part) => part && typeof part === "object" && typeof (part as { text?: unknown }).text === "string")
    .map((part) => (part as { text: string }).text)
    .join("");
}

/** A JSON object with its keys sorted at every level, as Go marshals a map. */
export function sortedKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortedKeys);
  if (!value || typeof value !== "object") return value;
  return Object.fromEntries(
    Object.keys(value)
      .sort()
      .map((key) => [key, sortedKeys((value as Record<string, unknown>)[key])]),
  );
}

/** Random hex digits, for message and request ids. */
export const randomHex = (length: number) =>
  Array.from(crypto.getRandomValues(new Uint8Array(Math.ceil(length / 2))), (b) => b.toString(16).padStart(2, "0"))
    .join("")
    .slice(0, length);
