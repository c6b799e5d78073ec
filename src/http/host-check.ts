import { BlockList, isIP } from "node:net";
import { apiForPath, errorResponse } from "../adapters/error-shapes";

/**
 * IP literals that name this machine or its networks, as Ollama's allowedHostsMiddleware accepts them
 * (loopback, unspecified, private; R:server/routes.go:1776-1839). A Host that is an IP literal cannot be
 * rebound: the browser connects to that very address.
 */
const LOCAL_ADDRESSES = (() => {
  const list = new BlockList();
  list.addSubnet("127.0.0.0", 8, "ipv4");
  list.addAddress("0.0.0.0", "ipv4");
  for (const [net, prefix] of [
    ["10.0.0.0", 8],
    ["172.16.0.0", 12],
    ["192.168.0.0", 16],
  ] as const)
    list.addSubnet(net, prefix, "ipv4");
  list.addAddress("::1", "ipv6");
  list.addAddress("::", "ipv6");
  list.addSubnet("fc00::", 7, "ipv6");
  list.addSubnet("::ffff:127.0.0.0", 104, "ipv6");
  return list;
})();

/**
 * The host name in a Host header value (`name`, `name:port`, `1.2.3.4:port`, `[v6]:port`), lowercased and
 * without the port and one trailing dot; undefined when the value is no such thing (two Host headers,
 * which Headers joins with ", ", included).
 */
export function hostName(header: string): string | undefined {
  const match = /^(\[[0-9a-f:.]+\]|[^\s\[\]:,/@]+)(?::\d{1,5})?$/i.exec(header.trim());
  if (!match) return undefined;
  return match[1]!
    .replace(/^\[|\]$/g, "")
    .replace(/\.$/, "")
    .toLowerCase();
}

/**
 * Whether `name` (from {@link hostName}) is this machine as no DNS answer can make it: `localhost` and
 * `*.localhost` (browsers resolve those to loopback themselves, RFC 6761), or a local IP literal. A DNS
 * name such as `evil.example` is refused even when it resolves to 127.0.0.1: that is DNS rebinding.
 */
export function isLocalHostName(name: string): boolean {
  if (name === "localhost" || name.endsWith(".localhost")) return true;
  const family = isIP(name);
  return family !== 0 && LOCAL_ADDRESSES.check(name, family === 4 ? "ipv4" : "ipv6");
}

/**
 * The Host check against DNS rebinding (issue #17): a web page whose name re-resolves to 127.0.0.1 reaches
 * a loopback foreman as if it were same-origin, with `Host: evil.example`. On a loopback listen only local
 * names (see {@link isLocalHostName}) and FOREMAN_ALLOWED_HOSTS are served; any other Host gets 403 in the
 * API's shape, as Ollama does (with an empty body). On another listen every Host is served unless
 * FOREMAN_ALLOWED_HOSTS is set, which then limits it the same way; `*` there allows any Host.
 */
export class HostPolicy {
  readonly #any: boolean;
  readonly #exact = new Set<string>();
  readonly #suffixes: string[] = [];

  /** `allowed` is FOREMAN_ALLOWED_HOSTS, checked with {@link invalidAllowedHost}; `loopbackListen` whether foreman listens on loopback only. */
  constructor(allowed: readonly string[], loopbackListen: boolean) {
    this.#any = allowed.includes("*") || (!loopbackListen && allowed.length === 0);
    for (const entry of allowed) {
      if (entry.startsWith("*.")) this.#suffixes.push(entry.slice(1).toLowerCase());
      else if (entry !== "*") this.#exact.add(hostName(entry) ?? entry.toLowerCase());
    }
  }

  /**
   * Whether a Host header value is served. A request without a Host header has no name to rebind (a
   * browser always sends one): it passes here, and the server refuses it anyway (rejectMalformedTarget:
   * Bun then hands over no absolute URL, so the path could not be read reliably).
   */
  allows(host: string | null): boolean {
    if (this.#any || host === null) return true;
    const name = hostName(host);
    if (name === undefined) return false;
    return isLocalHostName(name) || this.#exact.has(name) || this.#suffixes.some((suffix) => name.endsWith(suffix));
  }

  /** 403 in the API's shape for a request whose Host is not served, else undefined. */
  refuse(request: Request): Response | undefined {
    const host = request.headers.get("host");
    if (this.allows(host)) return undefined;
    return errorResponse(
      apiForPath(URL.parse(request.url)?.pathname ?? ""),
      403,
      `host ${JSON.stringify(host)} is not allowed: on a loopback listen foreman answers only localhost and local addresses (add the name to FOREMAN_ALLOWED_HOSTS)`,
    );
  }
}

/** Checks a FOREMAN_ALLOWED_HOSTS entry (`name`, `*.name`, an IP, or `*`); returns what is wrong, or undefined. */
export function invalidAllowedHost(entry: string): string | undefined {
  if (entry === "*") return undefined;
  const name = entry.startsWith("*.") ? entry.slice(2) : entry;
  if (isIP(name.replace(/^\[|\]$/g, ""))) return undefined;
  if (/^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*\.?$/i.test(name)) return undefined;
  return `"${entry}" is not a host name, *.name, an IP address or *`;
}
