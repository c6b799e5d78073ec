import { createHash, timingSafeEqual } from "node:crypto";

/**
 * Checks the client's token in constant time: `Authorization: Bearer <token>`, or, without that header,
 * `x-api-key: <token>` (how the Anthropic SDKs send their API key, so ANTHROPIC_API_KEY=<token> works).
 * Both sides are hashed first, so neither the token's content nor its length leaks through timing.
 */
export function tokenMatches(headers: Headers, token: string): boolean {
  const authorization = headers.get("authorization");
  const presented =
    authorization === null
      ? (headers.get("x-api-key")?.trim() ?? "")
      : (/^Bearer\s+(.+)$/i.exec(authorization)?.[1]?.trim() ?? "");
  const digest = (value: string) => createHash("sha256").update(value).digest();
  return timingSafeEqual(digest(presented), digest(token)) && presented.length > 0;
}

/**
 * Whether `method` on `path` is open without the token: only GET and HEAD of the listed paths, compared
 * exactly. `path` must be the very string the router routes on (Elysia's `path` in the request context),
 * never one parsed separately, so the check and the route that runs cannot disagree. Anything else, unknown
 * routes included, needs the token (deny by default).
 */
export function isPublicRoute(method: string, path: string, publicPaths: ReadonlySet<string>): boolean {
  return (method === "GET" || method === "HEAD") && publicPaths.has(path);
}
