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
    let response: Response;
    try {
      response = await fetch(`${this.config.url}${path}`, {
        method,
        headers: {
          ...(body === undefined ? {} : { "content-type": "application/json" }),
          ...(this.config.token ? { authorization: `Bearer ${this.config.token}` } : {}),
        },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch {
      throw new CliError(
        `cannot reach foreman at ${this.config.url} (is \`foreman serve\` running? FOREMAN_URL sets the address)`,
      );
    }
    const text = await response.text();
    let parsed: unknown;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch {
      parsed = null;
    }
    if (response.status === 401)
      throw new CliError(`unauthorized: foreman at ${this.config.url} wants a token (set FOREMAN_TOKEN)`);
    if (!response.ok) {
      const message = (parsed as { error?: string } | null)?.error ?? `HTTP ${response.status}`;
      throw new CliError(message === "job not found" ? `job not found: ${path.split("/")[2]}` : message);
    }
    return parsed as T;
  }
}
