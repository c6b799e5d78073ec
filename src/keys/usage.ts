import type { Database } from "bun:sqlite";
import { ApiError } from "../errors";
import type { MaybePromise } from "../queue/maybe-promise";

/** How long a client over its job cap is told to wait (s): a job of its own may end any moment. */
export const JOB_CAP_RETRY_AFTER_S = 5;

const DAY_MS = 86_400_000;

/** A key's limits as admission checks them (from its row; see KeyRow). */
export interface KeyAdmission {
  keyId: string;
  name: string;
  maxJobs: number | null;
  dailyTokens: number | null;
  /** When the limits are checked (the quota's day), epoch ms; default the enqueue's time. Tests inject it. */
  at?: number;
}

/** A key over one of its limits: 429 with Retry-After, in the shape of the API it came to. */
export class KeyLimitError extends ApiError {
  constructor(message: string, retryAfterSeconds: number) {
    super(429, message, { "retry-after": String(retryAfterSeconds) });
  }
}

/** The UTC day of an epoch-ms time, as `key_usage` keys it: YYYY-MM-DD. */
export function utcDay(now: number): string {
  return new Date(now).toISOString().slice(0, 10);
}

/** The next UTC midnight after `now` (epoch ms): when a daily quota starts over. */
export function nextUtcMidnight(now: number): number {
  return (Math.floor(now / DAY_MS) + 1) * DAY_MS;
}

/** What an ended job's row says of its time on the GPU. */
export interface GpuSpan {
  startedAt: number | null;
  finishedAt: number | null;
  runAfter?: number;
}

/**
 * What an ended job held the GPU, ms: its last start to its end (the load too when it caused the swap); null
 * when it did not run at its end. A job that never started (canceled queued) held nothing; nor did one put
 * back in the queue after its last start (a retry's backoff, recovery) and canceled there: its started_at is
 * that earlier attempt's, and a requeue sets run_after past it, which a claim never does. key_usage's gpu_ms
 * and foreman_key_gpu_seconds_total both count this, so they agree.
 */
export function gpuMsOf(job: GpuSpan): number | null {
  if (job.startedAt === null || job.finishedAt === null) return null;
  if (job.runAfter !== undefined && job.runAfter > job.startedAt) return null;
  return Math.max(0, job.finishedAt - job.startedAt);
}

/** Today's figures of one key. */
export interface DayUsage {
  promptTokens: number;
  outputTokens: number;
  jobs: number;
  /** What its jobs that ended today held the GPU (start to end, the load too when one caused the swap), ms. */
  gpuMs: number;
}

/** A key's figures as the admin API shows them, on either engine (KeyUsage here, PgKeyStore on PostgreSQL). */
export interface KeyUsageReader {
  today(keyId: string, now?: number): MaybePromise<DayUsage>;
  activeJobs(keyId: string): MaybePromise<number>;
}

/** One key's line on the dashboard's Keys panel: today's usage (UTC) and its jobs queued or running now. */
export interface KeyDayRow extends DayUsage {
  keyId: string;
  name: string;
  /** Queued and running now. */
  waiting: number;
}

/**
 * The `key_usage` table, its one owner: tokens charged per key per UTC day in the transaction that ends a
 * job done, GPU time in the one that ends a job that ran (whichever way), and the admission check (job cap, daily quota) run in the transaction that queues one. Both
 * threads build one over their own connection, as they do the JobStore that calls it.
 */
export class KeyUsage implements KeyUsageReader {
  readonly #dayStmt;
  readonly #activeStmt;
  readonly #chargeStmt;
  readonly #gpuStmt;
  readonly #boardStmt;

