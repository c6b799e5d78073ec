import { lookup } from "node:dns/promises";
import { isIP } from "node:net";

/**
 * One parsed FOREMAN_WEBHOOK_ALLOW entry: a host name matched exactly, an IP network, `public` (any address
 * outside the loopback, private, link-local and other special ranges) or `*` (anywhere).
 */
export type AllowRule =
  | { kind: "any" }
  | { kind: "public" }
  | { kind: "host"; name: string }
  /** `network` holds the address with its host bits cleared; a bare address is a /32 or /128. */
  | { kind: "network"; width: 32 | 128; network: bigint; prefix: number };

/** A malformed allow-list entry; the message says which and what is allowed. */
export class AllowListError extends Error {
  override name = "AllowListError";
}

/** The value of one IPv4 or IPv6 address as a bigint, with its bit width. */
function addressBits(ip: string): { value: bigint; width: 32 | 128 } | undefined {
  const family = isIP(ip);
  if (family === 4) {
    return { value: ip.split(".").reduce((acc, octet) => (acc << 8n) | BigInt(Number(octet)), 0n), width: 32 };
  }
  // A zone (fe80::1%eth0) names an interface of this machine, never a webhook host.
  if (family === 6 && !ip.includes("%")) {
    const mapped = /^(.*:)(\d+\.\d+\.\d+\.\d+)$/.exec(ip);
    let text = ip;
    if (mapped) {
      const v4 = addressBits(mapped[2]!)!.value;
      text = `${mapped[1]}${(v4 >> 16n).toString(16)}:${(v4 & 0xffffn).toString(16)}`;
    }
    const [head = "", tail = ""] = text.split("::");
    const headParts = head ? head.split(":") : [];
    const tailParts = text.includes("::") ? (tail ? tail.split(":") : []) : [];
    const groups = text.includes("::")
      ? [...headParts, ...Array(8 - headParts.length - tailParts.length).fill("0"), ...tailParts]
      : headParts;
    return { value: groups.reduce((acc, group) => (acc << 16n) | BigInt(parseInt(group, 16)), 0n), width: 128 };
  }
  return undefined;
}

