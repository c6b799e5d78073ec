import type { Server } from "bun";
import type { Logger } from "../log";
import { principalOf } from "../keys/principal";

type Handler = (request: Request, server: Server<undefined>) => Response | Promise<Response>;

/** The path of a request URL without its query (which is never logged), without parsing a URL object. */
function pathOf(url: string): string {
  const start = url.indexOf("/", url.indexOf("//") + 2);
  if (start === -1) return "/";
  const query = url.indexOf("?", start);
  return query === -1 ? url.slice(start) : url.slice(start, query);
}

/**
 * Wraps the server's fetch so every answer, the transport checks' and auth's refusals included, is logged
 * as one `request` line at info: method, path, status, duration_ms (until the response's head was ready;
 * a stream's body may go on) and, for a queued generation or a submitted job, its job id. Headers and the
 * body are never logged. At warn and above the handler is returned as it is, costing nothing.
 *
 * The line is written off the request's path: its fields are taken when the answer is ready, and the
 * line (JSON and a write to stdout) in a later turn of the event loop, after Bun has sent the answer.
 */
export function logRequests(log: Logger, handle: Handler): Handler {
  if (!log.enabled("info")) return handle;
  const write = (request: Request, status: number, started: number, response?: Response) => {
    const fields = {
      method: request.method,
      path: pathOf(request.url),
      status,
      duration_ms: Math.round((performance.now() - started) * 10) / 10,
      job: response?.headers.get("x-foreman-job-id") ?? undefined,
      // The key's name, never its secret (no header is logged).
      key: principalOf(request).name ?? undefined,
    };
    setImmediate(() => log.info("request", fields));
  };
  return (request, server) => {
    const started = performance.now();
    let answer: Response | Promise<Response>;
    try {
      answer = handle(request, server);
    } catch (error) {
      write(request, 500, started);
      throw error;
    }
    if (answer instanceof Response) {
      write(request, answer.status, started, answer);
      return answer;
    }
    return answer.then(
      (response) => {
        write(request, response.status, started, response);
        return response;
      },
      (error: unknown) => {
        write(request, 500, started);
        throw error;
      },
    );
  };
}
