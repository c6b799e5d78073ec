import type { SQL } from "bun";
import { JOB_CAP_RETRY_AFTER_S, type KeyAdmission, KeyLimitError, gpuMsOf, nextUtcMidnight, utcDay } from "../../keys/usage";
import type { JobRow } from "../job-row";
import type { PgStatement } from "./artifacts";

/**
 * key_usage on PostgreSQL (migration 002): KeyUsage's charges and admission (src/keys/usage.ts) for PgJobStore,
 * which runs them inside its own transactions: the charges in the one that ends the jobs, the admission in
 * the one that queues them.
 */

/** One key's charge on one UTC day: the sum of what the jobs of one transaction's ends owe it. */
interface DayCharge {
  key_id: string;
  day: string;
  prompt_tokens: number;
  output_tokens: number;
  jobs: number;
  gpu_ms: number;
}

/**
 * What ended jobs charge their keys, per (key, UTC day of the end): a job done its tokens and one job
 * (KeyUsage.chargeTx), every job that ran at its end its GPU time (chargeGpuTx, {@link gpuMsOf}). A job
 * without a key, or one that neither ended done nor ran, charges nothing (and makes no row, as on SQLite).
 * Sums of whole numbers, so adding them at once equals SQLite's one addition per job.
 */
export function dayCharges(jobs: readonly JobRow[]): DayCharge[] {
  const charges = new Map<string, DayCharge>();
  for (const job of jobs) {
    if (job.keyId === null || job.finishedAt === null) continue;
    const done = job.state === "done";
    const gpuMs = gpuMsOf(job);
    if (!done && gpuMs === null) continue;
    const day = utcDay(job.finishedAt);
    const key = `${job.keyId}\t${day}`;
    const charge = charges.get(key) ?? { key_id: job.keyId, day, prompt_tokens: 0, output_tokens: 0, jobs: 0, gpu_ms: 0 };
    if (done) {
      charge.prompt_tokens += job.promptTokens ?? 0;
      charge.output_tokens += job.outputTokens ?? 0;
      charge.jobs += 1;
    }
    charge.gpu_ms += gpuMs ?? 0;
    charges.set(key, charge);
  }
  return [...charges.values()];
}

/**
 * The upsert of the ended `jobs`' charges ({@link dayCharges}), one statement whatever their number, its one
 * parameter `$from` (the charges as JSON). Rows are written in (key, day) order, so two transactions charging
 * the same keys lock them in the same order. Null when nothing is charged.
 */
export function usageCharge(jobs: readonly JobRow[], from = 1): PgStatement | null {
  const charges = dayCharges(jobs);
  if (charges.length === 0) return null;
  return {
    sql: `INSERT INTO key_usage AS u (key_id, day, prompt_tokens, output_tokens, jobs, gpu_ms)
      SELECT key_id, day, prompt_tokens, output_tokens, jobs, gpu_ms
      FROM jsonb_to_recordset($${from}::text::jsonb)
        AS c(key_id text, day text, prompt_tokens bigint, output_tokens bigint, jobs integer, gpu_ms bigint)
      ORDER BY key_id COLLATE "C", day COLLATE "C"
      ON CONFLICT (key_id, day) DO UPDATE SET prompt_tokens = u.prompt_tokens + excluded.prompt_tokens,
        output_tokens = u.output_tokens + excluded.output_tokens, jobs = u.jobs + excluded.jobs, gpu_ms = u.gpu_ms + excluded.gpu_ms`,
    params: [JSON.stringify(charges)],
  };
}

/**
 * The advisory locks' class (the first of pg_advisory_xact_lock's two int keys, a space apart from the
 * migration's one bigint key): "fkey" in ASCII. The second key is the key id's hash.
 */
const CAP_LOCK_CLASS = 0x666b6579;

/**
 * A statement fragment (a scalar subquery) that takes, for the transaction, one lock per distinct key among
 * `keyIds` (bound as a text[] parameter `param`), in the order of the locks' own keys so two enqueues cannot
 * wait on each other. A capped key's admissions then run one at a time across nodes: each counts its jobs
 * after the one before committed its own, so the cap is exact as on SQLite (whose writers are serialized).
 * The count must be read by a later statement than the lock's (READ COMMITTED: each statement's snapshot).
 */
export function capLocks(param: string): string {
  return `(SELECT count(*) FROM (
    SELECT pg_advisory_xact_lock(${CAP_LOCK_CLASS}, h)
    FROM (SELECT DISTINCT hashtext(k) AS h FROM unnest(${param}::text[]) k) hashes ORDER BY h) locked)`;
}

/** The keys among `owners` whose admission counts their jobs (a job cap): whose locks {@link capLocks} takes. */
export function cappedKeys(owners: readonly (KeyAdmission | undefined)[]): string[] {
  return [...new Set(owners.flatMap((owner) => (owner && owner.maxJobs !== null ? [owner.keyId] : [])))];
}

/**
 * KeyUsage.admitTx inside the transaction that would queue the key's job: the refusal when the key has used
 * its daily tokens on the UTC day of `owner.at` (else `enqueuedAt`, the database's now), else when it already
 * has max_jobs queued or running; null when admitted. The same errors, messages and Retry-After as SQLite's.
 * One round trip, only for the limits the key has: a key_usage seek and a range of jobs_active_by_key.
 */
export async function admitKey(tx: SQL, owner: KeyAdmission, enqueuedAt: number): Promise<KeyLimitError | null> {
  if (owner.dailyTokens === null && owner.maxJobs === null) return null;
  const now = owner.at ?? enqueuedAt;
  const [row] = await tx.unsafe(
    `SELECT CASE WHEN $3::boolean THEN coalesce((SELECT prompt_tokens + output_tokens FROM key_usage WHERE key_id = $1 AND day = $2), 0) END::float8 AS tokens,
       CASE WHEN $4::boolean THEN (SELECT count(*) FROM jobs WHERE key_id = $1 AND state IN ('queued', 'loading', 'working')) END::float8 AS active`,
    [owner.keyId, utcDay(now), owner.dailyTokens !== null, owner.maxJobs !== null],
  );
  if (owner.dailyTokens !== null && row.tokens >= owner.dailyTokens) return quotaRefusal(owner, row.tokens, now);
  if (owner.maxJobs !== null && row.active >= owner.maxJobs) {
    // KeyUsage.admitTx's message, word for word (test/queue/pg-outputs.test.ts compares the two).
    return new KeyLimitError(
      `job cap reached: key "${owner.name}" may have ${owner.maxJobs} jobs queued or running (max_jobs); try again when one ends`,
      JOB_CAP_RETRY_AFTER_S,
    );
  }
  return null;
}

/** KeyUsage.checkQuota's refusal: the key used `tokens` of its daily tokens on the UTC day of `now`. */
function quotaRefusal(owner: KeyAdmission, tokens: number, now: number): KeyLimitError {
  const reset = nextUtcMidnight(now);
  return new KeyLimitError(
    `daily token quota reached: key "${owner.name}" used ${tokens} of its ${owner.dailyTokens} tokens (daily_tokens) today; it resets at ${new Date(reset).toISOString()}`,
    Math.max(1, Math.ceil((reset - now) / 1000)),
  );
}
