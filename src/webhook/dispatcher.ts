import { Webhook } from "standardwebhooks";
import type { Config } from "../config";
import type { Logger } from "../log";
import type { WebhookOutcome } from "../metrics";
import { fetchErrorText } from "../ollama/client";
import { webhookPayload } from "../queue/job-view";
import type { JobStore } from "../queue/store";
import { WebhookAllowList } from "./allow-list";
import type { DeliveryState, DueDelivery, WebhookDeliveries } from "./deliveries";

/** One attempt's limit, by default. */
const ATTEMPT_TIMEOUT_MS = 15_000;
/** Deliveries attempted at once. */
const CONCURRENCY = 4;
/** How long deliveries pause after one whose outcome could not be written (a full disk). */
const RECORD_RETRY_MS = 1000;

/**
 * Delivers job webhooks per Standard Webhooks. Deliveries are rows (queued in the same transaction
 * that ends the job), so a restart resumes them; retries back off on FOREMAN_WEBHOOK_BACKOFF with
 * ±20% jitter. 2xx delivers; 410 stops at once; redirects are not followed. A delivery never
 * touches its job.
 */
export class WebhookDispatcher {
  readonly #log: Logger;
  readonly #backoffMs: number[];
  readonly #defaultSecret: string | undefined;
  readonly #allow: WebhookAllowList;
  readonly #attemptTimeoutMs: number;
  readonly #inFlight = new Set<string>();
  readonly #store: JobStore;
  readonly #deliveries: WebhookDeliveries;
  #timer: Timer | undefined;
  /**
   * Set when a delivery's outcome could not be written: its row is still due, and without the pause it was
   * sent again at once, over and over (647 deliveries in a second to one receiver while the disk was full).
   */
  #pausedUntil = 0;
  #running = false;
  /** The body of a batch's webhook (set where batches are served); null when the batch no longer exists. */
  batchPayload: (batchId: string) => string | null = () => null;
  /** A key's name by id: a job's payload names the key that asked; composeForeman sets it. */
  keyName: (keyId: string) => string | null = () => null;
  /** Called after each delivery attempt with how it went (the metrics count them). */
  onDelivery: (outcome: WebhookOutcome) => void = () => {};

  /** `attemptTimeoutMs` bounds each attempt (default 15 s). */
  constructor(
    store: JobStore,
    deliveries: WebhookDeliveries,
    config: Pick<Config, "webhookBackoffMs" | "webhookSecret" | "webhookAllow">,
    log: Logger,
    { attemptTimeoutMs = ATTEMPT_TIMEOUT_MS }: { attemptTimeoutMs?: number } = {},
  ) {
    this.#attemptTimeoutMs = attemptTimeoutMs;
    this.#store = store;
    this.#deliveries = deliveries;
    this.#log = log;
    this.#backoffMs = config.webhookBackoffMs;
    this.#defaultSecret = config.webhookSecret;
    this.#allow = new WebhookAllowList(config.webhookAllow);
  }

  /** Checks a URL at submission, so a bad one is a 400 rather than a delivery that can never succeed. */
  rejectUrl(url: string): string | undefined {
    return this.#allow.check(url);
  }

  start(): void {
    this.#running = true;
    this.wake();
  }

