/**
 * Whether `method` on `path` is open without the token: only GET and HEAD of the listed paths, compared
 * exactly. `path` must be the very string the router routes on (Elysia's `path` in the request context),
 * never one parsed separately, so the check and the route that runs cannot disagree. Anything else, unknown
 * routes included, needs the token (deny by default).
 */
export function isPublicRoute(method: string, path: string, publicPaths: ReadonlySet<string>): boolean {
  return (method === "GET" || method === "HEAD") && publicPaths.has(path);
}