const HOST_NAME = /^(?=.{1,253}\.?$)[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*\.?$/i;

const NOT_AN_ENTRY =
  "is not a host name, an IP address, a CIDR, public or * (e.g. hooks.example.com, 10.0.0.0/8, fd00::/8, public)";

/** Parses one entry: `*`, `public`, `host.name`, `10.1.2.3`, `::1`, `[::1]`, `10.0.0.0/8`, `fd00::/8`. Throws AllowListError. */
export function parseAllowRule(entry: string): AllowRule {
  if (entry === "*") return { kind: "any" };
  if (entry.toLowerCase() === "public") return { kind: "public" };
  const [base = "", prefixText, extra] = entry.split("/");
  const address = base.replace(/^\[(.*)\]$/, "$1");
  const bits = addressBits(address);
  if (prefixText !== undefined || bits || /^[\d.]+$/.test(address) || address.includes(":")) {
    if (!bits || extra !== undefined) {
      throw new AllowListError(`"${entry}" ${NOT_AN_ENTRY}`);
    }
    let prefix: number = bits.width;
    if (prefixText !== undefined) {
      prefix = Number(prefixText);
      if (!/^\d{1,3}$/.test(prefixText) || prefix > bits.width) {
        throw new AllowListError(
          `"${entry}": the prefix length must be 0 to ${bits.width} for an IPv${bits.width === 32 ? 4 : 6} network`,
        );
      }
    }
    // Host bits set (10.1.2.3/8) are cleared rather than refused, as most tools do.
    const shift = BigInt(bits.width - prefix);
    return { kind: "network", width: bits.width, network: (bits.value >> shift) << shift, prefix };
  }
  if (!HOST_NAME.test(base)) throw new AllowListError(`"${entry}" ${NOT_AN_ENTRY}`);
  return { kind: "host", name: base.toLowerCase().replace(/\.$/, "") };
}

/**
 * Parses every entry; throws AllowListError naming the first bad one. A list that names nothing (",", or an
 * empty entry among others) is refused rather than read as "anywhere".
 */
export function parseAllowList(entries: readonly string[]): AllowRule[] {
  if (entries.length === 0 || entries.some((entry) => entry === "")) {
    throw new AllowListError(
      'is set but has an empty entry; list hosts, CIDRs, "public" or "*", or leave it unset (public addresses only)',
    );
  }
  return entries.map(parseAllowRule);
}

/** What applies when FOREMAN_WEBHOOK_ALLOW is unset: public addresses only. */
export const DEFAULT_ALLOW: readonly AllowRule[] = [{ kind: "public" }];

type Address = NonNullable<ReturnType<typeof addressBits>>;

function inNetwork(address: Address, width: 32 | 128, network: bigint, prefix: number): boolean {
  if (address.width !== width) return false;
  const shift = BigInt(width - prefix);
  return address.value >> shift === network >> shift;
}

/** An IPv6 address that carries an IPv4 one (mapped ::ffff:a.b.c.d, NAT64 64:ff9b::a.b.c.d) as that IPv4 address. */
function unwrapped(address: Address): Address {
  if (address.width === 128 && (address.value >> 32n === 0xffffn || address.value >> 32n === 0x64ff9b0000000000000000n)) {
    return { value: address.value & 0xffffffffn, width: 32 };
  }
  return address;
}

/**
 * Ranges `public` leaves out: this network, private, shared (CGNAT), loopback, link-local (cloud metadata at
 * 169.254.169.254), IETF and documentation ranges, multicast, reserved and broadcast; for IPv6 the unspecified,
 * loopback and IPv4-compatible addresses, discard, documentation, 6to4, Teredo, unique local (fd00:ec2::254
 * is a metadata address), link-local and multicast.
 */
const SPECIAL_RANGES: readonly AllowRule[] = [
  "0.0.0.0/8",
  "10.0.0.0/8",
  "100.64.0.0/10",
  "127.0.0.0/8",
  "169.254.0.0/16",
  "172.16.0.0/12",
  "192.0.0.0/24",
  "192.0.2.0/24",
  "192.88.99.0/24",
  "192.168.0.0/16",
  "198.18.0.0/15",
  "198.51.100.0/24",
  "203.0.113.0/24",
  "224.0.0.0/4",
  "240.0.0.0/4",
  "::/96",
  "64:ff9b:1::/48",
  "100::/64",
  "2001::/32",
  "2001:db8::/32",
  "2002::/16",
  "fc00::/7",
  "fe80::/10",
  "ff00::/8",
].map(parseAllowRule);

function isPublic(address: Address): boolean {
  const plain = unwrapped(address);
  return !SPECIAL_RANGES.some((rule) => rule.kind === "network" && inNetwork(plain, rule.width, rule.network, rule.prefix));
}

function addressAllowed(rule: AllowRule, address: Address): boolean {
  if (rule.kind === "any") return true;
  if (rule.kind === "public") return isPublic(address);
  if (rule.kind === "host") return false;
  return (
    inNetwork(unwrapped(address), rule.width, rule.network, rule.prefix) ||
    inNetwork(address, rule.width, rule.network, rule.prefix)
  );
}

/** Where a delivery connects: the URL to fetch (its host pinned to the checked address) and what keeps it the same request. */
export interface WebhookTarget {
  url: string;
  /** The original Host header, when the URL's host was replaced by the address. */
  host?: string;
  /** The name TLS verifies the certificate against, when the URL's host was replaced by the address. */
  serverName?: string;
}

/** Resolves a host name to all its addresses (node:dns lookup, as fetch would). */
export type Resolve = (host: string) => Promise<string[]>;
const systemResolve: Resolve = async (host) => (await lookup(host, { all: true, verbatim: true })).map((entry) => entry.address);

/**
 * Where webhooks may go (FOREMAN_WEBHOOK_ALLOW; unset: public addresses only). A URL is allowed when its
 * host equals a listed name, or is an IP literal in a listed network, or (with `public` listed) every address
 * its name resolves to is public or in a listed network; `*` allows anything. {@link check} runs at submission on the spelling (IP literals, localhost);
 * {@link target} runs at each delivery on the resolved addresses, and pins the connection to the address it
 * checked, so a name cannot resolve to a refused address between the check and the connection.
 * @example new WebhookAllowList(parseAllowList(["hooks.example.com", "10.0.0.0/8"])).check("http://10.1.2.3/x") // undefined (allowed)
 */
export class WebhookAllowList {
  constructor(
    readonly rules: readonly AllowRule[],
    readonly resolve: Resolve = systemResolve,
  ) {}

  /** Returns why the URL may not be used, or undefined when it may as far as its spelling tells. */
  check(url: string): string | undefined {
    const parsed = this.#parse(url);
    if (typeof parsed === "string") return parsed;
    const { host, name } = parsed;
    if (this.#nameAllowed(name)) return undefined;
    // localhost is loopback whatever the resolver says (RFC 6761).
    const literal =
      addressBits(host) ?? (name === "localhost" || name.endsWith(".localhost") ? addressBits("127.0.0.1") : undefined);
    if (literal) return this.#addressAllowed(literal) ? undefined : this.#refusal(host);
    // A name not listed: under `public` (or `*`) its addresses are checked at delivery; otherwise it must be listed.
    return this.rules.some((rule) => rule.kind === "public" || rule.kind === "any") ? undefined : this.#refusal(host);
  }

  /** Where to deliver, with the resolved addresses checked; a string says why not. */
  async target(url: string): Promise<WebhookTarget | string> {
    const rejected = this.check(url);
    if (rejected) return rejected;
    const parsed = new URL(url);
    const { host, name } = this.#parse(url) as { host: string; name: string };
    if (this.#nameAllowed(name) || this.rules.some((rule) => rule.kind === "any")) return { url };
    if (addressBits(host)) return { url };
    let addresses: string[];
    try {
      addresses = await this.resolve(host);
    } catch (error) {
      return `webhook host "${host}" does not resolve: ${error instanceof Error ? error.message : String(error)}`;
    }
    const refused = addresses.find((address) => {
      const bits = addressBits(address);
      return !bits || !this.#addressAllowed(bits);
    });
    if (refused !== undefined || addresses.length === 0) {
      return `webhook host "${host}" resolves to ${refused ?? "no address"}, which FOREMAN_WEBHOOK_ALLOW does not allow (loopback, private and link-local addresses need an explicit entry)`;
    }
    const address = addresses[0]!;
    const pinned = new URL(url);
    pinned.hostname = isIP(address) === 6 ? `[${address}]` : address;
    return { url: pinned.href, host: parsed.host, serverName: parsed.protocol === "https:" ? host : undefined };
  }

  #parse(url: string): { host: string; name: string } | string {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      return `webhook url "${url}" is not a URL`;
    }
    if (parsed.protocol !== "http:" && parsed.protocol !== "https:") return "webhook url must be http or https";
    const host = parsed.hostname.replace(/^\[|\]$/g, "").toLowerCase();
    return { host, name: host.replace(/\.$/, "") };
  }

  #nameAllowed(name: string): boolean {
    return this.rules.some((rule) => rule.kind === "host" && rule.name === name);
  }

  #addressAllowed(address: Address): boolean {
    return this.rules.some((rule) => addressAllowed(rule, address));
  }

  #refusal(host: string): string {
    return `webhook host "${host}" is not allowed by FOREMAN_WEBHOOK_ALLOW (${this.#describe()})`;
  }

  #describe(): string {
    if (this.rules.length === 1 && this.rules[0]!.kind === "public") {
      return "unset: public addresses only; allow others explicitly, e.g. FOREMAN_WEBHOOK_ALLOW=public,10.0.0.0/8";
    }
    return "not in the list";
  }
}
