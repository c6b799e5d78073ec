/**
 * The app's routes (Elysia's table) as a lookup the transport can ask before reading a body: a body
 * sent to a route that does not exist is refused without being read. Patterns as Elysia writes them:
 * `:name` one segment, `*` the rest; a trailing slash is optional (Elysia's strictPath false), and a
 * GET route answers HEAD too.
 */
export class RouteTable {
  readonly #routes: Array<{ method: string; pattern: RegExp }>;

  constructor(routes: ReadonlyArray<{ method: string; path: string }>) {
    this.#routes = routes.map(({ method, path }) => ({ method, pattern: compile(path) }));
  }

  /** Whether some route answers `method` on `path` (the path the router routes on). */
  has(method: string, path: string): boolean {
    const bare = path.length > 1 && path.endsWith("/") ? path.slice(0, -1) : path;
    return this.#routes.some(
      (route) =>
        (route.method === method || route.method === "ALL" || (method === "HEAD" && route.method === "GET")) &&
        route.pattern.test(bare),
    );
  }
}

function compile(path: string): RegExp {
  const source = path
    .split("/")
    .map((segment) =>
      segment === "*" ? ".*" : segment.startsWith(":") ? "[^/]+" : segment.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"),
    )
    .join("/");
  return new RegExp(`^${source === "" ? "/" : source}$`);
}
