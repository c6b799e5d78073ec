import type { Database } from "bun:sqlite";
import { monotonicFactory } from "ulid";

const ulid = monotonicFactory();

/** Where a job's webhook delivery stands. */
export interface DeliveryStatus {
  state: DeliveryState;
  attempts: number;
  lastStatus: number | null;
  lastError: string | null;
}

export type DeliveryState = "pending" | "delivered" | "failed";

/** A delivery due to be attempted. */
export interface DueDelivery {
  id: string;
  /** The job whose end it tells, or null for a batch's. */
  jobId: string | null;
  /** The batch whose end it tells, or null for a job's. */
  batchId: string | null;
  url: string;
  secret: string | null;
  attempts: number;
  /** The claim it was taken under, where several nodes share the rows (PgWebhookDeliveries); record() gives it back. */
  claim?: number;
}

/**
 * The `webhook_deliveries` table: its one owner. A row is queued inside the transaction that ends its
 * job, so an ended job always has its delivery; the dispatcher then works the rows on the HTTP thread.
 */
export class WebhookDeliveries {
  readonly #insertStmt;
  readonly #insertBatchStmt;
  readonly #statusStmt;
  readonly #dueStmt;
  readonly #nextDueStmt;
  readonly #recordStmt;

  constructor(db: Database) {
    // key_id: whose job or batch it tells of (migration 010), so a delivery is attributed like what it reports.
    this.#insertStmt = db.query<null, [string, string, string, string | null, number, string | null]>(
      `INSERT OR IGNORE INTO webhook_deliveries (id, job_id, url, secret, state, next_attempt_at, created_at, key_id)
       VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?5, ?6)`,
    );
    this.#insertBatchStmt = db.query<null, [string, string, string, string | null, number, string | null]>(
      `INSERT OR IGNORE INTO webhook_deliveries (id, batch_id, url, secret, state, next_attempt_at, created_at, key_id)
       VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?5, ?6)`,
    );
    this.#statusStmt = db.query<DeliveryStatus, [string]>(
      `SELECT state, attempts, last_status AS lastStatus, last_error AS lastError FROM webhook_deliveries WHERE job_id = ?`,
    );
    this.#dueStmt = db.query<DueDelivery, [number, number]>(
      `SELECT id, job_id AS jobId, batch_id AS batchId, url, secret, attempts FROM webhook_deliveries
       WHERE state = 'pending' AND next_attempt_at <= ? ORDER BY next_attempt_at LIMIT ?`,
    );
    this.#nextDueStmt = db.query<{ t: number | null }, []>(
      `SELECT min(next_attempt_at) AS t FROM webhook_deliveries WHERE state = 'pending'`,
    );
    this.#recordStmt = db.query<null, [DeliveryState, number, number, number | null, string | null, number | null, string]>(
      `UPDATE webhook_deliveries SET state = ?1, attempts = ?2, next_attempt_at = ?3, last_status = ?4,
         last_error = ?5, finished_at = ?6 WHERE id = ?7`,
    );
  }

  /** Queues the delivery of an ended job's webhook; call it inside the transaction that ends the job. */
  queueTx(
    job: { id: string; webhookUrl: string | null; webhookSecret: string | null; keyId?: string | null },
    now: number,
  ): void {
    if (!job.webhookUrl) return;
    this.#insertStmt.run(`msg_${ulid(now)}`, job.id, job.webhookUrl, job.webhookSecret, now, job.keyId ?? null);
  }

  /** Queues the delivery of an ended batch's webhook; call it inside the transaction that ends the batch. */
  queueBatchTx(
    batch: { id: string; webhookUrl: string | null; webhookSecret: string | null; keyId?: string | null },
    now: number,
  ): void {
    if (!batch.webhookUrl) return;
    this.#insertBatchStmt.run(`msg_${ulid(now)}`, batch.id, batch.webhookUrl, batch.webhookSecret, now, batch.keyId ?? null);
  }

  /** The delivery state of the job's webhook; null before the job ended (nothing queued yet). */
  status(jobId: string): DeliveryStatus | null {
    return this.#statusStmt.get(jobId);
  }

  /** Pending deliveries whose time has come, soonest first. */
  due(now: number, limit: number): DueDelivery[] {
    return this.#dueStmt.all(now, limit);
  }

  /** When the next pending delivery is due; null when none is pending. */
  nextDue(): number | null {
    return this.#nextDueStmt.get()!.t;
  }

  /** Records an attempt's outcome; a pending one is tried again at `nextAttemptAt`. */
  record(
    id: string,
    state: DeliveryState,
    attempts: number,
    status: number | null,
    error: string | null,
    nextAttemptAt: number,
  ): void {
    this.#recordStmt.run(state, attempts, nextAttemptAt, status, error, state === "pending" ? null : Date.now(), id);
  }
}
