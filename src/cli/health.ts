// `foreman health`: exits 0 when the server answers GET /healthz with 200, else 1. For supervisors without
// curl (the Docker image's HEALTHCHECK) and for scripts waiting on a start.

type Env = Record<string, string | undefined>;
type Io = { stdout: (text: string) => void; stderr: (text: string) => void };

/** Usage line of `foreman health`, for `foreman --help`. */
export const HEALTH_USAGE = `  foreman health                exit 0 if the server answers /healthz (at FOREMAN_URL, else FOREMAN_LISTEN's address);
                                prints "degraded: …" while it cannot reach Ollama or write its database`;

/** What `foreman health` says of /healthz's reasons (an older server sends none: Ollama was its only one). */
function degradedText(reasons: unknown): string {
  const list = Array.isArray(reasons) ? reasons.map(String) : ["ollama unreachable"];
  const texts: string[] = [];
  if (list.some((reason) => reason.startsWith("ollama")))
    texts.push("foreman runs but cannot reach Ollama; jobs wait in the queue");
  if (list.some((reason) => reason.startsWith("storage"))) {
    texts.push("foreman runs but cannot write its database (disk full?); new requests get 503 and the queue is held");
  }
  return texts.length ? texts.join("; ") : list.join("; ");
}

/** How long one probe waits for an answer, in milliseconds. */
const TIMEOUT_MS = 5_000;

/**
 * The server's address: FOREMAN_URL when set, else FOREMAN_LISTEN (default 127.0.0.1:8080) with a
 * wildcard host probed on loopback, so the command works beside `serve` with the same environment.
 */
export function healthUrl(env: Env): string {
  const url = env.FOREMAN_URL?.trim();
  if (url) return `${url.replace(/\/+$/, "")}/healthz`;
  const listen = env.FOREMAN_LISTEN?.trim() || "127.0.0.1:8080";
  const at = listen.lastIndexOf(":");
  let host = listen.slice(0, at);
  if (host === "" || host === "0.0.0.0") host = "127.0.0.1";
  else if (host === "[::]" || host === "::") host = "[::1]";
  return `http://${host}:${listen.slice(at + 1)}/healthz`;
}

/** Runs `foreman health`: one line on stdout when healthy, on stderr when not. */
export async function runHealthCommand(args: string[], env: Env = process.env, io: Io = defaultIo): Promise<number> {
  if (args.length) {
    io.stderr("foreman health: takes no arguments\nrun `foreman --help` for usage\n");
    return 2;
  }
  const url = healthUrl(env);
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(TIMEOUT_MS) });
    if (response.status === 200) {
      // Degraded still exits 0: foreman runs and queues; restarting it (what a supervisor does on a
      // failed probe) would not bring Ollama back.
      const body = (await response.json().catch(() => null)) as { degraded?: unknown; reasons?: unknown } | null;
      if (body?.degraded === true) io.stdout(`degraded: ${url}: ${degradedText(body.reasons)}\n`);
      else io.stdout(`healthy: ${url}\n`);
      return 0;
    }
    io.stderr(`foreman health: ${url} answered ${response.status}\n`);
  } catch (error) {
    const why = error instanceof Error && error.name === "TimeoutError" ? `no answer in ${TIMEOUT_MS / 1000}s` : "cannot connect";
    io.stderr(`foreman health: ${url}: ${why}\n`);
  }
  return 1;
}

const defaultIo: Io = { stdout: (text) => process.stdout.write(text), stderr: (text) => process.stderr.write(text) };
