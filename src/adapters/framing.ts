/**
 * How an upstream body is cut into records, decided by its content type: NDJSON lines, Server-Sent
 * Events (a record ends at a blank line), or one whole body (a non-streaming JSON answer).
 */
export type Framing = "ndjson" | "sse" | "whole";

const NEWLINE = 10;
const decoder = new TextDecoder();

/** The content type each streamed framing is served and stored with (a stream's artifact, the job events feed). */
export const FRAMING_CONTENT_TYPES = {
  ndjson: "application/x-ndjson",
  sse: "text/event-stream",
} as const satisfies Record<Exclude<Framing, "whole">, string>;

/** The framing of an upstream answer from its Content-Type. */
export function framingFor(contentType: string): Framing {
  if (contentType.includes("ndjson")) return "ndjson";
  if (contentType.includes("text/event-stream")) return "sse";
  return "whole";
}

/**
 * Index just past the last complete record that ends inside `data` (0: none). SSE records end with
 * "\n\n"; `before` is the byte that preceded `data` in the stream (0 for none), so a "\n" that ends the
 * previous read and one that starts this read make a blank line too.
 */
function recordsEnd(data: Uint8Array, framing: Framing, before: number): number {
  if (framing === "ndjson") return data.lastIndexOf(NEWLINE) + 1;
  for (let i = data.length - 1; i >= 0; i--) {
    if (data[i] === NEWLINE && (i > 0 ? data[i - 1] : before) === NEWLINE) return i + 1;
  }
  return 0;
}

/**
 * Reads a byte stream in whole records without decoding it: each yield is every complete record that
 * one network read brought, delimiters included, exactly as sent, so a relay passes bytes on as they
 * are and a chunk never cuts a record. A last record without its delimiter comes at the end; a
 * `whole` body comes as one chunk when it is complete.
 *
 * Linear in the body: each read is scanned once and an unfinished record's reads are kept as a list,
 * joined once when it completes (a 10 MB record in 64 KB reads was copied and rescanned per read).
 */
export async function* recordChunks(body: ReadableStream<Uint8Array>, framing: Framing): AsyncGenerator<Uint8Array> {
  const pending: Uint8Array[] = [];
  let last = 0;
  for await (const bytes of body) {
    if (bytes.length === 0) continue;
    const end = framing === "whole" ? 0 : recordsEnd(bytes, framing, last);
    last = bytes[bytes.length - 1]!;
    if (end === 0) {
      // A copy: the stream may reuse its buffer, and these bytes outlive the read.
      pending.push(bytes.slice());
      continue;
    }
    pending.push(bytes.subarray(0, end));
    yield pending.length === 1 ? pending[0]!.slice() : Buffer.concat(pending);
    pending.length = 0;
    if (end < bytes.length) pending.push(bytes.slice(end));
  }
  if (pending.length === 0) return;
  const rest = pending.length === 1 ? pending[0]! : Buffer.concat(pending);
  if (decoder.decode(rest).trim()) yield rest;
}

/**
 * The records of a chunk of whole records (as {@link recordChunks} yields them), each with its delimiter,
 * as views of the chunk's bytes: joined, they are the chunk exactly. A `whole` body is one record.
 */
export function recordsOf(chunk: Uint8Array, framing: Framing): Uint8Array[] {
  if (framing === "whole") return [chunk];
  const records: Uint8Array[] = [];
  let start = 0;
  for (let i = chunk.indexOf(NEWLINE); i >= 0; i = chunk.indexOf(NEWLINE, i + 1)) {
    // An SSE record ends at a blank line; a run of newlines stays with the record it ends.
    if (framing === "sse" && !(i > start && chunk[i - 1] === NEWLINE)) continue;
    while (chunk[i + 1] === NEWLINE) i++;
    records.push(chunk.subarray(start, i + 1));
    start = i + 1;
  }
  if (start < chunk.length) records.push(chunk.subarray(start));
  return records;
}

/** The records of decoded text, without their delimiters; blank ones are skipped. */
export function splitRecords(text: string, framing: Framing): string[] {
  if (framing === "whole") return text.trim() ? [text] : [];
  return text.split(framing === "sse" ? "\n\n" : "\n").filter((record) => record.trim());
}

/** The last record of a chunk, decoded (only that record is). */
export function lastRecord(chunk: Uint8Array, framing: Framing): string {
  if (framing === "whole") return decoder.decode(chunk);
  let end = chunk.length;
  while (end > 0 && chunk[end - 1] === NEWLINE) end--;
  let start = end;
  if (framing === "ndjson") start = chunk.lastIndexOf(NEWLINE, end - 1) + 1;
  else {
    while (start > 0 && !(chunk[start - 1] === NEWLINE && chunk[start - 2] === NEWLINE)) start--;
  }
  return decoder.decode(chunk.subarray(start, end));
}

/** One Server-Sent Event: its `event:` name (if any) and its `data:` lines joined. */
export function parseSseRecord(record: string): { event: string | undefined; data: string } {
  let event: string | undefined;
  const data: string[] = [];
  for (const line of record.split("\n")) {
    if (line.startsWith("event:")) event = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(line[5] === " " ? 6 : 5));
  }
  return { event, data: data.join("\n") };
}

/** Parses JSON, or undefined when it is not JSON. */
export function tryJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
