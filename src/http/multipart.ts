import { BadRequestError } from "../errors";

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
const MAX_HEADER_BYTES = 16 * 1024;

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
 * A malformed body throws a 400.
 */
export async function* multipartParts(body: ReadableStream<Uint8Array>, boundary: string): AsyncGenerator<MultipartPart> {
  const reader = body.getReader();
  const delimiter = Buffer.from(`\r\n--${boundary}`);
  // The body starts with the delimiter minus its CRLF; pretend one came before it.
  let buffer: Buffer = Buffer.from(CRLF);
  let ended = false;

  async function more(): Promise<boolean> {
    if (ended) return false;
    const { done, value } = await reader.read();
    if (done) {
      ended = true;
      return false;
    }
    buffer = buffer.length ? Buffer.concat([buffer, value]) : Buffer.from(value);
    return true;
  }

  async function need(bytes: number): Promise<void> {
    while (buffer.length < bytes) if (!(await more())) throw new BadRequestError("multipart body ends early");
  }

  // Preamble: skip to the first delimiter.
  for (;;) {
    const at = buffer.indexOf(delimiter);
    if (at >= 0) {
      buffer = buffer.subarray(at + delimiter.length);
      break;
    }
    buffer = buffer.subarray(Math.max(0, buffer.length - delimiter.length));
    if (!(await more())) throw new BadRequestError("multipart body has no boundary");
  }

  try {
    for (;;) {
      await need(2);
      if (buffer[0] === 0x2d && buffer[1] === 0x2d) return; // "--": the closing delimiter.
      // Transport padding (spaces, tabs) may follow a delimiter before its CRLF.
      let lineEnd = buffer.indexOf(CRLF);
      while (lineEnd < 0) {
        if (!(await more())) throw new BadRequestError("multipart body ends early");
        lineEnd = buffer.indexOf(CRLF);
      }
      buffer = buffer.subarray(lineEnd + 2);
      let headerEnd = buffer.indexOf(HEADER_END);
      // A part without headers starts with the blank line at once.
      while (headerEnd < 0 && !(buffer[0] === 0x0d && buffer[1] === 0x0a)) {
        if (buffer.length > MAX_HEADER_BYTES) throw new BadRequestError("multipart part headers are too long");
        if (!(await more())) throw new BadRequestError("multipart body ends early");
        headerEnd = buffer.indexOf(HEADER_END);
      }
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
