// A webhook receiver for tests: verifies every delivery with the `standardwebhooks` package, as a
// real receiver would, and can be told to fail the first attempts.
import type { Server } from "bun";
import { Webhook } from "standardwebhooks";

export interface Received {
  id: string;
  body: { type: string; timestamp: string; data: { id: string; state: string; result: unknown } };
  verified: boolean;
  signed: boolean;
  at: number;
}

export class WebhookReceiver {
  readonly received: Received[] = [];
  /** Status to answer for the next deliveries, in order; afterwards 204. */
  script: number[] = [];
  /** Answer the first N attempts of every message with 500. */
  failFirstAttempts = 0;
  readonly #attemptsById = new Map<string, number>();
  #server: Server<undefined> | undefined;

  constructor(readonly secret?: string) {}

  start(port = 0): this {
    this.#server = Bun.serve({ hostname: "127.0.0.1", port, fetch: (request) => this.#handle(request) });
    return this;
  }

  get url(): string {
    return `http://127.0.0.1:${this.#server!.port}/hook`;
  }

  async stop(): Promise<void> {
    await this.#server?.stop(true);
  }

  /** Distinct message ids delivered successfully. */
  get deliveredIds(): Set<string> {
    return new Set(this.received.map((r) => r.id));
  }

  async #handle(request: Request): Promise<Response> {
    const payload = await request.text();
    const headers = Object.fromEntries(request.headers);
    const id = headers["webhook-id"] ?? "";
    const attempt = (this.#attemptsById.get(id) ?? 0) + 1;
    this.#attemptsById.set(id, attempt);
    const scripted = this.script.shift();
    if (scripted !== undefined && scripted !== 204)
      return new Response(null, { status: scripted, headers: scripted === 302 ? { location: `${this.url}/elsewhere` } : {} });
    if (attempt <= this.failFirstAttempts) return new Response("not yet", { status: 500 });
    let verified = false;
    if (this.secret) {
      try {
        new Webhook(this.secret).verify(payload, headers);
        verified = true;
      } catch {
        return new Response("bad signature", { status: 401 });
      }
    }
    this.received.push({ id, body: JSON.parse(payload), verified, signed: "webhook-signature" in headers, at: Date.now() });
    return new Response(null, { status: 204 });
  }
}

/** A fresh Standard Webhooks secret. */
export function newSecret(): string {
  return `whsec_${Buffer.from(crypto.getRandomValues(new Uint8Array(24))).toString("base64")}`;
}
