const NEWLINE = 10;
const decoder = new TextDecoder();

/**
 * Reads an NDJSON byte stream in whole lines without decoding it: each yield is every complete line
 * that one network read brought, "\n"s included, exactly as sent, so a relay passes bytes on as they
 * are. A line may span reads and a read may hold many lines; a last line without "\n" comes at the end.
 */
export async function* ndjsonChunks(body: ReadableStream<Uint8Array>): AsyncGenerator<Uint8Array> {
  let pending: Uint8Array | undefined;
  for await (const bytes of body) {
    const data = pending ? Buffer.concat([pending, bytes]) : bytes;
    const end = data.lastIndexOf(NEWLINE);
    if (end === -1) {
      pending = data === bytes ? bytes.slice() : data;
      continue;
    }
    // A copy: the stream may reuse its buffer, and this chunk outlives the read.
    yield data.slice(0, end + 1);
    pending = end + 1 < data.length ? data.slice(end + 1) : undefined;
  }
  if (pending && decoder.decode(pending).trim()) yield pending;
}

/** The lines of NDJSON text, without their "\n"; blank lines are skipped. */
export function splitLines(text: string): string[] {
  return text.split("\n").filter((line) => line.trim());
}

/** The last line of an NDJSON chunk, decoded (only that line is). */
export function lastLine(chunk: Uint8Array): string {
  const end = chunk[chunk.length - 1] === NEWLINE ? chunk.length - 1 : chunk.length;
  const start = chunk.lastIndexOf(NEWLINE, end - 1) + 1;
  return decoder.decode(chunk.subarray(start, end));
}

/** The lines of an NDJSON byte stream one at a time, without their "\n". */
export async function* ndjsonLines(body: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const streaming = new TextDecoder();
  for await (const chunk of ndjsonChunks(body)) yield* splitLines(streaming.decode(chunk, { stream: true }));
}
