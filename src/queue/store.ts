import type { Database } from "bun:sqlite";
import { encodeTime, monotonicFactory } from "ulid";
import type { JobType } from "../adapters";
import type { AnswerUsage } from "../adapters/adapter";
import { QueueFullError } from "../errors";
import { type ArtifactInput, ArtifactTable } from "./artifacts";
import { FairShare, type WaitingCaller } from "./fair-share";
import type { JobRow } from "./job-row";
import { type KeyAdmission, KeyLimitError, KeyUsage } from "../keys/usage";
import { type ExpectedCost, ModelCosts, type WaitingGroup, expectedCosts, rankGroups } from "./model-costs";
import { type JobSource, type JobState, NOBODY_WAITING_SOURCES, isNobodyWaiting } from "./job-states";

export type { JobType } from "../adapters";
export type { JobSource, JobState } from "./job-states";
export type { ArtifactInput } from "./artifacts";
export type { JobRow } from "./job-row";

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

/** How the next job is chosen; see {@link JobStore.claimNextJob}. */
export interface ClaimPolicy {
  /**
   * "drain" prefers the loaded model, then picks the model key by weighted waiting work over expected
   * cost (see rankGroups); "drain-oldest" prefers the loaded model, then the oldest job; "fifo" ignores it.
   */
  schedule: "drain" | "drain-oldest" | "fifo";
  /** Model keys Ollama has loaded, most recently used first. */
  residentKeys: readonly string[];
  /** A job queued longer than this (ms) goes before the loaded model's jobs. */
  maxWaitMs: number;
  /** The target claiming (recorded on the row); null or absent: none named. */
  target?: string | null;
  /**
   * Several targets: only model keys this target has installed may be claimed (absent: any, one target,
   * where Ollama answers a missing model's 404 itself).
   */
  eligible?: (modelKey: string) => boolean;
  /**
   * Jobs of this key are in flight on the target (its other slots): the claim takes the next job only if
   * the ordering picks this key, else nothing, so a target never serves two keys at once.
   */
  onlyKey?: string;
  /** Several targets: how this target weighs a group against the others (see {@link Placement}). */
  placement?: Placement;
  /**
   * Fair share: how many expected loads of its model a caller whose jobs all need another model may trail
   * the served caller by before it takes the GPU (FOREMAN_FAIR_SLACK; default {@link FAIR_SLACK_LOADS}).
   */
  fairSlackLoads?: number;
}

/**
 * A claiming target's view of the others, for the group choice: its own learned costs per model key,
 * and a test of whether another target that has a key resident will reach its group sooner than a load
 * here would take (then this target leaves the group to it).
 */
