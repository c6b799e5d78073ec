/**
 * Splits a byte stream into lines, each without its "\n": a line may span chunks and a chunk may
 * hold many lines. A last line without "\n" is yielded at the end. Blank lines are skipped.
 */
export async function* ndjsonLines(body: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  let pending = "";
  for await (const chunk of body) {
    pending += decoder.decode(chunk, { stream: true });
    let newline = pending.indexOf("\n");
    if (newline === -1) continue;
    let start = 0;
    do {
      const line = pending.slice(start, newline);
      if (line.trim()) yield line;
      start = newline + 1;
      newline = pending.indexOf("\n", start);
    } while (newline !== -1);
    pending = pending.slice(start);
  }
  pending += decoder.decode();
  if (pending.trim()) yield pending;
}
