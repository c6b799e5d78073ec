import type { Database } from "bun:sqlite";
import type { JobRow } from "./job-row";

/** A caller with jobs waiting, and the service it has received (GPU-ms over its weight). */
export interface WaitingCaller {
  /** The key's id; null for the anonymous caller (FOREMAN_TOKEN, an open foreman). */
  keyId: string | null;
  counter: number;
}

/** The anonymous caller's row in key_counters (a primary key cannot be null). */
const ANONYMOUS = "";

const rowKey = (keyId: string | null) => keyId ?? ANONYMOUS;

/**
 * The `key_counters` table, its one owner: a virtual counter per caller (VTC, Sheng et al., OSDI 2024).
 * Charged in the transaction that ends a job that ran, with what it held the GPU (its start to its end:
 * the load too when it caused the swap) over its key's weight; lifted when a caller with nothing waiting
 * queues again, to the least among the callers that wait (to the most of all when none waits), so time
 * spent idle banks no credit. Read by the claim (JobStore.claimNextJob) to order each model group's jobs
 * by caller. Keys are few, so each read here is a few rows and one index seek per caller.
 */
export class FairShare {
  /** FOREMAN_FAIR_SHARE: off leaves counters and claims alone (the order without it). */
  enabled = true;
  readonly #keysExistStmt;
  readonly #waitsStmt;
  readonly #liftStmt;
  readonly #chargeStmt;
  readonly #waitingStmt;
  readonly #waitingAtStmt;
  readonly #oldestStmt;
  readonly #allStmt;

  constructor(db: Database) {
    this.#keysExistStmt = db.query<{ yes: number }, []>(`SELECT EXISTS (SELECT 1 FROM keys) AS yes`);
    // jobs_by_caller (migration 011): one seek, whatever the queue's depth.
    this.#waitsStmt = db.query<{ yes: number }, [string | null]>(
      `SELECT EXISTS (SELECT 1 FROM jobs WHERE key_id IS ?1 AND state = 'queued') AS yes`,
    );
    const waiting = `EXISTS (SELECT 1 FROM jobs WHERE key_id IS nullif(c.key_id, '') AND state = 'queued')`;
    this.#liftStmt = db.query<null, [string, number]>(
      `INSERT INTO key_counters (key_id, counter, updated_at)
         VALUES (?1, coalesce((SELECT min(counter) FROM key_counters c WHERE ${waiting}),
                              (SELECT max(counter) FROM key_counters), 0), ?2)
       ON CONFLICT (key_id) DO UPDATE SET counter = max(counter, excluded.counter), updated_at = excluded.updated_at`,
    );
    this.#chargeStmt = db.query<null, [string, number, string | null, number]>(
      `INSERT INTO key_counters (key_id, counter, updated_at)
         VALUES (?1, ?2 / coalesce((SELECT weight FROM keys WHERE id = ?3), 1), ?4)
       ON CONFLICT (key_id) DO UPDATE SET counter = counter + excluded.counter, updated_at = excluded.updated_at`,
    );
    this.#waitingStmt = db.query<WaitingCaller, []>(
      `SELECT nullif(key_id, '') AS keyId, counter FROM key_counters c WHERE ${waiting} ORDER BY counter, key_id`,
    );
    this.#waitingAtStmt = db.query<WaitingCaller, [number]>(
      `SELECT nullif(key_id, '') AS keyId, counter FROM key_counters c
       WHERE EXISTS (SELECT 1 FROM jobs WHERE key_id IS nullif(c.key_id, '') AND state = 'queued' AND priority = ?1)
       ORDER BY counter, key_id`,
    );
    this.#oldestStmt = db.query<{ id: string; modelKey: string }, [string | null, number, string, number]>(
      `SELECT id, model_key AS modelKey FROM jobs
       WHERE key_id IS ?1 AND state = 'queued' AND priority = ?2 AND model_key = ?3 AND run_after <= ?4
       ORDER BY id LIMIT 1`,
    );
    this.#allStmt = db.query<WaitingCaller, []>(
      `SELECT nullif(key_id, '') AS keyId, counter FROM key_counters ORDER BY counter, key_id`,
    );
  }

  /** Counting and fair ordering apply: the setting is on and keys exist (else every job is one caller's). */
  active(): boolean {
    return this.enabled && this.#keysExistStmt.get()!.yes === 1;
  }

  /** A caller queues a job (inside the enqueue's transaction): if nothing of its own waits, its counter is lifted. */
  liftTx(keyId: string | null, now: number): void {
    if (!this.active() || this.#waitsStmt.get(keyId)!.yes === 1) return;
    this.#liftStmt.run(rowKey(keyId), now);
  }

  /** A job that ran ends (inside its ending transaction): its GPU time, over its key's weight, goes to its caller. */
  chargeTx(job: JobRow, now: number): void {
    if (job.startedAt === null || job.finishedAt === null || !this.active()) return;
    const gpuMs = Math.max(0, job.finishedAt - job.startedAt);
    this.#chargeStmt.run(rowKey(job.keyId), gpuMs, job.keyId, now);
  }

  /** Callers with jobs queued (at `priority`, when given), least served first, then by key id. */
  waiting(priority?: number): WaitingCaller[] {
    return priority === undefined ? this.#waitingStmt.all() : this.#waitingAtStmt.all(priority);
  }

  /** The caller's oldest runnable job of one model key at one priority (one seek of jobs_by_caller). */
  oldest(keyId: string | null, priority: number, modelKey: string, now: number): { id: string; modelKey: string } | null {
    return this.#oldestStmt.get(keyId, priority, modelKey, now);
  }

  /** Every caller's counter (GPU-ms over weight), least first. */
  all(): WaitingCaller[] {
    return this.#allStmt.all();
  }
}