export interface Placement {
  /** Expected costs on this target (learned per target, else the key's costs anywhere). */
  cost: (modelKey: string) => ExpectedCost;
  /** True when another target will serve this group sooner than this one could load it (`loadMs` here). */
  leaveTo: (modelKey: string, loadMs: number) => boolean;
  /** True when no other target that answers has the key's model: only this one can ever run the group. */
  exclusive: (modelKey: string) => boolean;
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

/**
 * How far (in expected loads of its model) a caller whose jobs all need another model may fall behind the
 * caller being served before it takes the GPU: the swap there and the swap back are paid for.
 */
export const FAIR_SLACK_LOADS = 2;

/** The group choice's answer when every group it could take is better left to another target. */
const LEFT = Symbol("left to another target");

/** A claim candidate: its id and the model it needs loaded (and, for the starvation guard's scan, its age). */
type Pick = { id: string; modelKey: string; createdAt?: number };

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
    this.#oldestOverdueStmt = db.query<Pick, [number, number, number]>(
      `SELECT id, model_key AS modelKey FROM jobs WHERE state = 'queued' AND priority = ?1 AND created_at < ?2 AND run_after <= ?3
         AND source != 'batch'
       ORDER BY created_at, id LIMIT 1`,
    );
    this.#oldestForModelStmt = db.query<Pick, [number, string, number]>(
      `SELECT id, model_key AS modelKey FROM jobs WHERE state = 'queued' AND priority = ?1 AND model_key = ?2 AND run_after <= ?3
       ORDER BY id LIMIT 1`,
    );
    // Several targets: the guard's oldest job among the keys a target may claim, one key at a time.
    this.#oldestOverdueForModelStmt = db.query<Pick, [number, string, number, number]>(
      `SELECT id, model_key AS modelKey, created_at AS createdAt FROM jobs
       WHERE state = 'queued' AND priority = ?1 AND model_key = ?2 AND created_at < ?3 AND run_after <= ?4
         AND source != 'batch'
       ORDER BY created_at, id LIMIT 1`,
    );
    this.#oldestStmt = db.query<Pick, [number, number]>(
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
   * Picks and marks the next job (state loading, attempts + 1), or returns null.
   * Among jobs whose run_after has passed: highest priority; within it, jobs older than maxWait,
   * oldest first (the starvation guard); then the loaded models' jobs, oldest first; then, under drain,
   * the oldest job of the model key {@link rankGroups} puts first, else (drain-oldest, fifo) the oldest.
   * IMMEDIATE because the HTTP thread may cancel the chosen job between the pick and the update.
   */
  claimNextJob(policy: ClaimPolicy, now = Date.now()): JobRow | null {
    return this.#db
      .transaction(() => {
        for (let p = this.#topPriorityStmt.get()!.p; p !== null; p = this.#nextPriorityBelowStmt.get(p)!.p) {
          const pick = this.#pickAtPriority(p, policy, now);
          // Every group this target could take at this priority is left to a target that has it resident.
          if (pick === LEFT) return null;
          if (pick !== undefined) {
            // Another key's slots are in flight here: this key waits until they end (never two keys at once).
            if (policy.onlyKey !== undefined && pick.modelKey !== policy.onlyKey) return null;
            const swapped = policy.residentKeys.includes(pick.modelKey) ? 0 : 1;
            return this.#markClaimedStmt.get(now, pick.id, swapped, policy.target ?? null);
          }
        }
        return null;
      })
      .immediate();
  }

  #pickAtPriority(priority: number, policy: ClaimPolicy, now: number): Pick | typeof LEFT | undefined {
    if (policy.schedule === "fifo") return this.#oldestPick(priority, policy, now);
    const overdue = this.#oldestOverdue(priority, policy, now);
    if (overdue) return overdue;
    // Two callers or more wait at this priority: the group is chosen as without them, its job by caller.
    const callers = this.#fairCallers(priority);
    const fair = (pick: Pick | typeof LEFT | undefined) =>
      callers.length === 0 || pick === undefined || pick === LEFT ? pick : this.#fairPick(priority, pick, callers, policy, now);
    for (const key of policy.residentKeys) {
      if (policy.eligible && !policy.eligible(key)) continue;
      const warm = this.#oldestForModelStmt.get(priority, key, now);
      if (warm) return fair(warm);
    }
    if (policy.schedule === "drain") {
      const chosen = this.#cheapestGroup(priority, policy, now);
      if (chosen) return fair(chosen);
    }
    return fair(this.#oldestPick(priority, policy, now));
  }

  /** The oldest runnable job at this priority, of a key this target may claim. */
  #oldestPick(priority: number, policy: ClaimPolicy, now: number): Pick | undefined {
    const eligible = policy.eligible;
    const oldest = this.#oldestStmt.get(priority, now) ?? undefined;
    if (!eligible || !oldest || eligible(oldest.modelKey)) return oldest;
    // Several targets, and the oldest job is not this one's to run: the oldest of the keys it has.
    return this.#eligibleGroups(priority, eligible)
      .flatMap((modelKey) => this.#oldestForModelStmt.get(priority, modelKey, now) ?? [])
      .reduce<Pick | undefined>((best, pick) => (!best || pick.id < best.id ? pick : best), undefined);
  }

  /** The callers waiting at this priority, least served first, when fair share applies and there are two or more. */
  #fairCallers(priority: number): WaitingCaller[] {
    if (!this.fair.active()) return [];
    const callers = this.fair.waiting(priority);
    return callers.length >= 2 ? callers : [];
  }

  /**
   * Fair share inside the chosen model group (`pick` is its oldest job): the job of the least served
   * caller that has one in the group, its oldest (callers level: the oldest of theirs). A caller further behind whose jobs all need another
   * model takes the GPU instead once its counter trails the served one by more than two expected loads
   * of that model (FOREMAN_FAIR_SLACK) (the swap it costs, in the counters' GPU-ms): a flood on the loaded model cannot starve
   * it, and it cannot make the GPU swap for every job. Keys and groups are few: a seek per caller, and
   * per group for the callers behind.
   */
  #fairPick(priority: number, pick: Pick, callers: readonly WaitingCaller[], policy: ClaimPolicy, now: number): Pick {
    const group = pick.modelKey;
    let served: { pick: Pick; counter: number } | undefined;
    const behind: WaitingCaller[] = [];
    for (const caller of callers) {
      // Callers level with the served one: the oldest job among them (then callers are in counter order).
      if (served && caller.counter > served.counter) break;
      const own = this.fair.oldest(caller.keyId, priority, group, now);
      if (!own) {
        if (!served) behind.push(caller);
        continue;
      }
      if (!served || own.id < served.pick.id) served = { pick: own, counter: caller.counter };
    }
    // Only callers without a counter have jobs here (queued before fair share counted them): as without it.
    if (!served) return pick;
    let cost: ((modelKey: string) => ExpectedCost) | undefined;
    let groups: string[] | undefined;
    for (const caller of behind) {
      groups ??= this.#groupsAtPriorityStmt
        .all(priority)
        .map((g) => g.modelKey)
        .filter((modelKey) => modelKey !== group && (!policy.eligible || policy.eligible(modelKey)));
      const other = groups
        .flatMap((modelKey) => this.fair.oldest(caller.keyId, priority, modelKey, now) ?? [])
        .reduce<Pick | undefined>((best, p) => (!best || p.id < best.id ? p : best), undefined);
      if (!other) continue;
      cost ??= policy.placement?.cost ?? expectedCosts(this.costs.all());
      const { loadMs } = cost(other.modelKey);
      if (served.counter - caller.counter <= (policy.fairSlackLoads ?? FAIR_SLACK_LOADS) * loadMs) continue;
      // Several targets: another that has the model loaded will reach it sooner than a load here.
      if (policy.placement?.leaveTo(other.modelKey, loadMs)) continue;
      return other;
    }
    return served.pick;
  }

  /** The starvation guard's pick: the oldest overdue job, of a key this target may claim. */
  #oldestOverdue(priority: number, policy: ClaimPolicy, now: number): Pick | undefined {
    const cutoff = now - policy.maxWaitMs;
    const overdue = this.#oldestOverdueStmt.get(priority, cutoff, now) ?? undefined;
    const eligible = policy.eligible;
    if (!eligible || !overdue || eligible(overdue.modelKey)) return overdue;
    return this.#eligibleGroups(priority, eligible)
      .flatMap((modelKey) => this.#oldestOverdueForModelStmt.get(priority, modelKey, cutoff, now) ?? [])
      .reduce<Pick | undefined>(
        (best, pick) =>
          !best || pick.createdAt! < best.createdAt! || (pick.createdAt === best.createdAt && pick.id < best.id) ? pick : best,
        undefined,
      );
  }

  /** The model keys with jobs queued at this priority that `eligible` lets this target claim. */
  #eligibleGroups(priority: number, eligible: (modelKey: string) => boolean): string[] {
    return this.#groupsAtPriorityStmt
      .all(priority)
      .map((g) => g.modelKey)
      .filter(eligible);
  }

  /**
   * The loaded model has nothing left at this priority: the oldest runnable job of the model key with
   * the most waiting work per expected cost (rankGroups). Runs only at a model change, and reads one
   * row per model key (queued_counts, model_costs) plus one index seek per key.
   */
  #cheapestGroup(priority: number, policy: ClaimPolicy, now: number): Pick | typeof LEFT | undefined {
    const candidates = new Map<string, Pick>();
    const groups: WaitingGroup[] = [];
    const { eligible, placement } = policy;
    for (const { modelKey, queued } of this.#groupsAtPriorityStmt.all(priority)) {
      if (eligible && !eligible(modelKey)) continue;
      const oldest = this.#oldestForModelStmt.get(priority, modelKey, now);
      if (!oldest) continue; // every job of it is backing off
      candidates.set(modelKey, oldest);
      groups.push({ modelKey, queued, oldestId: oldest.id });
    }
    if (!placement) {
      if (groups.length <= 1) return groups[0] && candidates.get(groups[0].modelKey);
      const best = rankGroups(groups, expectedCosts(this.costs.all()), policy.residentKeys)[0]!;
      return candidates.get(best.modelKey);
    }
    // Several targets: ranked on this target's costs, the groups only this target can run first (nobody
    // else will take them, while a shared group can still be split to fill another target's idle time);
    // a group another target holds and will reach sooner than a load here would take is left to it (none
    // of these is resident here: those went first).
    if (groups.length === 0) return undefined;
    const byRank = rankGroups(groups, placement.cost, policy.residentKeys);
    const ranked = [
      ...byRank.filter((g) => placement.exclusive(g.modelKey)),
      ...byRank.filter((g) => !placement.exclusive(g.modelKey)),
    ];
    const best = ranked.find((g) => !placement.leaveTo(g.modelKey, placement.cost(g.modelKey).loadMs));
    return best ? candidates.get(best.modelKey) : LEFT;
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
