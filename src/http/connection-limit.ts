import type { Server } from "bun";
import { readFileSync } from "node:fs";
import { apiForPath, errorResponse } from "../adapters/error-shapes";
import type { Logger } from "../log";

type Handler = (request: Request, server: Server<undefined>) => Response | Promise<Response>;

/**
 * How long a connection that sent a request is counted as open: at least the longest keep-alive idle
 * timeout (Bun.serve's idleTimeout in server.ts), since no event says when it closed. Longer only counts
 * too many, which closes keep-alive connections a little early under load.
 */
const KEEP_ALIVE_WINDOW_MS = 30_000;

/** Descriptors kept for everything but client sockets: the database and its -wal/-shm, the lock, the worker's calls, logs. */
const RESERVED_DESCRIPTORS = 64;

/**
 * The bound on open connections (FOREMAN_MAX_CONNECTIONS), so that a flood cannot take the last file
 * descriptor from the worker and the database. Bun.serve says nothing per connection for HTTP (no accept
 * or close callback, no limit of its own), so two counts stand in:
 * - requests in flight, queue waits and streams included until their last byte (`server.pendingRequests`,
 *   this one counted): past the bound a request gets 503 in its API's shape with Retry-After and
 *   `Connection: close`, its body unread and its socket given back at once;
 * - connections kept alive after an answer, counted by the client's address and port for
 *   {@link KEEP_ALIVE_WINDOW_MS} after their last request: at the bound, answers carry `Connection: close`
 *   instead, so idle sockets cannot pile up past it (a client that sent one request and then sits on the
 *   socket is closed after its answer); under it, keep-alive is as usual.
 * Client sockets so stay under about twice the bound, plus an upstream socket per relayed call in flight.
 */
export class ConnectionLimit {
  readonly #max: number;
  /** Connections that may be idle in keep-alive: "address port" → when their last request came. */
  readonly #kept = new Map<string, number>();

  constructor(max: number) {
    this.#max = max;
  }

  /** `handle` under the bound. */
  wrap(handle: Handler): Handler {
    return (request, server) => {
      if (server.pendingRequests > this.#max) {
        return errorResponse(
          apiForPath(URL.parse(request.url)?.pathname ?? ""),
          503,
          `foreman is at its limit of ${this.#max} open requests (FOREMAN_MAX_CONNECTIONS); retry shortly`,
          { "retry-after": "1", connection: "close" },
        );
      }
      // A client that closes after this answer itself is not counted.
      if (/\bclose\b/i.test(request.headers.get("connection") ?? "")) return handle(request, server);
      const ip = server.requestIP(request);
      if (ip && this.#admit(`${ip.address} ${ip.port}`)) return handle(request, server);
      const answer = handle(request, server);
      return answer instanceof Response ? closingAfter(answer) : answer.then(closingAfter);
    };
  }

  /**
   * `request`'s answer is ending now, long after it came (a queue wait, a stream): a connection counted as
   * kept alive is counted from now, since its idle timeout starts again now. Not counted: nothing to do.
   */
  answered(request: Request, server: Server<undefined>): void {
    const ip = server.requestIP(request);
    const key = ip && `${ip.address} ${ip.port}`;
    if (!key || !this.#kept.has(key)) return;
    this.#kept.delete(key);
    this.#kept.set(key, performance.now());
  }

  /** Whether the connection `key` may stay open after this answer; counts it when it may. */
  #admit(key: string): boolean {
    const now = performance.now();
    if (this.#kept.has(key) || this.#kept.size < this.#max) {
      this.#kept.delete(key);
      this.#kept.set(key, now);
      return true;
    }
    // Oldest first (a Map keeps insertion order): drop those whose keep-alive has surely ended.
    for (const [old, seen] of this.#kept) {
      if (now - seen < KEEP_ALIVE_WINDOW_MS) break;
      this.#kept.delete(old);
    }
    if (this.#kept.size >= this.#max) return false;
    this.#kept.set(key, now);
    return true;
  }
}

/** The answer with `Connection: close` (a copy when its headers are immutable, as a relayed fetch's are). */
export function closingAfter(response: Response): Response {
  try {
    response.headers.set("connection", "close");
    return response;
  } catch {
    const headers = new Headers(response.headers);
    headers.set("connection", "close");
    return new Response(response.body, { status: response.status, statusText: response.statusText, headers });
  }
}

/** Warns at start when the bound (about three descriptors per unit) and the reserve do not fit under the open-file limit. */
export function warnIfFewDescriptors(log: Logger, max: number, limit = openFileLimit()): void {
  if (limit === undefined || limit >= 3 * max + RESERVED_DESCRIPTORS) return;
  log.warn("the open-file limit is too low for FOREMAN_MAX_CONNECTIONS: a flood could starve the worker and the database", {
    open_file_limit: limit,
    max_connections: max,
    fits: Math.max(1, Math.floor((limit - RESERVED_DESCRIPTORS) / 3)),
  });
}

/**
 * This process's open-file limit (the soft one, which Bun raises to the hard one at start), or undefined
 * where /proc does not tell it.
 */
export function openFileLimit(): number | undefined {
  try {
    const value = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync("/proc/self/limits", "utf8"))?.[1];
    return value === undefined || value === "unlimited" ? undefined : Number(value);
  } catch {
    return undefined;
  }
}
