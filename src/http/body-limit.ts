import { apiForPath, errorResponse } from "../adapters/error-shapes";

/**
 * FOREMAN_MAX_BODY, answered as a JSON 413 in the route's API shape: undefined when the request may go
 * on. A declared Content-Length is checked without reading (no await on the hot path); a body without
 * one (chunked) is left to {@link readChunkedBody}.
 */
export function rejectDeclaredLength(request: Request, maxBytes: number): Response | undefined {
  const declared = request.headers.get("content-length");
  if (declared === null || Number(declared) <= maxBytes) return undefined;
  return tooLarge(request, `${declared} bytes`, maxBytes);
}

/**
 * A chunked body (no Content-Length) read here up to FOREMAN_MAX_BODY and handed on whole: past Bun's own
 * maxRequestBodySize the client would get an empty 413 and a closed connection, and under it the app would
 * read a body of any size. Returns the request to serve, or the JSON 413.
 */
export async function readChunkedBody(request: Request, maxBytes: number): Promise<Request | Response> {
  const parts: Uint8Array[] = [];
  let size = 0;
  const reader = request.body!.getReader();
  for (let next = await reader.read(); !next.done; next = await reader.read()) {
    size += next.value.byteLength;
    if (size > maxBytes) {
      void reader.cancel().catch(() => {});
      return tooLarge(request, `more than ${maxBytes} bytes`, maxBytes);
    }
    parts.push(next.value);
  }
  return new Request(request, { body: Buffer.concat(parts) });
}

function tooLarge(request: Request, size: string, maxBytes: number): Response {
  const api = apiForPath(new URL(request.url).pathname);
  return errorResponse(api, 413, `request body too large: ${size}, the limit is ${maxBytes} bytes (FOREMAN_MAX_BODY)`);
}
