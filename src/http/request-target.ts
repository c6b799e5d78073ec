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
  // The router reads the path from the raw string; it must be the path a URL parser sees, byte for byte.
  if (routedPath(url) !== parsed.pathname) {
    return errorResponse(
      "ollama",
      400,
      "invalid request target: the path must be in normal form (no '.' or '..' segments, no '\\')",
    );
  }
  return undefined;
}

/**
 * The path Elysia routes `url` on, computed as it does (handler.standardHostname false, see src/app.ts;
 * elysia 1.4.30 adapter/web-standard/index.mjs): from the first "/" at or after index 7 (past "http://")
 * to the first "?" after it. The token check in the transport decides on this very string.
 */
export function routedPath(url: string): string {
  const start = url.indexOf("/", 7);
  const query = url.indexOf("?", start + 1);
  return url.substring(start, query === -1 ? undefined : query);
}
