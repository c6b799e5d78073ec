import { Webhook } from "standardwebhooks";
import type { Config } from "../config";
import type { Logger } from "../log";
import type { WebhookOutcome } from "../metrics";
import { fetchErrorText } from "../ollama/client";
import type { JobRow } from "../queue/job-row";
import { webhookPayload } from "../queue/job-view";
import { type MaybePromise, after, isPromise } from "../queue/maybe-promise";
import { WebhookAllowList } from "./allow-list";
import type { DeliveryState, DueDelivery } from "./deliveries";

/** One attempt's limit, by default. */
const ATTEMPT_TIMEOUT_MS = 15_000;
/** Deliveries attempted at once. */
const CONCURRENCY = 4;
/** How long deliveries pause after one whose outcome could not be written (a full disk), or a failed look for due ones. */
const RECORD_RETRY_MS = 1000;
/**
 * A claiming store's claim (PgWebhookDeliveries): the attempt's limit and this much more, for resolving the
 * host's name before it and recording its outcome after.
 */
const CLAIM_EXTRA_MS = 30_000;
/** A claimed attempt's POST is over this long before its claim runs out (clocks' rates, the record's round trip). */
const CLAIM_MARGIN_MS = 10_000;

/**
 * The deliveries' table as the dispatcher works it: WebhookDeliveries (SQLite: synchronous, one process), or
 * PgWebhookDeliveries (PostgreSQL, shared by several nodes: Promises). Answers are awaited only when they are
 * Promises (maybe-promise.ts), so on SQLite the dispatcher runs as it always has.
 */
export interface DeliveryStore {
  /**
   * true: due() claims the rows it returns for `claimMs` (no node is given them again meanwhile), and each
   * carries its claim for record(). The dispatcher then asks for no more than it will attempt at once, and
   * ends each POST well inside its claim. Absent: due() reads, and returns the rows in flight too.
   */
  readonly claims?: boolean;
  /** Pending deliveries whose time has come: the `limit` soonest (a claiming store gives them in no order). */
  due(now: number, limit: number, claimMs: number): MaybePromise<DueDelivery[]>;
  /** When the next pending delivery is due (this process's clock); null when none is pending. */
  nextDue(): MaybePromise<number | null>;
  /** Records an attempt's outcome; false when its claim had been taken over (the outcome was not written). */
  record(
    id: string,
    state: DeliveryState,
    attempts: number,
    status: number | null,
    error: string | null,
    nextAttemptAt: number,
    claim?: number,
  ): MaybePromise<boolean | void>;
}

/** Where a job's payload is read: JobStore (SQLite) or PgQueueStore. */
export interface DeliveryJobs {
  getJob(id: string): MaybePromise<JobRow | null>;
}

/**
 * Delivers job webhooks per Standard Webhooks. Deliveries are rows (queued in the same transaction
 * that ends the job), so a restart resumes them; retries back off on FOREMAN_WEBHOOK_BACKOFF with
 * ±20% jitter. 2xx delivers; 410 stops at once; redirects are not followed. A delivery never
 * touches its job.
 *
 * Over a claiming store (PostgreSQL, several nodes each running one): each due row is claimed before it is
 * attempted, so one node at a time POSTs it; its POST ends before the claim does, and its outcome is recorded
 * under the claim. A node that dies mid-attempt, or whose outcome could not be written, leaves the row to be
 * sent again once the claim runs out: at least once, with the same webhook-id, never two attempts at once.
 */
