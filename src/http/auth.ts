import { createHash, timingSafeEqual } from "node:crypto";

/**
 * Checks `Authorization: Bearer <token>` in constant time: both sides are hashed first, so neither
 * the token's content nor its length leaks through timing.
 */
export function bearerTokenMatches(header: string | null, token: string): boolean {
  const presented = /^Bearer\s+(.+)$/i.exec(header ?? "")?.[1]?.trim() ?? "";
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
