import type { Database } from "bun:sqlite";
import { encodeTime, monotonicFactory } from "ulid";
import type { JobType } from "../adapters";
import type { AnswerUsage } from "../adapters/adapter";
import { QueueFullError } from "../errors";
import { type ArtifactInput, ArtifactTable } from "./artifacts";
import { type ClaimPolicy, pickNextJob } from "./claim-rules";
import type { ClaimPick, ClaimView } from "./claim-view";
import { FairShare } from "./fair-share";
import type { JobRow } from "./job-row";
import { type KeyAdmission, KeyLimitError, KeyUsage } from "../keys/usage";
import { ModelCosts } from "./model-costs";
import { type JobSource, type JobState, NOBODY_WAITING_SOURCES, isNobodyWaiting } from "./job-states";

export type { JobType } from "../adapters";
export type { JobSource, JobState } from "./job-states";
export type { ArtifactInput } from "./artifacts";
export type { JobRow } from "./job-row";
export { type ClaimPolicy, FAIR_SLACK_LOADS, type Placement } from "./claim-rules";

// Monotonic: ids made in the same millisecond still sort in the order they were made (the FIFO tie-break).
const ulid = monotonicFactory();

/** What a finished answer reports about its cost (see WireAdapter.usage). */
export type JobUsage = AnswerUsage;

/** What a new job needs; the store fills in id, state and timestamps. */
export interface NewJob {
  type: JobType;
  model: string;
  modelKey: string;
  request: string;
  source: JobSource;
  priority?: number;
  maxAttempts: number;
  idempotencyKey?: string;
  webhook?: { url: string; secret?: string };
  /** The key that asks for it, and the limits its admission checks (job cap, daily quota); none without a key. */
  owner?: KeyAdmission;
}

/** Filters for {@link JobStore.listJobs}; `cursor` is the last id of the previous page. */
export interface JobFilter {
  state?: JobState;
  model?: string;
  type?: JobType;
  /** Only this key's jobs (a client key's view). */
  keyId?: string;
  limit: number;
  cursor?: string;
  /** Read the request and result columns too; without, they come back as "{}" and null (a page stays small). */
  withBodies?: { request: boolean; result: boolean };
}

/** Queued jobs of one model key at one priority, with their oldest and newest (by id) for the estimates. */
export interface QueueGroup {
  modelKey: string;
  priority: number;
  queued: number;
  oldestId: string;
  oldestCreatedAt: number;
  newestCreatedAt: number;
  /**
   * Of them, those the starvation guard promotes as the queue stands (not batch lines, created before the
   * cutoff given to {@link JobStore.queueGroups}), with their oldest and newest creation times; 0 without a cutoff.
   */
  overdue: number;
  overdueOldestAt: number | null;
  overdueNewestAt: number | null;
}

/**
 * Work that another table's owner does when a job ends (its webhook's delivery, its batch line), run
 * inside the transaction that ends the job: what it writes commits with the end, and a throw rolls the
 * end back. Registered with {@link JobStore.onJobEnd} where the store is built (src/tables.ts), so the
 * queue knows none of those tables.
 */
export type JobEndHook = (job: JobRow, now: number) => void;

const NO_USAGE: JobUsage = { promptTokens: null, outputTokens: null, loadMs: null, evalMs: null };

/** Why a job is canceled when its client goes away (nginx's 499, "client closed request"). */
export const CLIENT_CANCELED = { error: "request canceled", status: 499 } as const;

/** Why recovery cancels a client's request that was running when foreman died (see recoverInterruptedJobs). */
export const RESTART_DROPPED_RUNNING = {
  error: "interrupted by a restart; the client's connection closed with it",
  status: 499,
} as const;

/** Why recovery cancels a client's request that was still queued when foreman died. */
export const RESTART_DROPPED_QUEUED = {
  error: "queued when foreman stopped; the client's connection closed with it",
  status: 499,
} as const;

const JOB_COLUMNS = `id, type, model, model_key AS modelKey, request, source, state, priority, attempts,
  max_attempts AS maxAttempts, run_after AS runAfter, error, error_status AS errorStatus, created_at AS createdAt,
  started_at AS startedAt, finished_at AS finishedAt, result, idempotency_key AS idempotencyKey,
  webhook_url AS webhookUrl, webhook_secret AS webhookSecret, swapped, prompt_tokens AS promptTokens,
  output_tokens AS outputTokens, load_ms AS loadMs, eval_ms AS evalMs,
  tokens_estimated AS tokensEstimated, key_id AS keyId, target`;

/**
 * The columns a state change returns: the request and the result (megabytes, possibly) come back as ""
 * and null, because no caller of a state change reads them; getJob does.
 */
const HEAD_COLUMNS = JOB_COLUMNS.replace(", request,", ", '' AS request,").replace(", result,", ", NULL AS result,");