export class WebhookDispatcher {
  readonly #log: Logger;
  readonly #backoffMs: number[];
  readonly #defaultSecret: string | undefined;
  readonly #allow: WebhookAllowList;
  readonly #attemptTimeoutMs: number;
  readonly #inFlight = new Set<string>();
  /** The attempts under way, for {@link idle}. */
  readonly #attempts = new Set<Promise<void>>();
  readonly #store: DeliveryJobs;
  readonly #deliveries: DeliveryStore;
  /** How long a claiming store holds the rows it gives (the attempt's limit and room around it). */
  readonly #claimMs: number;
  #timer: Timer | undefined;
  /** A look for due deliveries that a Promise answers is under way: a wake meanwhile looks again after it. */
  #looking: Promise<void> | null = null;
  #lookAgain = false;
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
    store: DeliveryJobs,
    deliveries: DeliveryStore,
    config: Pick<Config, "webhookBackoffMs" | "webhookSecret" | "webhookAllow">,
    log: Logger,
    { attemptTimeoutMs = ATTEMPT_TIMEOUT_MS }: { attemptTimeoutMs?: number } = {},
  ) {
    this.#attemptTimeoutMs = attemptTimeoutMs;
    this.#claimMs = attemptTimeoutMs + CLAIM_EXTRA_MS;
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

  /**
   * Resolves once the attempts under way (and a look for due ones) are over, their outcomes recorded: after
   * stop(), before the database closes. Each is bounded by the attempt's limit.
   */
  async idle(): Promise<void> {
    while (this.#looking || this.#attempts.size > 0) await Promise.allSettled([this.#looking, ...this.#attempts]);
  }

  /** Looks for due deliveries now (a job just ended). */
  wake(): void {
    if (!this.#running) return;
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => this.#tick(), 0);
  }

  #tick(): void {
    if (!this.#running) return;
    if (this.#looking) {
      this.#lookAgain = true;
      return;
    }
    if (Date.now() < this.#pausedUntil) {
      this.#timer = setTimeout(() => this.#tick(), this.#pausedUntil - Date.now());
      return;
    }
    const free = CONCURRENCY - this.#inFlight.size;
    // Every slot busy: the next attempt's end wakes the next look.
    if (free <= 0) return;
    const asked = Date.now();
    // A reading store returns the rows in flight too (skipped below); a claiming one never does, and a row it
    // returned that was not attempted would wait out its claim: it is asked for what will be attempted alone.
    const limit = this.#deliveries.claims === true ? free : free + this.#inFlight.size;
    const due = this.#deliveries.due(asked, limit, this.#claimMs);
    if (isPromise(due)) {
      this.#looking = this.#lookLater(due, asked);
      return;
    }
    this.#launch(due, Number.POSITIVE_INFINITY);
    // A store answers every call synchronously (SQLite) or none.
    this.#schedule(this.#deliveries.nextDue() as number | null);
  }

  /** The rest of a tick whose store answers with Promises: one at a time, a wake meanwhile looks again after. */
  async #lookLater(due: Promise<DueDelivery[]>, asked: number): Promise<void> {
    let next: number | null = null;
    try {
      // Claimed rows are this node's to attempt, stopping or not: left alone, they would wait out their claims.
      this.#launch(await due, asked + this.#claimMs - CLAIM_MARGIN_MS);
      next = await this.#deliveries.nextDue();
    } catch (caught) {
      this.#log.warn("could not look for due webhook deliveries (retrying)", { error: caught });
      this.#pausedUntil = Date.now() + RECORD_RETRY_MS;
      next = this.#pausedUntil;
    } finally {
      this.#looking = null;
    }
    if (!this.#running) return;
    clearTimeout(this.#timer);
    if (this.#lookAgain) {
      this.#lookAgain = false;
      this.#timer = setTimeout(() => this.#tick(), 0);
      return;
    }
    this.#schedule(next);
  }

  /** Attempts the due deliveries not in flight yet, up to CONCURRENCY at once; each POST is over by `sendBy`. */
  #launch(due: readonly DueDelivery[], sendBy: number): void {
    for (const delivery of due) {
      if (this.#inFlight.has(delivery.id) || this.#inFlight.size >= CONCURRENCY) continue;
      this.#inFlight.add(delivery.id);
      const attempt = this.#deliver(delivery, sendBy).finally(() => {
        this.#inFlight.delete(delivery.id);
        this.#attempts.delete(attempt);
        this.wake();
      });
      this.#attempts.add(attempt);
    }
  }

  /** The next look, at the next due time (a minute at most: a row queued meanwhile is told by wake()). */
  #schedule(next: number | null): void {
    if (next !== null && this.#inFlight.size < CONCURRENCY) {
      this.#timer = setTimeout(() => this.#tick(), Math.max(10, Math.min(next - Date.now(), 60_000)));
    }
  }

  async #deliver(delivery: DueDelivery, sendBy: number): Promise<void> {
    const attempts = delivery.attempts + 1;
    let status: number | null = null;
    let error: string | null = null;
    const target = await this.#allow.target(delivery.url);
    if (typeof target === "string") {
      this.#log.warn("webhook delivery refused", { delivery: delivery.id, error: target });
      return this.#record(delivery, "failed", attempts, null, target);
    }
    try {
      const read = this.#payload(delivery);
      const payload = isPromise(read) ? await read : read;
      // Claimed: the POST ends inside the claim, so no other node can be sending the same attempt meanwhile.
      const timeoutMs =
        sendBy === Number.POSITIVE_INFINITY ? this.#attemptTimeoutMs : Math.min(this.#attemptTimeoutMs, sendBy - Date.now());
      if (timeoutMs <= 0)
        throw new Error("the attempt could not start within its claim (the webhook host's name took too long to resolve)");
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
        signal: AbortSignal.timeout(timeoutMs),
        ...(target.serverName ? { tls: { serverName: target.serverName } } : {}),
      });
      status = response.status;
      await response.body?.cancel().catch(() => {});
      if (response.ok) return this.#record(delivery, "delivered", attempts, status, null);
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
      return this.#record(delivery, "failed", attempts, status, error);
    }
    this.#log.info("webhook delivery failed, will retry", { delivery: delivery.id, attempts, retry_in_ms: retryIn, error });
    const jittered = Math.round(retryIn * (0.8 + Math.random() * 0.4));
    return this.#record(delivery, "pending", attempts, status, error, Date.now() + jittered);
  }

  /** The row is the payload's source; a delivery outlives it only if the job was pruned (or batch deleted) meanwhile. */
  #payload(delivery: DueDelivery): MaybePromise<string> {
    if (delivery.batchId !== null) {
      const payload = this.batchPayload(delivery.batchId);
      if (payload === null) throw new Error("the batch no longer exists");
      return payload;
    }
    return after(this.#store.getJob(delivery.jobId!), (job) => {
      if (!job) throw new Error("the job no longer exists");
      return webhookPayload(job, job.keyId === null ? null : this.keyName(job.keyId));
    });
  }

  #record(
    delivery: DueDelivery,
    state: DeliveryState,
    attempts: number,
    status: number | null,
    error: string | null,
    nextAttemptAt = Date.now(),
  ): MaybePromise<void> {
    this.onDelivery(state === "pending" ? "retrying" : state);
    const unrecorded = (caught: unknown) => {
      // The database may be closing at shutdown: the row stays pending and is sent again after restart (or,
      // claimed, by any node once its claim runs out).
      this.#log.warn("could not record webhook delivery", { delivery: delivery.id, error: caught });
      this.#pausedUntil = Date.now() + RECORD_RETRY_MS;
    };
    try {
      const recorded = this.#deliveries.record(delivery.id, state, attempts, status, error, nextAttemptAt, delivery.claim);
      if (isPromise(recorded))
        return recorded.then((written) => {
          if (written === false)
            this.#log.warn("webhook delivery outcome dropped: its claim ran out and another node took the delivery over", {
              delivery: delivery.id,
              state,
            });
        }, unrecorded);
    } catch (caught) {
      unrecorded(caught);
    }
  }
}
