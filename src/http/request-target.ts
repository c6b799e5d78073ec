import { errorResponse } from "../adapters/error-shapes";

/**
 * Refuses (400, Ollama's `{"error"}` shape) a request whose target the router and a URL parser could
 * read as two different paths, so that no check anywhere can be decided on one path while another runs.
 * Returns undefined for a well-formed request. server.ts calls it before anything else.
 *
 * What Bun hands over in `request.url` (Bun 1.4): the target resolved against the Host header, dot
 * segments and backslashes already normalised, but a fragment kept (`/healthz#/queue`); with a Host that is
 * no valid host (`a/b`, `u@h`, empty) the bare target, not an absolute URL; an absolute-form target
 * (`GET http://other/x`) with its authority replaced by the Host header's, so it cannot be told apart here.
 */
export function rejectMalformedTarget(request: Request): Response | undefined {
  const url = request.url;
  const parsed = /^https?:\/\/[^/?#]*\//.test(url) ? URL.parse(url) : null;
  if (!parsed) {
    return errorResponse("ollama", 400, "invalid Host header: it must be a host name or IP address, optionally with :port");
  }
  if (url.includes("#")) {
    return errorResponse("ollama", 400, "invalid request target: it must not contain '#' (a fragment is never sent to a server)");
  }
  // The router reads the path from the raw string (from the first "/" after the authority to the "?");
  // it must be the path a URL parser sees, byte for byte.
  const start = url.indexOf("/", url.indexOf("//") + 2);
  const query = url.indexOf("?", start);
  const rawPath = query === -1 ? url.slice(start) : url.slice(start, query);
  if (rawPath !== parsed.pathname) {
    return errorResponse(
      "ollama",
      400,
      "invalid request target: the path must be in normal form (no '.' or '..' segments, no '\\')",
    );
  }
  return undefined;
}
