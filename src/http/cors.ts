import { apiForPath, errorResponse } from "../adapters/error-shapes";

/** Origins Ollama always allows (R:envconfig/config.go:85-109): local pages on any port, and app shells. */
const DEFAULT_ORIGINS = [
  ...["http", "https"].flatMap((scheme) =>
    ["localhost", "127.0.0.1", "0.0.0.0"].flatMap((host) => [`${scheme}://${host}`, `${scheme}://${host}:*`]),
  ),
  "app://*",
  "file://*",
  "tauri://*",
  "vscode-webview://*",
  "vscode-file://*",
];

/** Request headers a browser may send: Ollama's list, the OpenAI SDK's x-stainless-* included, and foreman's own. */
const ALLOW_HEADERS = [
  "Authorization",
  "Content-Type",
  "User-Agent",
  "Accept",
  "X-Requested-With",
  "Openai-Beta",
  "X-Stainless-Arch",
  "X-Stainless-Async",
  "X-Stainless-Custom-Poll-Interval",
  "X-Stainless-Helper-Method",
  "X-Stainless-Lang",
  "X-Stainless-Os",
  "X-Stainless-Package-Version",
  "X-Stainless-Poll-Helper",
  "X-Stainless-Retry-Count",
  "X-Stainless-Runtime",
  "X-Stainless-Runtime-Version",
  "X-Stainless-Timeout",
  "X-Foreman-Priority",
  // Names one Ollama target for a management request (several targets; see src/http/targets-relay.ts).
  "X-Foreman-Target",
].join(",");

/** Checks a FOREMAN_ORIGINS entry as Ollama does at start; returns what is wrong, or undefined. */
export function invalidOrigin(entry: string): string | undefined {
  const stars = entry.split("*").length - 1;
  if (stars > 1) return `"${entry}" has more than one *`;
  if (stars === 0 && !/^[a-z][a-z0-9+.-]*:\/\/[^/]+$/i.test(entry))
    return `"${entry}" is not an origin such as https://example.com`;
  return undefined;
}

/** What CORS makes of one request. */
export type CorsDecision =
  /** Not a cross-origin request (no Origin, or the page's own origin): nothing to add. */
  | { kind: "none" }
  /** An allowed origin: answer a preflight, or add the allow headers to the answer. */
  | { kind: "allowed"; allowOrigin: string }
  /** An origin that is not allowed: 403, so a page elsewhere cannot make a browser run work here. */
  | { kind: "denied"; origin: string };

/**
 * CORS as Ollama does it (reference §6.9): its default origins plus FOREMAN_ORIGINS (`*` alone allows
 * every origin; one `*` in an entry is a prefix or suffix wildcard). A disallowed origin gets 403 for
 * any method, which also stops "simple" cross-site POSTs that a browser sends without a preflight.
 */
export class CorsPolicy {
  readonly #anyOrigin: boolean;
  readonly #exact = new Set<string>();
  readonly #wildcards: Array<{ prefix: string; suffix: string }> = [];

  /** `extra` is FOREMAN_ORIGINS, already checked with {@link invalidOrigin}. */
  constructor(extra: readonly string[]) {
    this.#anyOrigin = extra.includes("*");
    for (const entry of [...extra, ...DEFAULT_ORIGINS]) {
      const star = entry.indexOf("*");
      if (star === -1) this.#exact.add(entry.toLowerCase());
      else this.#wildcards.push({ prefix: entry.slice(0, star).toLowerCase(), suffix: entry.slice(star + 1).toLowerCase() });
    }
  }

  decide(request: Request): CorsDecision {
    const origin = request.headers.get("origin");
    if (!origin) return { kind: "none" };
    const host = request.headers.get("host");
    if (host && (origin === `http://${host}` || origin === `https://${host}`)) return { kind: "none" };
    if (this.#anyOrigin) return { kind: "allowed", allowOrigin: "*" };
    return this.#allows(origin.toLowerCase()) ? { kind: "allowed", allowOrigin: origin } : { kind: "denied", origin };
  }

  /**
   * 403 for a disallowed origin, else undefined: what {@link apply} answers such a request, for the transport
   * to answer it before reading any body.
   */
  refuse(request: Request): Response | undefined {
    const decision = this.decide(request);
    return decision.kind === "denied" ? deniedOrigin(request, decision.origin) : undefined;
  }

  #allows(origin: string): boolean {
    if (this.#exact.has(origin)) return true;
    return this.#wildcards.some(
      ({ prefix, suffix }) =>
        origin.length >= prefix.length + suffix.length && origin.startsWith(prefix) && origin.endsWith(suffix),
    );
  }

  /**
   * Runs `next` under the policy: a disallowed origin gets 403, an allowed preflight 204 (no token
   * needed, as a browser sends none), and every other answer to an allowed origin its allow headers.
   */
  async apply(request: Request, next: (request: Request) => Promise<Response> | Response): Promise<Response> {
    const decision = this.decide(request);
    if (decision.kind === "none") return next(request);
    if (decision.kind === "denied") return deniedOrigin(request, decision.origin);
    if (request.method === "OPTIONS") {
      const headers = new Headers({
        "access-control-allow-origin": decision.allowOrigin,
        "access-control-allow-methods": "GET,POST,PUT,PATCH,DELETE,HEAD,OPTIONS",
        "access-control-allow-headers": ALLOW_HEADERS,
        "access-control-max-age": "43200",
      });
      for (const vary of ["Origin", "Access-Control-Request-Method", "Access-Control-Request-Headers"])
        headers.append("vary", vary);
      return new Response(null, { status: 204, headers });
    }
    const response = await next(request);
    response.headers.set("access-control-allow-origin", decision.allowOrigin);
    response.headers.append("vary", "Origin");
    return response;
  }
}

function deniedOrigin(request: Request, origin: string): Response {
  const path = URL.parse(request.url)?.pathname ?? "";
  return errorResponse(apiForPath(path), 403, `origin ${origin} is not allowed (add it to FOREMAN_ORIGINS)`);
}
