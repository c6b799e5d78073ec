/** Ollama could not be reached (refused, reset, DNS, timeout before an answer): worth retrying. */
export class ConnectionError extends Error {
  override name = "ConnectionError";
}

/**
 * No connection to Ollama could be made at all (refused, no route, name not found): the request
 * never reached it, so it cannot have been this request's fault. A reset after connecting is not this.
 */
export class ConnectionRefusedError extends ConnectionError {
  override name = "ConnectionRefusedError";
}

/** Error codes of a connection never made. */
const NEVER_CONNECTED = new Set(["ECONNREFUSED", "ENOTFOUND", "EAI_AGAIN", "EHOSTUNREACH", "ENETUNREACH", "EADDRNOTAVAIL"]);

/** Ollama answered with an error status; `message` is its `error` text. */
export class HttpError extends Error {
  override name = "HttpError";
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** Options for {@link OllamaClient}. */
export interface OllamaClientOptions {
  /** Ollama's base URL, without a trailing slash. */
  baseUrl: string;
  /** Sent as `Authorization: Bearer …` when set. */
  token?: string;
}

/**
 * The target client. It sends only what Ollama needs: never the client's Host (a loopback-bound Ollama
 * answers 403 to a foreign one) nor its Authorization.
 */
export class OllamaClient {
  readonly baseUrl: string;
  readonly #headers: Record<string, string>;
  readonly #authOnly: Record<string, string>;
  readonly #streamHeaders: Record<string, string>;

  constructor(options: OllamaClientOptions) {
    this.baseUrl = options.baseUrl;
    this.#headers = { "content-type": "application/json" };
    this.#authOnly = {};
    this.#streamHeaders = { "content-type": "application/octet-stream" };
    if (options.token) {
      this.#headers.authorization = this.#authOnly.authorization = this.#streamHeaders.authorization = `Bearer ${options.token}`;
    }
  }

  /**
   * Sends one request and returns the response when it is 2xx. Throws ConnectionError when Ollama is
   * unreachable and HttpError (with Ollama's status and error text) otherwise. An abort rethrows the abort.
   */
  async request(method: string, path: string, body?: string, signal?: AbortSignal): Promise<Response> {
    const response = await this.#send(method, path, body, signal);
    if (!response.ok) throw new HttpError(response.status, await errorText(response));
    return response;
  }

  /** GET a JSON document (tags, ps, version). */
  async getJson<T>(path: string, signal?: AbortSignal): Promise<T> {
    const response = await this.request("GET", path, undefined, signal);
    return (await response.json()) as T;
  }

  /**
   * Relays Ollama's answer as it is, status, content type and body, for the routes that bypass the
   * queue (embed, show, version). Throws ConnectionError when Ollama is unreachable.
   */
  async passthrough(
    method: string,
    path: string,
    body: string | ReadableStream<Uint8Array> | undefined,
    signal?: AbortSignal,
  ): Promise<Response> {
    const response = await this.#send(method, path, body, signal);
    const headers: Record<string, string> = {};
    const contentType = response.headers.get("content-type");
    if (contentType) headers["content-type"] = contentType;
    return new Response(response.body, { status: response.status, headers });
  }

  async #send(
    method: string,
    path: string,
    body: string | ReadableStream<Uint8Array> | undefined,
    signal: AbortSignal | undefined,
  ): Promise<Response> {
    try {
      return await fetch(this.baseUrl + path, {
        method,
        headers: body === undefined ? this.#authOnly : typeof body === "string" ? this.#headers : this.#streamHeaders,
        body,
        signal,
        redirect: "manual",
        // A streamed body (a blob upload of gigabytes) goes on as it arrives, never held in memory.
        ...(typeof body === "object" ? { duplex: "half" } : {}),
      });
    } catch (error) {
      if (signal?.aborted) throw signal.reason ?? error;
      const message = `ollama unreachable at ${this.baseUrl}: ${fetchErrorText(error)}`;
      if (NEVER_CONNECTED.has((error as { code?: string }).code ?? "")) throw new ConnectionRefusedError(message);
      throw new ConnectionError(message);
    }
  }
}

/** What each connection error code means, in foreman's words. */
const CONNECTION_ERRORS: Record<string, string> = {
  ECONNREFUSED: "connection refused",
  ECONNRESET: "the connection was closed unexpectedly",
  ENOTFOUND: "host name not found",
  EAI_AGAIN: "host name lookup failed",
  EHOSTUNREACH: "host unreachable",
  ENETUNREACH: "network unreachable",
  ETIMEDOUT: "connection timed out",
  EADDRNOTAVAIL: "address not available",
  UND_ERR_SOCKET: "the connection was closed unexpectedly",
};

/**
 * A fetch failure as users and logs see it: foreman's words for a known error code, else the message with
 * Bun's advice to developers removed ("For more information, pass `verbose: true` in the second argument
 * to fetch()", "Is the computer able to access the url?"), which means nothing to a foreman user.
 */
export function fetchErrorText(error: unknown): string {
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code === "string" && CONNECTION_ERRORS[code]) return CONNECTION_ERRORS[code];
  const message = error instanceof Error ? error.message : String(error);
  return (
    message
      .replace(/\s*For more information, pass `verbose: true`[^.]*(\(\))?\.?/g, "")
      .replace(/\s*Is the computer able to access the url\?/g, "")
      .trim() || "fetch failed"
  );
}

async function errorText(response: Response): Promise<string> {
  const text = await response.text().catch(() => "");
  try {
    const parsed = JSON.parse(text) as { error?: unknown };
    if (typeof parsed.error === "string") return parsed.error;
  } catch {
    // Not JSON: Ollama's router answers plain text ("404 page not found"); keep it as the message.
  }
  return text.trim() || `${response.status} ${response.statusText}`.trim();
}
