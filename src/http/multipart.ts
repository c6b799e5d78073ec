import { ApiError, BadRequestError } from "../errors";

/** One part of a multipart/form-data body; read `data` to its end before asking for the next part. */
export interface MultipartPart {
  name: string;
  filename: string | undefined;
  contentType: string | undefined;
  /** The part's bytes as they arrive, in pieces. */
  data: AsyncGenerator<Uint8Array>;
}

const CRLF = Buffer.from("\r\n");
const HEADER_END = Buffer.from("\r\n\r\n");
/** The most header bytes a part may have. */
export const MAX_HEADER_BYTES = 16 * 1024;
/** The most bytes of transport padding (RFC 2046: whitespace) between a delimiter and its CRLF. */
export const MAX_PADDING_BYTES = 1024;
/** The most bytes of preamble before the first delimiter (clients send none). */
export const MAX_PREAMBLE_BYTES = 64 * 1024;

/** How much a body may hold in all, and what to say past it (a 413). */
export interface BodyBound {
  maxBytes: number;
  /** The 413's message. */
  message: string;
}

/** The boundary of a multipart/form-data Content-Type, or undefined when it is not one. */
export function multipartBoundary(contentType: string | null): string | undefined {
  if (!contentType || !/^multipart\/form-data\s*;/i.test(contentType)) return undefined;
  const match = /;\s*boundary=(?:"([^"]+)"|([^;\s]+))/i.exec(contentType);
  return match?.[1] ?? match?.[2];
}

/**
 * Reads a multipart/form-data body part by part without holding it whole: a part's bytes go to its
 * reader as they arrive, keeping back only enough to recognise the next boundary. (A hand-written
 * scanner: the uploads it serves are one file and one field, and Bun's formData() buffers everything.)
 * A malformed body throws a 400. Each read is scanned once: what is kept between reads is bounded (a
 * delimiter's length, or a header block or padding line up to its limit), so the work is linear in the
 * bytes; past `bound.maxBytes` read in all (a chunked body declares no length) it throws a 413.
 */
export async function* multipartParts(
  body: ReadableStream<Uint8Array>,
  boundary: string,
  bound: BodyBound = { maxBytes: Infinity, message: "" },
): AsyncGenerator<MultipartPart> {
  const reader = body.getReader();
  const delimiter = Buffer.from(`\r\n--${boundary}`);
  // The body starts with the delimiter minus its CRLF; pretend one came before it.
  let buffer: Buffer = Buffer.from(CRLF);
  let ended = false;
  let read = 0;

  async function more(): Promise<boolean> {
    if (ended) return false;
    const { done, value } = await reader.read();
    if (done) {
      ended = true;
      return false;
    }
    read += value.length;
    if (read > bound.maxBytes) {
      void reader.cancel().catch(() => {});
      throw new ApiError(413, bound.message);
    }
    buffer = buffer.length ? Buffer.concat([buffer, value]) : Buffer.from(value);
    return true;
  }

  /** The index of `needle` in the buffer, reading on until it comes; searches only bytes not searched before. */
  async function find(needle: Buffer, limit: number, tooLong: string): Promise<number> {
    let from = 0;
    for (;;) {
      const at = buffer.indexOf(needle, from);
      if (at >= 0) return at;
      if (buffer.length > limit) throw new BadRequestError(tooLong);
      from = Math.max(0, buffer.length - needle.length + 1);
      if (!(await more())) throw new BadRequestError("multipart body ends early");
    }
  }

  async function need(bytes: number): Promise<void> {
    while (buffer.length < bytes) if (!(await more())) throw new BadRequestError("multipart body ends early");
  }

  // Preamble: skip to the first delimiter, keeping back only what could be its start.
  for (let skipped = 0; ;) {
    const at = buffer.indexOf(delimiter);
    if (at >= 0) {
      buffer = buffer.subarray(at + delimiter.length);
      break;
    }
    const keep = Math.min(buffer.length, delimiter.length - 1);
    skipped += buffer.length - keep;
    if (skipped > MAX_PREAMBLE_BYTES) {
      throw new BadRequestError(
        `multipart body has no boundary in its first ${MAX_PREAMBLE_BYTES} bytes (a preamble may be at most that long)`,
      );
    }
    buffer = buffer.subarray(buffer.length - keep);
    if (!(await more())) throw new BadRequestError("multipart body has no boundary");
  }

  try {
    for (;;) {
      await need(2);
      if (buffer[0] === 0x2d && buffer[1] === 0x2d) return; // "--": the closing delimiter.
      // Transport padding (spaces, tabs) may follow a delimiter before its CRLF.
      const lineEnd = await find(
        CRLF,
        MAX_PADDING_BYTES,
        `multipart delimiter line is too long: at most ${MAX_PADDING_BYTES} bytes of padding may follow a boundary`,
      );
      buffer = buffer.subarray(lineEnd + 2);
      // A part without headers starts with the blank line at once.
      await need(2);
      const bare = buffer[0] === 0x0d && buffer[1] === 0x0a;
      const headerEnd = bare
        ? -1
        : await find(HEADER_END, MAX_HEADER_BYTES, `multipart part headers are too long: at most ${MAX_HEADER_BYTES} bytes`);
      const headerText = headerEnd < 0 ? "" : buffer.subarray(0, headerEnd).toString("utf8");
      buffer = buffer.subarray(headerEnd < 0 ? 2 : headerEnd + 4);
      const headers = parseHeaders(headerText);
      const disposition = headers.get("content-disposition") ?? "";
      const name = dispositionParam(disposition, "name");
      if (name === undefined) throw new BadRequestError("multipart part has no name");
      let finished = false;
      const data = (async function* () {
        for (;;) {
          const at = buffer.indexOf(delimiter);
          if (at >= 0) {
            if (at > 0) yield buffer.subarray(0, at);
            buffer = buffer.subarray(at + delimiter.length);
            finished = true;
            return;
          }
          // Keep back what could be the start of a delimiter split across reads.
          const safe = buffer.length - (delimiter.length - 1);
          if (safe > 0) {
            yield buffer.subarray(0, safe);
            buffer = buffer.subarray(safe);
          }
          if (!(await more())) throw new BadRequestError("multipart body ends early");
        }
      })();
      yield { name, filename: dispositionParam(disposition, "filename"), contentType: headers.get("content-type"), data };
      // The consumer may skip a part: drain it.
      if (!finished) for await (const _ of data);
    }
  } finally {
    reader.releaseLock();
  }
}

function parseHeaders(text: string): Map<string, string> {
  const headers = new Map<string, string>();
  for (const line of text.split("\r\n")) {
    const colon = line.indexOf(":");
    if (colon > 0) headers.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
  }
  return headers;
}

/** A parameter of a Content-Disposition header (quoted or not), e.g. name="file". */
function dispositionParam(disposition: string, param: string): string | undefined {
  const match = new RegExp(`;\\s*${param}="((?:[^"\\\\]|\\\\.)*)"|;\\s*${param}=([^;\\s]+)`, "i").exec(disposition);
  if (!match) return undefined;
  return match[1] !== undefined ? match[1].replace(/\\(.)/g, "$1") : match[2];
}
