import type { SQL } from "bun";
import type { DeliveryState, DeliveryStatus, DueDelivery } from "./deliveries";

/** The channel a new delivery is announced on (migration 004's trigger, on commit of the end that queued it). */
export const WEBHOOK_DUE_CHANNEL = "foreman_webhook_due";

/** The database's clock in epoch ms, as PgJobStore reads it: every node compares due times on one clock. */
const NOW_MS = `(extract(epoch from clock_timestamp()) * 1000)::bigint`;

/** How often a node looks for due deliveries whatever the channel says: the net under a lost notification. */
const POLL_MS = 5000;

/**
 * `webhook_deliveries` on PostgreSQL (migration 004), shared by every node: WebhookDeliveries' reads and record,
 * async. Rows are queued by the transaction that ends their job (PgJobStore). Several nodes run a dispatcher
 * each, so a due row is claimed before it is attempted: {@link due} takes rows no other node holds (FOR UPDATE
 * SKIP LOCKED), moves their next_attempt_at forward by the claim's length (no node finds them due meanwhile)
 * and counts the claim (`claims`, the claim's token). {@link record} writes an outcome only under the claim it
 * was attempted under; a node that died mid-attempt leaves its row due again when its claim runs out.
 *
 * Times are the database's clock: `due` ignores the caller's `now`, and the instants given to and returned by
 * {@link record} and {@link nextDue} are this node's clock, translated by their distance from now.
 */
export class PgWebhookDeliveries {
  /** Rows due() returns are claimed: not returned again, to this node or another, while the claim holds. */
  readonly claims = true;
  readonly #sql: SQL;

  constructor(sql: SQL) {
    this.#sql = sql;
  }

  /** The delivery state of the job's webhook; null before the job ended (nothing queued yet). */
  async status(jobId: string): Promise<DeliveryStatus | null> {
    const [row] = await this.#sql`SELECT state, attempts, last_status AS "lastStatus", last_error AS "lastError"
      FROM webhook_deliveries WHERE job_id = ${jobId}`;
    return row ?? null;
  }

  /**
   * Claims the `limit` soonest pending deliveries whose time has come (by the database's clock), for `claimMs`:
   * until then no node finds them due. Each comes with its claim's token (`claim`) for record(); in no order,
   * since all are attempted at once.
   */
  async due(_now: number, limit: number, claimMs: number): Promise<DueDelivery[]> {
    if (limit <= 0) return [];
    const rows: DueDelivery[] = await this.#sql.unsafe(
      `UPDATE webhook_deliveries SET next_attempt_at = ${NOW_MS} + $2::bigint, claims = claims + 1
       WHERE id = ANY(ARRAY(SELECT id FROM webhook_deliveries WHERE state = 'pending' AND next_attempt_at <= ${NOW_MS}
         ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED))
       RETURNING id, job_id AS "jobId", batch_id AS "batchId", url, secret, attempts, claims AS claim`,
      [limit, Math.max(0, Math.round(claimMs))],
    );
    return [...rows];
  }

  /** When (this node's clock) the next pending delivery is due, a claimed one's claim's end included; null when none is pending. */
  async nextDue(): Promise<number | null> {
    const [row] = await this.#sql.unsafe(
      `SELECT (min(next_attempt_at) - ${NOW_MS})::float8 AS wait FROM webhook_deliveries WHERE state = 'pending'`,
    );
    return row.wait === null ? null : Date.now() + row.wait;
  }

  /**
   * Records an attempt's outcome, made under the claim `claim`; a pending one is tried again at `nextAttemptAt`
   * (this node's clock: the database's now plus the same delay). False when the claim was taken over (it ran
   * out and another node claimed the row since): the newer attempt's outcome stands, this one is dropped.
   */
  async record(
    id: string,
    state: DeliveryState,
    attempts: number,
    status: number | null,
    error: string | null,
    nextAttemptAt: number,
    claim?: number,
  ): Promise<boolean> {
    const result = await this.#sql.unsafe(
      `UPDATE webhook_deliveries SET state = $1, attempts = $2, next_attempt_at = ${NOW_MS} + $3::bigint, last_status = $4,
         last_error = $5, finished_at = CASE WHEN $1 = 'pending' THEN NULL ELSE ${NOW_MS} END
       WHERE id = $6 AND state = 'pending' AND ($7::integer IS NULL OR claims = $7::integer)`,
      [state, attempts, Math.max(0, Math.round(nextAttemptAt - Date.now())), status, error, id, claim ?? null],
    );
    return result.count > 0;
  }
}

/**
 * Wakes a node's dispatcher when a delivery is queued on any node ({@link WEBHOOK_DUE_CHANNEL}), on every
 * (re)subscribe (announcements sent while it was down are lost) and on a slow poll, the net under a
 * notification lost without anyone noticing (a half-open connection). Retries need none of it: every node's
 * dispatcher times its next look by nextDue, which sees every node's rows.
 */
export class WebhookDueListener {
  readonly #sql: SQL;
  readonly #onDue: () => void;
  readonly #pollMs: number;
  #subscription: SQL.ListenSubscription | null = null;
  #poll: ReturnType<typeof setInterval> | null = null;

  constructor(options: { sql: SQL; onDue(): void; pollMs?: number }) {
    this.#sql = options.sql;
    this.#onDue = options.onDue;
    this.#pollMs = options.pollMs ?? POLL_MS;
  }

  /** Subscribes (resolves once the server acknowledged the LISTEN) and starts the poll. */
  async start(): Promise<void> {
    if (this.#subscription) return;
    this.#subscription = await this.#sql.listen(
      WEBHOOK_DUE_CHANNEL,
      () => this.#onDue(),
      () => this.#onDue(),
    );
    if (this.#pollMs > 0) this.#poll = setInterval(() => this.#onDue(), this.#pollMs);
  }

  async stop(): Promise<void> {
    if (this.#poll) clearInterval(this.#poll);
    this.#poll = null;
    const subscription = this.#subscription;
    this.#subscription = null;
    if (subscription) await subscription.unlisten().catch(() => {});
  }
}
