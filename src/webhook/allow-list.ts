import { isIP } from "node:net";

/** The value of one IPv4 or IPv6 address as a bigint, with its bit width. */
function addressBits(ip: string): { value: bigint; width: number } | undefined {
  const family = isIP(ip);
  if (family === 4) {
    return { value: ip.split(".").reduce((acc, octet) => (acc << 8n) | BigInt(Number(octet)), 0n), width: 32 };
  }
  if (family === 6) {
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

function inCidr(ip: string, cidr: string): boolean {
  const [base = "", prefixText] = cidr.split("/");
  const address = addressBits(ip);
  const network = addressBits(base);
  if (!address || !network || address.width !== network.width) return false;
  const prefix = prefixText === undefined ? network.width : Number(prefixText);
  const shift = BigInt(network.width - prefix);
  return address.value >> shift === network.value >> shift;
}

/**
 * Where webhooks may go. Empty allows every http(s) URL; otherwise the URL's host must equal one of
 * the host names, or its IP literal fall in one of the CIDRs. Names are not resolved.
 * @example new WebhookAllowList(["hooks.example.com", "10.0.0.0/8"]).check("http://10.1.2.3/x") // undefined (allowed)
 */
export class WebhookAllowList {
  constructor(readonly entries: readonly string[]) {}

  /** Returns why the URL may not be used, or undefined when it may. */
  check(url: string): string | undefined {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      return `webhook url "${url}" is not a URL`;
    }
    if (parsed.protocol !== "http:" && parsed.protocol !== "https:") return "webhook url must be http or https";
    if (this.entries.length === 0) return undefined;
    const host = parsed.hostname.replace(/^\[|\]$/g, "").toLowerCase();
    const allowed = this.entries.some((entry) =>
      entry.includes("/") || isIP(entry) ? inCidr(host, entry) : entry.toLowerCase() === host,
    );
    return allowed ? undefined : `webhook host "${host}" is not in FOREMAN_WEBHOOK_ALLOW`;
  }
}