  constructor(db: Database) {
    this.#dayStmt = db.query<DayUsage, [string, string]>(
      `SELECT prompt_tokens AS promptTokens, output_tokens AS outputTokens, jobs, gpu_ms AS gpuMs FROM key_usage WHERE key_id = ? AND day = ?`,
    );
    // jobs_by_key (migration 010): a range of the key's own active jobs, which its cap keeps few.
    this.#activeStmt = db.query<{ n: number }, [string]>(
      `SELECT count(*) AS n FROM jobs WHERE key_id = ? AND state IN ('queued', 'loading', 'working')`,
    );
    this.#chargeStmt = db.query<null, [string, string, number, number]>(
      `INSERT INTO key_usage (key_id, day, prompt_tokens, output_tokens, jobs) VALUES (?1, ?2, ?3, ?4, 1)
       ON CONFLICT (key_id, day) DO UPDATE SET prompt_tokens = prompt_tokens + ?3, output_tokens = output_tokens + ?4,
         jobs = jobs + 1`,
    );
    this.#gpuStmt = db.query<null, [string, string, number]>(
      `INSERT INTO key_usage (key_id, day, gpu_ms) VALUES (?1, ?2, ?3)
       ON CONFLICT (key_id, day) DO UPDATE SET gpu_ms = gpu_ms + ?3`,
    );
    // Keys are few: one primary-key seek and one jobs_by_key range per key. A revoked key stays listed on a
    // day it used the GPU or while jobs of its own still wait, so the day's figures add up.
    this.#boardStmt = db.query<KeyDayRow, [string, string | null]>(
      `SELECT keyId, name, promptTokens, outputTokens, jobs, gpuMs, waiting FROM (
         SELECT k.id AS keyId, k.name, k.revoked_at AS revokedAt,
           coalesce(u.prompt_tokens, 0) AS promptTokens, coalesce(u.output_tokens, 0) AS outputTokens,
           coalesce(u.jobs, 0) AS jobs, coalesce(u.gpu_ms, 0) AS gpuMs,
           (SELECT count(*) FROM jobs j WHERE j.key_id = k.id AND j.state IN ('queued', 'loading', 'working')) AS waiting,
           u.key_id IS NOT NULL AS used
         FROM keys k LEFT JOIN key_usage u ON u.key_id = k.id AND u.day = ?1
         WHERE ?2 IS NULL OR k.id = ?2)
       WHERE revokedAt IS NULL OR used OR waiting > 0
       ORDER BY name`,
    );
  }

  /** The key's usage on the UTC day of `now`. */
  today(keyId: string, now = Date.now()): DayUsage {
    return this.#dayStmt.get(keyId, utcDay(now)) ?? { promptTokens: 0, outputTokens: 0, jobs: 0, gpuMs: 0 };
  }

  /** The key's queued and running jobs. */
  activeJobs(keyId: string): number {
    return this.#activeStmt.get(keyId)!.n;
  }

  /**
   * Refuses a new job of the key (inside the transaction that would queue it) when it already has
   * max_jobs queued or running, or has used its daily tokens today; the message names the limit and value.
   */
  admitTx(owner: KeyAdmission, enqueuedAt: number): void {
    const now = owner.at ?? enqueuedAt;
    if (owner.dailyTokens !== null) this.checkQuota(owner, now);
    if (owner.maxJobs !== null && this.activeJobs(owner.keyId) >= owner.maxJobs) {
      throw new KeyLimitError(
        `job cap reached: key "${owner.name}" may have ${owner.maxJobs} jobs queued or running (max_jobs); try again when one ends`,
        JOB_CAP_RETRY_AFTER_S,
      );
    }
  }

  /** Refuses when the key has used its daily tokens on the UTC day of `now` (a batch's creation checks this alone). */
  checkQuota(owner: Pick<KeyAdmission, "name" | "keyId" | "dailyTokens">, now: number): void {
    if (owner.dailyTokens === null) return;
    const used = this.today(owner.keyId, now);
    const tokens = used.promptTokens + used.outputTokens;
    if (tokens < owner.dailyTokens) return;
    const reset = nextUtcMidnight(now);
    throw new KeyLimitError(
      `daily token quota reached: key "${owner.name}" used ${tokens} of its ${owner.dailyTokens} tokens (daily_tokens) today; it resets at ${new Date(reset).toISOString()}`,
      Math.max(1, Math.ceil((reset - now) / 1000)),
    );
  }

  /** Charges a job done to its key's day (inside the transaction that ends it); jobs without a key are not counted. */
  chargeTx(job: { keyId: string | null; promptTokens: number | null; outputTokens: number | null }, now: number): void {
    if (job.keyId === null) return;
    this.#chargeStmt.run(job.keyId, utcDay(now), job.promptTokens ?? 0, job.outputTokens ?? 0);
  }

  /**
   * Charges what a job that ran held the GPU ({@link gpuMsOf}) to its key's UTC day of `now`, inside the
   * transaction that ends it whichever way (done, failed, canceled while running): JobStore's #ended calls it
   * once per end, as it does the fair-share charge.
   */
  chargeGpuTx(job: GpuSpan & { keyId: string | null }, now: number): void {
    const gpuMs = gpuMsOf(job);
    if (job.keyId === null || gpuMs === null) return;
    this.#gpuStmt.run(job.keyId, utcDay(now), gpuMs);
  }

  /** Every key's line on the UTC day of `now` (or `keyId`'s alone), by name; empty when no key exists. */
  board(now: number, keyId?: string): KeyDayRow[] {
    return this.#boardStmt.all(utcDay(now), keyId ?? null);
  }
}
