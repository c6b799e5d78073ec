import { isIP } from "node:net";

/** One parsed FOREMAN_WEBHOOK_ALLOW entry: a host name matched exactly, or an IP network. */
export type AllowRule =
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

const NOT_AN_ENTRY = "is not a host name, an IP address or a CIDR (e.g. hooks.example.com, 10.0.0.0/8, fd00::/8)";

/** Parses one entry: `host.name`, `10.1.2.3`, `::1`, `[::1]`, `10.0.0.0/8`, `fd00::/8`. Throws AllowListError. */
export function parseAllowRule(entry: string): AllowRule {
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

/** Parses every entry; throws AllowListError naming the first bad one. */
export function parseAllowList(entries: readonly string[]): AllowRule[] {
  return entries.map(parseAllowRule);
}

function matches(rule: AllowRule, host: string, address: ReturnType<typeof addressBits>): boolean {
  if (rule.kind === "host") return rule.name === host;
  if (!address || address.width !== rule.width) return false;
  const shift = BigInt(rule.width - rule.prefix);
  return address.value >> shift === rule.network >> shift;
}

/**
 * Where webhooks may go. Empty allows every http(s) URL; otherwise the URL's host must equal one of
 * the host names, or its IP literal fall in one of the networks. Names are not resolved.
 * @example new WebhookAllowList(parseAllowList(["hooks.example.com", "10.0.0.0/8"])).check("http://10.1.2.3/x") // undefined (allowed)
 */
export class WebhookAllowList {
  constructor(readonly rules: readonly AllowRule[]) {}

  /** Returns why the URL may not be used, or undefined when it may. */
  check(url: string): string | undefined {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      return `webhook url "${url}" is not a URL`;
    }
    if (parsed.protocol !== "http:" && parsed.protocol !== "https:") return "webhook url must be http or https";
    if (this.rules.length === 0) return undefined;
    const host = parsed.hostname.replace(/^\[|\]$/g, "").toLowerCase();
    const address = addressBits(host);
    const allowed = this.rules.some((rule) => matches(rule, host.replace(/\.$/, ""), address));
    return allowed ? undefined : `webhook host "${host}" is not in FOREMAN_WEBHOOK_ALLOW`;
  }
}