  stop(): void {
    this.#running = false;
    clearTimeout(this.#timer);
  }

  /** Looks for due deliveries now (a job just ended). */
  wake(): void {
    if (!this.#running) return;
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => this.#tick(), 0);
  }

  #tick(): void {
    if (!this.#running) return;
    if (Date.now() < this.#pausedUntil) {
      this.#timer = setTimeout(() => this.#tick(), this.#pausedUntil - Date.now());
      return;
    }
    const free = CONCURRENCY - this.#inFlight.size;
    if (free > 0) {
      for (const delivery of this.#deliveries.due(Date.now(), free + this.#inFlight.size)) {
        if (this.#inFlight.has(delivery.id) || this.#inFlight.size >= CONCURRENCY) continue;
        this.#inFlight.add(delivery.id);
        void this.#deliver(delivery).finally(() => {
          this.#inFlight.delete(delivery.id);
          this.wake();
        });
      }
    }
    const next = this.#deliveries.nextDue();
    if (next !== null && this.#inFlight.size < CONCURRENCY) {
      this.#timer = setTimeout(() => this.#tick(), Math.max(10, Math.min(next - Date.now(), 60_000)));
    }
  }

  async #deliver(delivery: DueDelivery): Promise<void> {
    const attempts = delivery.attempts + 1;
    let status: number | null = null;
    let error: string | null = null;
    const target = await this.#allow.target(delivery.url);
    if (typeof target === "string") {
      this.#log.warn("webhook delivery refused", { delivery: delivery.id, error: target });
      this.#record(delivery, "failed", attempts, null, target);
      return;
    }
    try {
      const payload = this.#payload(delivery);
      const now = new Date();
      const headers: Record<string, string> = {
        "content-type": "application/json",
        "user-agent": "foreman-webhooks",
        "webhook-id": delivery.id,
        "webhook-timestamp": String(Math.floor(now.getTime() / 1000)),
      };
      const secret = delivery.secret ?? this.#defaultSecret;
      if (secret) headers["webhook-signature"] = new Webhook(secret).sign(delivery.id, now, payload);
      // Pinned to the address the allow list checked: the Host header and TLS name stay the URL's.
      if (target.host) headers.host = target.host;
      const response = await fetch(target.url, {
        method: "POST",
        headers,
        body: payload,
        redirect: "manual",
        signal: AbortSignal.timeout(this.#attemptTimeoutMs),
        ...(target.serverName ? { tls: { serverName: target.serverName } } : {}),
      });
      status = response.status;
      await response.body?.cancel().catch(() => {});
      if (response.ok) {
        this.#record(delivery, "delivered", attempts, status, null);
        return;
      }
      error = `HTTP ${status}`;
    } catch (caught) {
      error = fetchErrorText(caught);
    }
    const retryIn = this.#backoffMs[attempts - 1];
    if (status === 410 || retryIn === undefined) {
      this.#log.warn("webhook delivery failed for good", {
        delivery: delivery.id,
        job: delivery.jobId,
        batch: delivery.batchId,
        attempts,
        error,
      });
      this.#record(delivery, "failed", attempts, status, error);
      return;
    }
    this.#log.info("webhook delivery failed, will retry", { delivery: delivery.id, attempts, retry_in_ms: retryIn, error });
    const jittered = Math.round(retryIn * (0.8 + Math.random() * 0.4));
    this.#record(delivery, "pending", attempts, status, error, Date.now() + jittered);
  }

  /** The row is the payload's source; a delivery outlives it only if the job was pruned (or batch deleted) meanwhile. */
  #payload(delivery: DueDelivery): string {
    if (delivery.batchId !== null) {
      const payload = this.batchPayload(delivery.batchId);
      if (payload === null) throw new Error("the batch no longer exists");
      return payload;
    }
    const job = this.#store.getJob(delivery.jobId!);
    if (!job) throw new Error("the job no longer exists");
    return webhookPayload(job, job.keyId === null ? null : this.keyName(job.keyId));
  }

  #record(
    delivery: DueDelivery,
    state: DeliveryState,
    attempts: number,
    status: number | null,
    error: string | null,
    nextAttemptAt = Date.now(),
  ) {
    this.onDelivery(state === "pending" ? "retrying" : state);
    try {
      this.#deliveries.record(delivery.id, state, attempts, status, error, nextAttemptAt);
    } catch (caught) {
      // The database may be closing at shutdown: the row stays pending and is sent again after restart.
      this.#log.warn("could not record webhook delivery", { delivery: delivery.id, error: caught });
      this.#pausedUntil = Date.now() + RECORD_RETRY_MS;
    }
  }
}
