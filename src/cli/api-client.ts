import type { ClientConfig } from "../config";

/** A failure the CLI reports as one line on stderr; `exitCode` 2 means the command was misused. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
  }
}

/** Talks to a running foreman over HTTP and turns its failures into one clear line each. */
export class ForemanApi {
  constructor(readonly config: ClientConfig) {}

  async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    return this.#answer<T>(path, await this.#send(method, path, body));
  }

  /** GET of a body that is not JSON (a file's content), as a stream; failures as {@link request}'s. */
  async download(path: string): Promise<ReadableStream<Uint8Array>> {
    const response = await this.#send("GET", path);
    if (!response.ok) await this.#answer(path, response);
    return response.body ?? new Blob([]).stream();
  }

  async #send(method: string, path: string, body?: unknown): Promise<Response> {
    try {
      return await fetch(`${this.config.url}${path}`, {
        method,
        headers: {
          // A FormData body (an upload) sets its own multipart content type.
          ...(body === undefined || body instanceof FormData ? {} : { "content-type": "application/json" }),
          ...(this.config.token ? { authorization: `Bearer ${this.config.token}` } : {}),
        },
        body: body === undefined ? undefined : body instanceof FormData ? body : JSON.stringify(body),
      });
    } catch {
      throw new CliError(
        `cannot reach foreman at ${this.config.url} (is \`foreman serve\` running? FOREMAN_URL sets the address)`,
      );
    }
  }

  async #answer<T>(path: string, response: Response): Promise<T> {
    const text = await response.text();
    let parsed: unknown;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch {
      parsed = null;
    }
    if (response.status === 401) {
      throw new CliError(
        this.config.token
          ? `unauthorized: foreman at ${this.config.url} refused the token in FOREMAN_TOKEN`
          : `unauthorized: foreman at ${this.config.url} wants a token (set FOREMAN_TOKEN)`,
      );
    }
    // Every error foreman answers carries an `error`; a body without one came from something else.
    if (!response.ok && !(parsed && typeof parsed === "object" && "error" in parsed)) await this.#checkIsForeman();
    if (!response.ok) {
      // Ollama's and the job API's errors are {"error": "..."}; OpenAI's (files, batches) {"error": {"message"}}.
      const error = (parsed as { error?: string | { message?: string } } | null)?.error;
      const message = (typeof error === "object" ? error?.message : error) ?? `HTTP ${response.status}`;
      throw new CliError(message === "job not found" ? `job not found: ${path.split("/")[2]}` : message);
    }
    return parsed as T;
  }

  /**
   * A failure from something else at FOREMAN_URL (Ollama itself, most often, which answers 404 for the
   * job API) would read as a bare "HTTP 404": foreman answers GET /healthz with its own JSON, so ask it.
   */
  async #checkIsForeman(): Promise<void> {
    let status: number | string;
    try {
      const response = await fetch(`${this.config.url}/healthz`, { signal: AbortSignal.timeout(5000) });
      const body = (await response.json().catch(() => null)) as Record<string, unknown> | null;
      if (body?.status === "ok" && typeof body.degraded === "boolean") return;
      status = response.status;
    } catch {
      status = "no answer";
    }
    throw new CliError(
      `${this.config.url} does not look like foreman (GET /healthz answered ${status}): is FOREMAN_URL pointing at Ollama?`,
    );
  }
}