/**
 * The durable queue: every statement prepared once, every state change one transaction.
 * Both threads build one over their own connection.
 */
export class JobStore {
  readonly #db: Database;
  /** The job's artifacts, written in the transaction that ends it. */
  readonly artifacts: ArtifactTable;
  /** What each model key costs to run, learned in the transaction that ends a job done. */
  readonly costs: ModelCosts;
  /** Tokens per API key per day, charged in the transaction that ends a job done; its limits, checked at admission. */
  readonly keyUsage: KeyUsage;
  /** Each caller's service received (VTC), charged at every end of a job that ran; orders each group's jobs by caller. */
  readonly fair: FairShare;

  readonly #insertJobStmt;
  readonly #jobByIdStmt;
  readonly #jobHeadByIdStmt;
  readonly #jobByIdempotencyKeyStmt;
  readonly #queuedCountStmt;
  readonly #admittedCountStmt;
  readonly #queuedCountByModelStmt;
  readonly #queuedOfKeyStmt;
  readonly #queuedAbovePriorityStmt;
  readonly #slotsAheadStmt;
  readonly #queuedAtPriorityStmt;
  readonly #aheadInGroupStmt;
  readonly #aheadInSlotStmt;
  readonly #runningJobStmt;
  readonly #runningJobsStmt;
  readonly #topPriorityStmt;
  readonly #nextPriorityBelowStmt;
  readonly #oldestOverdueStmt;
  readonly #oldestForModelStmt;
  readonly #oldestOverdueForModelStmt;
  readonly #oldestStmt;
  readonly #groupsAtPriorityStmt;
  readonly #groupsStmt;
  readonly #groupEdgeStmt;
  readonly #overdueGroupsStmt;
  readonly #batchGroupsStmt;
  readonly #overdueCountStmt;
  readonly #overdueAheadStmt;
  readonly #overdueAheadInGroupStmt;
  readonly #markClaimedStmt;
  readonly #markWorkingStmt;
  readonly #markDoneStmt;
  readonly #markFailedStmt;
  readonly #requeueStmt;
  readonly #markCanceledStmt;
  readonly #interruptedJobsStmt;
  readonly #queuedClientJobsStmt;
  readonly #jobStateStmt;
  readonly #bodySizesStmt;
  readonly #bodiesStmt;
  readonly #nextRunAfterStmt;
  readonly #pruneStmt;
  /** What the claim's rules read of the queue (see {@link claimNextJob}): the claim's seeks above. */
  readonly #claimView: ClaimView;
  /** What other tables' owners write at every job's end, in registration order (see {@link onJobEnd}). */
  readonly #endHooks: JobEndHook[] = [];

  constructor(db: Database) {
    this.#db = db;
    this.artifacts = new ArtifactTable(db);
    this.costs = new ModelCosts(db);
    this.keyUsage = new KeyUsage(db);
    this.fair = new FairShare(db);
    this.#insertJobStmt = db.query<JobRow, Record<string, string | number | null>>(
      `INSERT INTO jobs (id, type, model, model_key, request, source, state, priority, attempts, max_attempts, run_after,
         created_at, idempotency_key, webhook_url, webhook_secret, key_id)
       VALUES ($id, $type, $model, $modelKey, $request, $source, 'queued', $priority, 0, $maxAttempts, $now,
         $now, $idempotencyKey, $webhookUrl, $webhookSecret, $keyId)
       RETURNING ${HEAD_COLUMNS}`,
    );
    this.#jobByIdStmt = db.query<JobRow, [string]>(`SELECT ${JOB_COLUMNS} FROM jobs WHERE id = ?`);
    this.#jobHeadByIdStmt = db.query<JobRow, [string]>(`SELECT ${HEAD_COLUMNS} FROM jobs WHERE id = ?`);
    this.#jobByIdempotencyKeyStmt = db.query<JobRow, [string]>(`SELECT ${HEAD_COLUMNS} FROM jobs WHERE idempotency_key = ?`);
    // The counts come from queued_counts (kept by triggers, migration 006): a few rows, whatever the queue's length.
    this.#queuedCountStmt = db.query<{ n: number }, []>(`SELECT coalesce(sum(n), 0) AS n FROM queued_counts`);
    // Batch lines are admitted whole when their batch is created; they must not make interactive requests 503.
    this.#admittedCountStmt = db.query<{ n: number }, []>(`SELECT coalesce(sum(n), 0) AS n FROM queued_counts WHERE batch = 0`);
    this.#queuedCountByModelStmt = db.query<{ model: string; n: number }, []>(
      `SELECT model, sum(n) AS n FROM queued_counts GROUP BY model ORDER BY model`,
    );
    this.#queuedOfKeyStmt = db.query<{ n: number }, [string]>(
      `SELECT coalesce(sum(n), 0) AS n FROM queued_counts WHERE model_key = ?`,
    );
    this.#queuedAbovePriorityStmt = db.query<{ above: number }, [number]>(
      `SELECT coalesce(sum(n), 0) AS above FROM queued_counts WHERE priority > ?1`,
    );
    this.#queuedAtPriorityStmt = db.query<{ n: number }, [number]>(
      `SELECT coalesce(sum(n), 0) AS n FROM queued_counts WHERE priority = ?1`,
    );
    this.#aheadInGroupStmt = db.query<{ n: number }, [number, string, string]>(
      `SELECT count(*) AS n FROM jobs WHERE state = 'queued' AND priority = ?1 AND model_key = ?2 AND id < ?3`,
    );
    this.#slotsAheadStmt = db.query<{ n: number }, [number, string]>(
      `SELECT coalesce(sum(n), 0) AS n FROM queued_slots WHERE priority = ?1 AND slot < ?2`,
    );
    this.#aheadInSlotStmt = db.query<{ n: number }, [number, string, string]>(
      `SELECT count(*) AS n FROM jobs WHERE state = 'queued' AND priority = ?1 AND id >= ?2 AND id < ?3`,
    );
    this.#runningJobStmt = db.query<JobRow, []>(
      `SELECT ${HEAD_COLUMNS} FROM jobs WHERE state IN ('loading', 'working') ORDER BY started_at LIMIT 1`,
    );
    this.#runningJobsStmt = db.query<JobRow, []>(
      `SELECT ${HEAD_COLUMNS} FROM jobs WHERE state IN ('loading', 'working') ORDER BY started_at`,
    );
    // The claim is a handful of index seeks rather than one ORDER BY over expressions, which SQLite
    // could only answer by sorting every queued row: these stay sub-millisecond at 100k queued rows.
    this.#topPriorityStmt = db.query<{ p: number | null }, []>(`SELECT max(priority) AS p FROM jobs WHERE state = 'queued'`);
    this.#nextPriorityBelowStmt = db.query<{ p: number | null }, [number]>(
      `SELECT max(priority) AS p FROM jobs WHERE state = 'queued' AND priority < ?`,
    );
    // Batch lines are never promoted: all of a big batch's lines soon pass FOREMAN_MAX_WAIT, and promoting
    // them, oldest first, would run the batch in file order, a swap per line. Its window bounds their wait.
    this.#oldestOverdueStmt = db.query<ClaimPick, [number, number, number]>(
      `SELECT id, model_key AS modelKey, created_at AS createdAt FROM jobs
       WHERE state = 'queued' AND priority = ?1 AND created_at < ?2 AND run_after <= ?3 AND source != 'batch'
       ORDER BY created_at, id LIMIT 1`,
    );
    this.#oldestForModelStmt = db.query<ClaimPick, [number, string, number]>(
      `SELECT id, model_key AS modelKey FROM jobs WHERE state = 'queued' AND priority = ?1 AND model_key = ?2 AND run_after <= ?3
       ORDER BY id LIMIT 1`,
    );
    // Several targets: the guard's oldest job among the keys a target may claim, one key at a time.
    this.#oldestOverdueForModelStmt = db.query<ClaimPick, [number, string, number, number]>(
      `SELECT id, model_key AS modelKey, created_at AS createdAt FROM jobs
       WHERE state = 'queued' AND priority = ?1 AND model_key = ?2 AND created_at < ?3 AND run_after <= ?4
         AND source != 'batch'
       ORDER BY created_at, id LIMIT 1`,
    );
    this.#oldestStmt = db.query<ClaimPick, [number, number]>(
      `SELECT id, model_key AS modelKey FROM jobs WHERE state = 'queued' AND priority = ?1 AND run_after <= ?2 ORDER BY id LIMIT 1`,
    );
    // queued_counts is kept by triggers (migration 006): a few rows per (model key, priority), not one per job.
    this.#groupsAtPriorityStmt = db.query<{ modelKey: string; queued: number }, [number]>(
      `SELECT model_key AS modelKey, sum(n) AS queued FROM queued_counts WHERE priority = ? GROUP BY model_key`,
    );
    this.#groupsStmt = db.query<{ modelKey: string; priority: number; queued: number }, []>(
      `SELECT model_key AS modelKey, priority, sum(n) AS queued FROM queued_counts
       GROUP BY priority, model_key ORDER BY priority DESC, model_key`,
    );
    // The starvation guard's jobs per model key at one priority: one seek of jobs_overdue when none are
    // overdue (the usual case), else a walk over the overdue jobs alone (index and rows), never the rest.
    this.#overdueGroupsStmt = db.query<{ modelKey: string; n: number; first: number; last: number }, [number, number]>(
      `SELECT model_key AS modelKey, count(*) AS n, min(created_at) AS first, max(created_at) AS last
       FROM jobs INDEXED BY jobs_overdue WHERE state = 'queued' AND priority = ?1 AND created_at < ?2 AND source != 'batch'
       GROUP BY model_key`,
    );
    // Groups holding batch lines: only theirs need the walk above; the others count their overdue jobs by id
    // (a ULID starts with its creation time), from jobs_by_model alone, which reads no rows.
    this.#batchGroupsStmt = db.query<{ modelKey: string; priority: number }, []>(
      `SELECT model_key AS modelKey, priority FROM queued_counts WHERE batch = 1 AND n > 0`,
    );
    this.#overdueCountStmt = db.query<{ n: number; last: number | null }, [number, string, string]>(
      `SELECT (SELECT count(*) FROM jobs WHERE state = 'queued' AND priority = ?1 AND model_key = ?2 AND id < ?3) AS n,
         (SELECT created_at FROM jobs WHERE state = 'queued' AND priority = ?1 AND model_key = ?2 AND id < ?3
          ORDER BY id DESC LIMIT 1) AS last`,
    );
    // An overdue job's place in the guard's order (created_at, id) at its priority: an index range count.
    this.#overdueAheadStmt = db.query<{ n: number }, [number, number, string]>(
      `SELECT (SELECT count(*) FROM jobs INDEXED BY jobs_overdue
                WHERE state = 'queued' AND priority = ?1 AND created_at < ?2 AND source != 'batch')
            + (SELECT count(*) FROM jobs INDEXED BY jobs_overdue
                WHERE state = 'queued' AND priority = ?1 AND created_at = ?2 AND source != 'batch' AND id < ?3) AS n`,
    );
    // Overdue jobs of a batch line's group ahead of it (a batch line is never promoted, but may be as old).
    this.#overdueAheadInGroupStmt = db.query<{ n: number }, [number, number, string, string]>(
      `SELECT count(*) AS n FROM jobs INDEXED BY jobs_overdue
       WHERE state = 'queued' AND priority = ?1 AND created_at < ?2 AND source != 'batch' AND model_key = ?3 AND id < ?4`,
    );
    this.#groupEdgeStmt = db.query<{ firstId: string; first: number; last: number }, [number, string]>(
      `SELECT (SELECT id FROM jobs WHERE state = 'queued' AND priority = ?1 AND model_key = ?2 ORDER BY id LIMIT 1) AS firstId,
         (SELECT created_at FROM jobs WHERE state = 'queued' AND priority = ?1 AND model_key = ?2 ORDER BY id LIMIT 1) AS first,
         (SELECT created_at FROM jobs WHERE state = 'queued' AND priority = ?1 AND model_key = ?2 ORDER BY id DESC LIMIT 1) AS last`,
    );
    this.#markClaimedStmt = db.query<JobRow, [number, string, number, string | null]>(
      `UPDATE jobs SET state = 'loading', started_at = ?1, attempts = attempts + 1, error = NULL, error_status = NULL,
         swapped = ?3, target = ?4
       WHERE id = ?2 AND state = 'queued' RETURNING ${JOB_COLUMNS}`,
    );
    this.#markWorkingStmt = db.query<JobRow, [string]>(
      `UPDATE jobs SET state = 'working' WHERE id = ? AND state = 'loading' RETURNING ${HEAD_COLUMNS}`,
    );
    this.#markDoneStmt = db.query<
      JobRow,
      [number, string, string, number | null, number | null, number | null, number | null, number]
    >(
      `UPDATE jobs SET state = 'done', finished_at = ?1, result = ?2, error = NULL, error_status = NULL,
         prompt_tokens = ?4, output_tokens = ?5, load_ms = ?6, eval_ms = ?7, tokens_estimated = ?8
       WHERE id = ?3 AND state IN ('loading', 'working') RETURNING ${HEAD_COLUMNS}`,
    );
    this.#markFailedStmt = db.query<JobRow, [number, string, number | null, string]>(
      `UPDATE jobs SET state = 'failed', finished_at = ?1, error = ?2, error_status = ?3
       WHERE id = ?4 AND state IN ('queued', 'loading', 'working') RETURNING ${HEAD_COLUMNS}`,
    );
    this.#requeueStmt = db.query<JobRow, [number, string | null, number | null, number, string]>(
      `UPDATE jobs SET state = 'queued', run_after = ?1, error = ?2, error_status = ?3, attempts = max(0, attempts - ?4)
       WHERE id = ?5 AND state IN ('loading', 'working') RETURNING ${HEAD_COLUMNS}`,
    );
    this.#markCanceledStmt = db.query<JobRow, [number, string, number, string]>(
      `UPDATE jobs SET state = 'canceled', finished_at = ?1, error = ?2, error_status = ?3
       WHERE id = ?4 AND state IN ('queued', 'loading', 'working') RETURNING ${HEAD_COLUMNS}`,
    );
    this.#interruptedJobsStmt = db.query<JobRow, []>(`SELECT ${HEAD_COLUMNS} FROM jobs WHERE state IN ('loading', 'working')`);
    this.#queuedClientJobsStmt = db.query<JobRow, []>(
      `SELECT ${HEAD_COLUMNS} FROM jobs WHERE state = 'queued' AND source NOT IN (${NOBODY_WAITING_SOURCES.map((s) => `'${s}'`).join(", ")})`,
    );
    this.#bodySizesStmt = db.query<{ request: number; result: number | null }, [string]>(
      `SELECT octet_length(request) AS request, octet_length(result) AS result FROM jobs WHERE id = ?`,
    );
    this.#bodiesStmt = db.query<{ request: string; result: string | null }, [string]>(
      `SELECT request, result FROM jobs WHERE id = ?`,
    );
    this.#jobStateStmt = db.query<{ state: JobState }, [string]>(`SELECT state FROM jobs WHERE id = ?`);
    this.#nextRunAfterStmt = db.query<{ t: number | null }, []>(`SELECT min(run_after) AS t FROM jobs WHERE state = 'queued'`);
    this.#pruneStmt = db.query<null, [number]>(
      `DELETE FROM jobs WHERE state IN ('done', 'failed', 'canceled') AND finished_at < ?`,
    );
    // Built once: the claim runs per job, and each read is one prepared statement's seek.
    this.#claimView = {
      topPriority: () => this.#topPriorityStmt.get()!.p,
      nextPriorityBelow: (priority) => this.#nextPriorityBelowStmt.get(priority)!.p,
      oldest: (priority, now) => this.#oldestStmt.get(priority, now) ?? undefined,
      oldestForModel: (priority, modelKey, now) => this.#oldestForModelStmt.get(priority, modelKey, now) ?? undefined,
      oldestOverdue: (priority, cutoff, now) => this.#oldestOverdueStmt.get(priority, cutoff, now) ?? undefined,
      oldestOverdueForModel: (priority, modelKey, cutoff, now) =>
        this.#oldestOverdueForModelStmt.get(priority, modelKey, cutoff, now) ?? undefined,
      groupsAt: (priority) => this.#groupsAtPriorityStmt.all(priority),
      fairActive: () => this.fair.active(),
      fairWaiting: (priority) => this.fair.waiting(priority),
      fairOldest: (keyId, priority, modelKey, now) => this.fair.oldest(keyId, priority, modelKey, now) ?? undefined,
      costs: () => this.costs.all(),
    };
  }

  /**
   * Adds a queued job. Throws QueueFullError when `maxQueue` jobs already wait.
   * With an idempotency key that is already known, returns that job and `created: false` instead.
   */
  enqueue(job: NewJob, maxQueue: number, now = Date.now()): { job: JobRow; created: boolean } {
    return this.#db.transaction(() => this.#enqueueTx(job, maxQueue, now)).immediate();
  }

  /**
   * Several {@link enqueue}s in one transaction (a group commit: one lock, one commit for all the
   * requests that arrived together). Each gets its own outcome: its job, or the error it alone met.
   */
  enqueueMany(jobs: readonly NewJob[], maxQueue: number, now = Date.now()): Array<{ job: JobRow; created: boolean } | Error> {
    return this.#db
      .transaction(() =>
        jobs.map((job) => {
          try {
            return this.#enqueueTx(job, maxQueue, now);
          } catch (error) {
            if (error instanceof QueueFullError || error instanceof KeyLimitError) return error;
            throw error;
          }
        }),
      )
      .immediate();
  }

  #enqueueTx(job: NewJob, maxQueue: number, now: number): { job: JobRow; created: boolean } {
    if (job.idempotencyKey !== undefined) {
      const existing = this.#jobByIdempotencyKeyStmt.get(job.idempotencyKey);
      if (existing) return { job: existing, created: false };
    }
    if (this.#admittedCountStmt.get()!.n >= maxQueue) throw new QueueFullError(5);
    if (job.owner) this.keyUsage.admitTx(job.owner, now);
    this.fair.liftTx(job.owner?.keyId ?? null, now);
    const row = this.#insertJobStmt.get({
      id: ulid(now),
      type: job.type,
      model: job.model,
      modelKey: job.modelKey,
      request: job.request,
      source: job.source,
      priority: job.priority ?? 0,
      maxAttempts: job.maxAttempts,
      now,
      idempotencyKey: job.idempotencyKey ?? null,
      webhookUrl: job.webhook?.url ?? null,
      webhookSecret: job.webhook?.secret ?? null,
      keyId: job.owner?.keyId ?? null,
    })!;
    return { job: row, created: true };
  }

  getJob(id: string): JobRow | null {
    return this.#jobByIdStmt.get(id);
  }

  /** The job without its request and result ("" and null): its state and facts, cheap however big the bodies. */
  getJobHead(id: string): JobRow | null {
    return this.#jobHeadByIdStmt.get(id);
  }

  /** Jobs newest first, `limit` of them after `cursor`. */
  listJobs(filter: JobFilter): JobRow[] {
    const where: string[] = [];
    const params: (string | number)[] = [];
    if (filter.state) (where.push("state = ?"), params.push(filter.state));
    if (filter.model) (where.push("model = ?"), params.push(filter.model));
    if (filter.type) (where.push("type = ?"), params.push(filter.type));
    if (filter.keyId !== undefined) (where.push("key_id = ?"), params.push(filter.keyId));
    if (filter.cursor) (where.push("id < ?"), params.push(filter.cursor));
    params.push(filter.limit);
    // 32 filter and column combinations at most; bun:sqlite caches each prepared query by its text.
    let columns = JOB_COLUMNS;
    if (filter.withBodies && !filter.withBodies.request) columns = columns.replace(", request,", ", '{}' AS request,");
    if (filter.withBodies && !filter.withBodies.result) columns = columns.replace(", result,", ", NULL AS result,");
    const sql = `SELECT ${columns} FROM jobs ${where.length ? `WHERE ${where.join(" AND ")}` : ""} ORDER BY id DESC LIMIT ?`;
    return this.#db.query<JobRow, (string | number)[]>(sql).all(...params);
  }

  /**
   * A page of {@link listJobs} with the bodies `filter.withBodies` asks for, holding at most `budgetBytes`
   * of them: the page ends before the job that would pass it (its first job comes whatever its size),
   * and `more` says a next page follows. The sizes are read first (octet_length: no body is loaded for
   * it), then only the kept jobs' bodies: a page of 500 answers of megabytes never sits in memory.
   */
  listJobPage(
    filter: JobFilter & { withBodies: { request: boolean; result: boolean } },
    budgetBytes: number,
  ): { rows: JobRow[]; more: boolean } {
    const heads = this.listJobs({ ...filter, limit: filter.limit + 1, withBodies: { request: false, result: false } });
    const { request, result } = filter.withBodies;
    const rows: JobRow[] = [];
    let total = 0;
    for (const head of heads.slice(0, filter.limit)) {
      const size = this.#bodySizesStmt.get(head.id);
      const bytes = (request ? (size?.request ?? 0) : 0) + (result ? (size?.result ?? 0) : 0);
      if (rows.length > 0 && total + bytes > budgetBytes) return { rows, more: true };
      total += bytes;
      const bodies = this.#bodiesStmt.get(head.id);
      if (request) head.request = bodies?.request ?? head.request;
      if (result) head.result = bodies?.result ?? null;
      rows.push(head);
    }
    return { rows, more: heads.length > filter.limit };
  }

  /**
   * The job's place by priority and age alone (FOREMAN_SCHEDULE=fifo's order; JobService.queuePosition
   * gives the scheduler's order for the others), 1 first; null when the job is not queued. Exact, and cheap
   * at any depth: higher priorities from queued_counts, older jobs of its priority from queued_slots (per
   * 32 ms of creation time), then the few ahead of it in its own slot from the index.
   */
  queuePosition(job: JobRow): number | null {
    if (job.state !== "queued") return null;
    const slot = job.id.slice(0, 9);
    const above = this.#queuedAbovePriorityStmt.get(job.priority)!.above;
    const olderSlots = this.#slotsAheadStmt.get(job.priority, slot)!.n;
    const inSlot = this.#aheadInSlotStmt.get(job.priority, slot, job.id)!.n;
    return above + olderSlots + inSlot + 1;
  }

  /**
   * The job's place among the queued jobs of its model key and priority, 0 first, in the claim's order
   * there (by id). When its group is all its priority holds (a lone deep queue), that is
   * {@link queuePosition}'s count, from queued_slots; otherwise an index count of the jobs ahead of it.
   */
  rankInGroup(job: JobRow, groupSize: number): number {
    if (this.#queuedAtPriorityStmt.get(job.priority)!.n === groupSize)
      return this.queuePosition(job)! - 1 - this.#queuedAbovePriorityStmt.get(job.priority)!.above;
    return this.#aheadInGroupStmt.get(job.priority, job.modelKey, job.id)!.n;
  }

  queuedCount(): number {
    return this.#queuedCountStmt.get()!.n;
  }

  /** Queued jobs of one model key, every priority (queued_counts: a few rows). */
  queuedOfKey(modelKey: string): number {
    return this.#queuedOfKeyStmt.get(modelKey)!.n;
  }

  queuedCountByModel(): { model: string; n: number }[] {
    return this.#queuedCountByModelStmt.all();
  }

  runningJob(): JobRow | null {
    return this.#runningJobStmt.get();
  }

  /** Every job running (several targets, several slots), oldest start first. */
  runningJobs(): JobRow[] {
    return this.#runningJobsStmt.all();
  }

  /**
   * Queued jobs per (model key, priority), highest priority first, with each group's oldest and newest:
   * O(groups) index seeks, whatever the queue's depth. Given `overdueBefore` (now - FOREMAN_MAX_WAIT),
   * each group also carries its jobs the starvation guard promotes: one seek per priority when none are
   * overdue, else a walk over the overdue jobs (not the rest of the queue).
   */
  queueGroups(overdueBefore?: number): QueueGroup[] {
    const rows = this.#groupsStmt.all();
    const overdue = new Map<string, { n: number; first: number; last: number }>();
    const withBatch = new Set<string>();
    if (overdueBefore !== undefined) {
      for (const b of this.#batchGroupsStmt.all()) withBatch.add(`${b.priority}\t${b.modelKey}`);
      for (const priority of new Set(rows.filter((g) => withBatch.has(`${g.priority}\t${g.modelKey}`)).map((g) => g.priority))) {
        for (const o of this.#overdueGroupsStmt.all(priority, overdueBefore)) {
          if (withBatch.has(`${priority}\t${o.modelKey}`)) overdue.set(`${priority}\t${o.modelKey}`, o);
        }
      }
    }
    const cutoffId = overdueBefore === undefined ? "" : encodeTime(Math.max(0, overdueBefore), 10);
    return rows.flatMap((g) => {
      const edge = this.#groupEdgeStmt.get(g.priority, g.modelKey);
      if (!edge?.firstId) return [];
      const key = `${g.priority}\t${g.modelKey}`;
      let o = overdue.get(key);
      if (overdueBefore !== undefined && !withBatch.has(key) && edge.first < overdueBefore) {
        const c = this.#overdueCountStmt.get(g.priority, g.modelKey, cutoffId)!;
        if (c.n > 0 && c.last !== null) o = { n: c.n, first: edge.first, last: c.last };
      }
      return [
        {
          ...g,
          oldestId: edge.firstId,
          oldestCreatedAt: edge.first,
          newestCreatedAt: edge.last,
          overdue: o?.n ?? 0,
          overdueOldestAt: o?.first ?? null,
          overdueNewestAt: o?.last ?? null,
        },
      ];
    });
  }

  /**
   * An overdue job's place, 0 first, among the starvation guard's jobs of its priority, in the claim's
   * order for them (created_at, then id, across model keys): an index range count.
   */
  overdueRank(job: JobRow): number {
    return this.#overdueAheadStmt.get(job.priority, job.createdAt, job.id)!.n;
  }

  /**
   * How many of the job's group's overdue jobs (created before `overdueBefore`, not batch lines) are ahead
   * of it by id: all of them for a job created since the cutoff; counted for an old batch line.
   */
  overdueAheadInGroup(job: JobRow, overdueBefore: number, groupOverdue: number): number {
    if (groupOverdue === 0) return 0;
    if (job.createdAt >= overdueBefore) return groupOverdue;
    return this.#overdueAheadInGroupStmt.get(job.priority, overdueBefore, job.modelKey, job.id)!.n;
  }

  /**
   * Picks the next job by the claim's rules ({@link pickNextJob}, over this store's {@link ClaimView}) and
   * marks it (state loading, attempts + 1), or returns null.
   * IMMEDIATE because the HTTP thread may cancel the chosen job between the pick and the update.
   */
  claimNextJob(policy: ClaimPolicy, now = Date.now()): JobRow | null {
    return this.#db
      .transaction(() => {
        const next = pickNextJob(this.#claimView, policy, now);
        return next ? this.#markClaimedStmt.get(now, next.pick.id, next.swapped, policy.target ?? null) : null;
      })
      .immediate();
  }

  /** loading → working: the first chunk arrived. */
  markWorking(id: string): JobRow | null {
    return this.#markWorkingStmt.get(id);
  }

  /** Stores the result, its usage and artifacts and ends the job done, in one transaction; null if it already ended. */
  finishJob(
    id: string,
    result: string,
    artifacts: readonly ArtifactInput[],
    usage: JobUsage = NO_USAGE,
    now = Date.now(),
  ): JobRow | null {
    const { promptTokens, outputTokens, loadMs, evalMs, estimated } = usage;
    return this.#db
      .transaction(() => {
        const done = this.#markDoneStmt.get(now, result, id, promptTokens, outputTokens, loadMs, evalMs, estimated ? 1 : 0);
        // The statement leaves the result out of what it returns (HEAD_COLUMNS); the end hooks need it (a batch line).
        if (done) done.result = result;
        const job = this.#ended(done, artifacts, now);
        if (job) this.costs.learnTx(job);
        if (job) this.keyUsage.chargeTx(job, now);
        return job;
      })
      .immediate();
  }

  /** Ends the job failed with Ollama's status (or 502 / null); null if it already ended. */
  failJob(
    id: string,
    error: string,
    status: number | null,
    artifacts: readonly ArtifactInput[] = [],
    now = Date.now(),
  ): JobRow | null {
    return this.#db.transaction(() => this.#ended(this.#markFailedStmt.get(now, error, status, id), artifacts, now)).immediate();
  }

  /**
   * Puts a running job back in the queue to run after `runAfter`.
   * `refundAttempt` undoes the claim's count (a shutdown is not the job's fault).
   */
  requeueJob(id: string, runAfter: number, error: string | null, status: number | null, refundAttempt = false): JobRow | null {
    return this.#requeueStmt.get(runAfter, error, status, refundAttempt ? 1 : 0, id);
  }

  /**
   * Cancels a queued or running job, recording why and the status its waiting client is answered
   * with (499 when the client went away); null when it does not exist or already ended.
   */
  cancelJob(id: string, reason: { error: string; status: number } = CLIENT_CANCELED, now = Date.now()): JobRow | null {
    return this.#db
      .transaction(() => this.#ended(this.#markCanceledStmt.get(now, reason.error, reason.status, id), [], now))
      .immediate();
  }

  /**
   * {@link cancelJob} for many jobs in one transaction (thousands of clients that hung up together):
   * the rows that were canceled, leaving out those that did not exist or had already ended.
   */
  cancelJobs(ids: readonly string[], reason: { error: string; status: number }, now = Date.now()): JobRow[] {
    return this.#db
      .transaction(() =>
        ids.flatMap((id) => this.#ended(this.#markCanceledStmt.get(now, reason.error, reason.status, id), [], now) ?? []),
      )
      .immediate();
  }

  /** The job's state alone (null: no such job): the worker's last look before it sends a job claimed ahead. */
  jobState(id: string): JobState | null {
    return this.#jobStateStmt.get(id)?.state ?? null;
  }

  /**
   * Crash recovery, before the loop's first claim: jobs a dead process left loading or working go back
   * to the queue, their attempt counted; one that has used every attempt this way fails instead of
   * crash-looping the server. A client's own request (source ollama, openai or anthropic) is canceled
   * instead, queued or interrupted: its connection died with the process, so nobody would read the
   * answer (and such clients retry on their own). Job API and batch jobs are re-queued.
   */
  recoverInterruptedJobs(now = Date.now()): { requeued: JobRow[]; failed: JobRow[]; canceled: JobRow[] } {
    return this.#db
      .transaction(() => {
        const requeued: JobRow[] = [];
        const failed: JobRow[] = [];
        const canceled: JobRow[] = [];
        const cancel = (job: JobRow, reason: { error: string; status: number }) => {
          const row = this.#ended(this.#markCanceledStmt.get(now, reason.error, reason.status, job.id), [], now);
          if (row) canceled.push(row);
        };
        for (const job of this.#queuedClientJobsStmt.all()) cancel(job, RESTART_DROPPED_QUEUED);
        for (const job of this.#interruptedJobsStmt.all()) {
          if (!isNobodyWaiting(job.source)) {
            cancel(job, RESTART_DROPPED_RUNNING);
          } else if (job.attempts >= job.maxAttempts) {
            const row = this.#ended(this.#markFailedStmt.get(now, `interrupted ${job.attempts} times`, 500, job.id), [], now);
            if (row) failed.push(row);
          } else {
            const row = this.#requeueStmt.get(now, "interrupted", null, 0, job.id);
            if (row) requeued.push(row);
          }
        }
        return { requeued, failed, canceled };
      })
      .immediate();
  }

  /** The earliest run_after among queued jobs, or null when none is queued. */
  nextRunAfter(): number | null {
    return this.#nextRunAfterStmt.get()!.t;
  }

  /** Deletes jobs that ended before `before` (their artifacts and deliveries go with them). */
  pruneFinishedJobs(before: number): number {
    const pruned = this.#pruneStmt.run(before).changes;
    // The freed pages go back to the file system (auto_vacuum is INCREMENTAL, see db.ts).
    if (pruned > 0) this.#db.run("PRAGMA incremental_vacuum");
    return pruned;
  }

  /**
   * Adds work to every job's end, whichever way it ends (done, failed, canceled, by either thread), run
   * inside the ending transaction after the hooks registered before it. Each thread registers the same
   * hooks on its own store (src/tables.ts).
   */
  onJobEnd(hook: JobEndHook): void {
    this.#endHooks.push(hook);
  }

  /** What every job's end records with it, inside the same transaction: its artifacts, then the end hooks' rows. */
  #ended(job: JobRow | null, artifacts: readonly ArtifactInput[], now: number): JobRow | null {
    if (!job) return null;
    this.artifacts.saveTx(job.id, artifacts, now);
    this.fair.chargeTx(job, now);
    this.keyUsage.chargeGpuTx(job, now);
    for (const hook of this.#endHooks) hook(job, now);
    return job;
  }
}
