import type { SQL } from "bun";
import { monotonicFactory } from "ulid";
import { QueueFullError } from "../../errors";
import { type ClaimPolicy, pickNextJob } from "../claim-rules";
import type { ClaimPick, ClaimView } from "../claim-view";
import type { WaitingCaller } from "../fair-share";
import type { JobRow } from "../job-row";
import { type JobState, NOBODY_WAITING_SOURCES } from "../job-states";
import { type ModelCost, ewma, samplesOf } from "../model-costs";
import { CLIENT_CANCELED, type JobUsage, type NewJob, RESTART_DROPPED_RUNNING } from "../store";
import { JOB_END_CHANNEL, JOB_QUEUED_CHANNEL, notifyJobEnded, notifyingRows } from "./notify";

// Monotonic: ids this node makes in one millisecond still sort in the order it made them (the FIFO tie-break).
const ulid = monotonicFactory();

/**
 * The lease a runner holds on its target (target_leases): a claim, markWorking and every end a runner
 * makes take effect only while the database holds this target with this token, unexpired by its own
 * clock. A node whose lease was taken over (it stalled, its network parted) changes nothing any more:
 * the new owner has re-queued its jobs (recoverInterruptedJobs) and runs them.
 */
export interface Fence {
  target: string;
  token: number;
}

/**
 * The database's clock in epoch ms. Every time the queue stores or compares (created_at, run_after,
 * started_at, finished_at) is read from it: several nodes' clocks differ, and a job one node queued with
 * a backoff must become runnable at the same instant for every node that claims.
 */
const NOW_MS = `(extract(epoch from clock_timestamp()) * 1000)::bigint`;

/** bigint columns come back from Bun.SQL as strings; as float8 they are numbers (exact below 2^53). */
const JOB_COLUMNS = `id, type, model, model_key AS "modelKey", request, source, state, priority, attempts,
  max_attempts AS "maxAttempts", run_after::float8 AS "runAfter", error, error_status AS "errorStatus",
  created_at::float8 AS "createdAt", started_at::float8 AS "startedAt", finished_at::float8 AS "finishedAt", result,
  idempotency_key AS "idempotencyKey", webhook_url AS "webhookUrl", webhook_secret AS "webhookSecret", swapped,
  prompt_tokens AS "promptTokens", output_tokens AS "outputTokens", load_ms AS "loadMs", eval_ms AS "evalMs",
  tokens_estimated AS "tokensEstimated", key_id AS "keyId", target`;

/** The columns a state change returns: the request and result come back as "" and null (see JobStore). */
const HEAD_COLUMNS = JOB_COLUMNS.replace(", request,", `, '' AS request,`).replace(", result,", ", NULL::text AS result,");

const NOBODY_WAITING = NOBODY_WAITING_SOURCES.map((s) => `'${s}'`).join(", ");

const NO_USAGE: JobUsage = { promptTokens: null, outputTokens: null, loadMs: null, evalMs: null };

/** How often a claim reads a fresh snapshot when another node took its pick between the read and the mark. */
const CLAIM_RETRIES = 8;

/** Deadlocks (two transactions locking count rows in opposite orders) and serialization failures: run again. */
const RETRYABLE = new Set(["40P01", "40001"]);
const TX_RETRIES = 3;

/** One (priority, model key) group of the snapshot, and its oldest runnable and oldest overdue jobs. */
interface SnapshotGroup {
  p: number;
  k: string;
  n: number;
  /** Oldest runnable by id. */
  o: string | null;
  /** Oldest runnable overdue (created before the cutoff, not a batch line) by (created_at, id), and its age. */
  d: string | null;
  dc: number | null;
}

/** A caller with a counter and queued jobs in one group, and its oldest runnable job there (null: all back off). */
interface SnapshotCaller {
  key: string;
  counter: number;
  p: number;
  k: string;
  o: string | null;
}

interface Snapshot {
  now: number;
  fenced: boolean;
  fairActive: boolean;
  groups: SnapshotGroup[];
  callers: SnapshotCaller[];
  costs: ModelCost[];
}

/**
 * The claim's read, one statement: the database's now, whether the fence holds, and per (priority, model
 * key) group of queued_counts its size and two index seeks (its oldest runnable job, its oldest overdue
 * one); with fair share active, per (group, caller) its counter and a seek for its oldest runnable job; and
 * the learned costs. Its cost follows the groups and callers, never the queue's length.
 */
const SNAPSHOT_SQL = `
WITH clock AS MATERIALIZED (SELECT ${NOW_MS} AS now),
fair AS MATERIALIZED (SELECT $4::boolean AND EXISTS (SELECT 1 FROM keys) AS active),
groups AS (
  SELECT priority, model_key, sum(n)::int AS queued FROM queued_counts GROUP BY priority, model_key HAVING sum(n) > 0
),
callers AS (
  SELECT q.priority, q.model_key, q.key_id, c.counter FROM (
    SELECT priority, model_key, key_id FROM queued_counts
    WHERE (SELECT active FROM fair) GROUP BY priority, model_key, key_id HAVING sum(n) > 0
  ) q JOIN key_counters c ON c.key_id = q.key_id
)
SELECT (SELECT now FROM clock)::float8 AS now,
  (SELECT active FROM fair) AS "fairActive",
  EXISTS (SELECT 1 FROM target_leases WHERE target = $1 AND token = $2 AND expires_at > clock_timestamp()) AS fenced,
  (SELECT coalesce(json_agg(json_build_object('p', g.priority, 'k', g.model_key, 'n', g.queued, 'o', o.id, 'd', d.id,
      'dc', d.created_at)), '[]')
    FROM groups g
    LEFT JOIN LATERAL (SELECT id FROM jobs j WHERE j.state = 'queued' AND j.priority = g.priority AND j.model_key = g.model_key
      AND j.run_after <= (SELECT now FROM clock) ORDER BY j.id LIMIT 1) o ON true
    LEFT JOIN LATERAL (SELECT id, created_at FROM jobs j WHERE j.state = 'queued' AND j.priority = g.priority
      AND j.model_key = g.model_key AND j.source <> 'batch' AND j.created_at < (SELECT now FROM clock) - $3::bigint
      AND j.run_after <= (SELECT now FROM clock) ORDER BY j.created_at, j.id LIMIT 1) d ON true) AS groups,
  (SELECT coalesce(json_agg(json_build_object('key', c.key_id, 'counter', c.counter, 'p', c.priority, 'k', c.model_key,
      'o', o.id)), '[]')
    FROM callers c
    LEFT JOIN LATERAL (
      (SELECT id FROM jobs j WHERE c.key_id <> '' AND j.key_id = c.key_id AND j.state = 'queued' AND j.priority = c.priority
        AND j.model_key = c.model_key AND j.run_after <= (SELECT now FROM clock) ORDER BY j.id LIMIT 1)
      UNION ALL
      (SELECT id FROM jobs j WHERE c.key_id = '' AND j.key_id IS NULL AND j.state = 'queued' AND j.priority = c.priority
        AND j.model_key = c.model_key AND j.run_after <= (SELECT now FROM clock) ORDER BY j.id LIMIT 1)
    ) o ON true) AS callers,
  (SELECT coalesce(json_agg(json_build_object('modelKey', model_key, 'loadMs', load_ms, 'runMs', run_ms, 'totalMs', total_ms,
      'outputTokens', output_tokens, 'evalMs', eval_ms, 'jobs', jobs, 'loads', loads, 'updatedAt', updated_at)), '[]')
    FROM model_costs) AS costs`;

/** The fence holds: its target's lease row has its token and has not expired by the database's clock. */
const FENCE_HOLDS = (target: string, token: string) =>
  `EXISTS (SELECT 1 FROM target_leases WHERE target = ${target} AND token = ${token} AND expires_at > clock_timestamp() FOR SHARE)`;

/**
 * The claim's rules read the snapshot through ClaimView, so they are the code SQLite's claim runs
 * (claim-rules.ts). The snapshot was read for one `now` and one cutoff; a read for others would answer
 * wrongly, so it throws.
 */
function snapshotView(snapshot: Snapshot, maxWaitMs: number): ClaimView {
  const byPriority = new Map<number, SnapshotGroup[]>();
  for (const g of snapshot.groups) byPriority.set(g.p, [...(byPriority.get(g.p) ?? []), g]);
  const priorities = [...byPriority.keys()].sort((a, b) => b - a);
  const callerPicks = new Map<string, string | null>();
  const waitingAt = new Map<number, Map<string, number>>();
  for (const c of snapshot.callers) {
    callerPicks.set(`${c.key}\t${c.p}\t${c.k}`, c.o);
    const at = waitingAt.get(c.p) ?? new Map<string, number>();
    at.set(c.key, c.counter);
    waitingAt.set(c.p, at);
  }
  const check = (now: number, cutoff?: number) => {
    if (now !== snapshot.now || (cutoff !== undefined && cutoff !== snapshot.now - maxWaitMs))
      throw new Error("the claim's snapshot was read for another now or cutoff");
  };
  const groupsAt = (priority: number) => byPriority.get(priority) ?? [];
  const runnable = (g: SnapshotGroup): ClaimPick | undefined => (g.o === null ? undefined : { id: g.o, modelKey: g.k });
  const overdue = (g: SnapshotGroup): ClaimPick | undefined =>
    g.d === null ? undefined : { id: g.d, modelKey: g.k, createdAt: Number(g.dc) };
  return {
    topPriority: () => priorities[0] ?? null,
    nextPriorityBelow: (priority) => priorities.find((p) => p < priority) ?? null,
    oldest(priority, now) {
      check(now);
      return groupsAt(priority)
        .flatMap((g) => runnable(g) ?? [])
        .reduce<ClaimPick | undefined>((best, pick) => (!best || pick.id < best.id ? pick : best), undefined);
    },
    oldestForModel(priority, modelKey, now) {
      check(now);
      const g = groupsAt(priority).find((g) => g.k === modelKey);
      return g && runnable(g);
    },
    oldestOverdue(priority, cutoff, now) {
      check(now, cutoff);
      return groupsAt(priority)
        .flatMap((g) => overdue(g) ?? [])
        .reduce<ClaimPick | undefined>(
          (best, pick) =>
            !best || pick.createdAt! < best.createdAt! || (pick.createdAt === best.createdAt && pick.id < best.id) ? pick : best,
          undefined,
        );
    },
    oldestOverdueForModel(priority, modelKey, cutoff, now) {
      check(now, cutoff);
      const g = groupsAt(priority).find((g) => g.k === modelKey);
      return g && overdue(g);
    },
    groupsAt: (priority) => groupsAt(priority).map((g) => ({ modelKey: g.k, queued: g.n })),
    fairActive: () => snapshot.fairActive,
    fairWaiting: (priority): WaitingCaller[] =>
      [...(waitingAt.get(priority) ?? [])]
        .sort(([a, ca], [b, cb]) => ca - cb || (a < b ? -1 : a > b ? 1 : 0))
        .map(([key, counter]) => ({ keyId: key === "" ? null : key, counter })),
    fairOldest(keyId, priority, modelKey, now) {
      check(now);
      const id = callerPicks.get(`${keyId ?? ""}\t${priority}\t${modelKey}`);
      return id ? { id, modelKey } : undefined;
    },
    costs: () => new Map(snapshot.costs.map((cost) => [cost.modelKey, { ...cost, updatedAt: Number(cost.updatedAt) }])),
  };
}

type Tx = SQL;

/**
 * The durable queue on PostgreSQL, shared by several foreman nodes: JobStore's semantics (src/queue/store.ts)
 * with every method async. Each state change is one statement or one transaction; a claim is a snapshot
 * read, the claim's rules (the same code as SQLite's), then a conditional mark of the pick that skips a
 * row another node holds (FOR UPDATE SKIP LOCKED). Every time is the database's clock, so callers give
 * durations (a backoff, a job's time to live), never a node's wall-clock instants.
 */
export class PgJobStore {
  readonly #sql: SQL;
  /** FOREMAN_FAIR_SHARE: off leaves counters and claims alone (the order without it). */
  fairEnabled = true;

  constructor(sql: SQL) {
    this.#sql = sql;
  }

  /**
   * Adds a queued job. Throws QueueFullError when `maxQueue` jobs already wait (batch lines not counted).
   * With an idempotency key that is already known, returns that job and `created: false` instead.
   */
  async enqueue(job: NewJob, maxQueue: number): Promise<{ job: JobRow; created: boolean }> {
    const [outcome] = await this.enqueueMany([job], maxQueue);
    if (outcome instanceof Error) throw outcome;
    return outcome!;
  }

  /**
   * Several {@link enqueue}s in one transaction (one commit for all): each its own outcome, its job or the
   * QueueFullError it alone met. As JobStore's, the check counts interactive jobs (not batch lines) and
   * applies to every job. The count is read once and kept up to date with each job this call adds;
   * two nodes admitting at once may each pass the last free place (the bound is backpressure, not a quota).
   */
  async enqueueMany(jobs: readonly NewJob[], maxQueue: number): Promise<Array<{ job: JobRow; created: boolean } | Error>> {
    return this.#tx(async (tx) => {
      const [head] = await tx.unsafe(
        `SELECT ${NOW_MS}::float8 AS now, (SELECT coalesce(sum(n), 0) FROM queued_counts WHERE batch = 0)::float8 AS admitted`,
      );
      const now: number = head.now;
      let admitted: number = head.admitted;
      const outcomes: Array<{ job: JobRow; created: boolean } | Error> = [];
      for (const job of jobs) {
        if (job.idempotencyKey !== undefined) {
          const existing = await this.#byIdempotencyKey(tx, job.idempotencyKey);
          if (existing) {
            outcomes.push({ job: existing, created: false });
            continue;
          }
        }
        if (admitted >= maxQueue) {
          outcomes.push(new QueueFullError(5));
          continue;
        }
        const row = await this.#insert(tx, job, now);
        // Another node inserted the same idempotency key since the look above: that job is the answer.
        if (!row) {
          outcomes.push({ job: (await this.#byIdempotencyKey(tx, job.idempotencyKey!))!, created: false });
          continue;
        }
        // Batch lines are admitted whole when their batch is made: they must not make interactive requests 503.
        if (job.source !== "batch") admitted++;
        outcomes.push({ job: row, created: true });
      }
      return outcomes;
    });
  }

  async #byIdempotencyKey(tx: Tx, key: string): Promise<JobRow | null> {
    const [row] = await tx.unsafe(`SELECT ${HEAD_COLUMNS} FROM jobs WHERE idempotency_key = $1`, [key]);
    return row ?? null;
  }

  /**
   * The insert, and fair share's lift in the same statement: a caller that has nothing queued comes back
   * level with the least served caller that waits (idleness banks no credit; see FairShare.liftTx).
   */
  async #insert(tx: Tx, job: NewJob, now: number): Promise<JobRow | null> {
    const keyId = job.owner?.keyId ?? null;
    const [row] = await tx.unsafe(
      notifyingRows(
        JOB_QUEUED_CHANNEL,
        `INSERT INTO jobs (id, type, model, model_key, request, source, state, priority, attempts, max_attempts, run_after,
           created_at, idempotency_key, webhook_url, webhook_secret, key_id)
         VALUES ($1, $2, $3, $4, $5, $6, 'queued', $7, 0, $8, $10, $10, $9, $11, $12, $13)
         ON CONFLICT (idempotency_key) DO NOTHING
         RETURNING ${HEAD_COLUMNS}`,
        `lift AS (
           INSERT INTO key_counters AS k (key_id, counter, updated_at)
           SELECT coalesce($13, ''),
             coalesce((SELECT min(counter) FROM key_counters c WHERE EXISTS (SELECT 1 FROM queued_counts q WHERE q.key_id = c.key_id AND q.n > 0)),
                      (SELECT max(counter) FROM key_counters), 0), $10::bigint
           WHERE $14::boolean AND EXISTS (SELECT 1 FROM keys)
             AND NOT EXISTS (SELECT 1 FROM queued_counts WHERE key_id = coalesce($13, '') AND n > 0)
           ON CONFLICT (key_id) DO UPDATE SET counter = greatest(k.counter, excluded.counter), updated_at = excluded.updated_at
         )`,
      ),
      [
        ulid(now),
        job.type,
        job.model,
        job.modelKey,
        job.request,
        job.source,
        job.priority ?? 0,
        job.maxAttempts,
        job.idempotencyKey ?? null,
        now,
        job.webhook?.url ?? null,
        job.webhook?.secret ?? null,
        keyId,
        this.fairEnabled,
      ],
    );
    return row ?? null;
  }

  async getJob(id: string): Promise<JobRow | null> {
    const [row] = await this.#sql.unsafe(`SELECT ${JOB_COLUMNS} FROM jobs WHERE id = $1`, [id]);
    return row ?? null;
  }

  /** The job without its request and result ("" and null). */
  async getJobHead(id: string): Promise<JobRow | null> {
    const [row] = await this.#sql.unsafe(`SELECT ${HEAD_COLUMNS} FROM jobs WHERE id = $1`, [id]);
    return row ?? null;
  }

  /** The job's state alone (null: no such job). */
  async jobState(id: string): Promise<JobState | null> {
    const [row] = await this.#sql`SELECT state FROM jobs WHERE id = ${id}`;
    return row?.state ?? null;
  }

  /** Queued jobs, batch lines included (queued_counts: a few rows). */
  async queuedCount(): Promise<number> {
    const [row] = await this.#sql`SELECT coalesce(sum(n), 0)::float8 AS n FROM queued_counts`;
    return row.n;
  }

  /** Queued jobs of one model key, every priority. */
  async queuedOfKey(modelKey: string): Promise<number> {
    const [row] = await this.#sql`SELECT coalesce(sum(n), 0)::float8 AS n FROM queued_counts WHERE model_key = ${modelKey}`;
    return row.n;
  }

  /**
   * What placement between targets reads synchronously inside a claim (see PgRunnerStore): every model
   * key's learned costs and how many jobs of each key are queued. One round trip over the few count and
   * cost rows, whatever the queue's length.
   */
  async placementView(): Promise<{ costs: Map<string, ModelCost>; queuedByKey: Map<string, number> }> {
    const [costs, counts] = await Promise.all([
      this.#sql.unsafe(
        `SELECT model_key AS "modelKey", load_ms AS "loadMs", run_ms AS "runMs", total_ms AS "totalMs",
           output_tokens AS "outputTokens", eval_ms AS "evalMs", jobs, loads, updated_at::float8 AS "updatedAt"
         FROM model_costs`,
      ) as Promise<ModelCost[]>,
      this.#sql`SELECT model_key AS "modelKey", sum(n)::float8 AS n FROM queued_counts GROUP BY model_key` as Promise<
        { modelKey: string; n: number }[]
      >,
    ]);
    return {
      costs: new Map(costs.map((cost) => [cost.modelKey, cost])),
      queuedByKey: new Map(counts.map((row) => [row.modelKey, row.n])),
    };
  }

  /**
   * Picks and marks the next job for the fence's target (state loading, attempts + 1, target set), or null:
   * none runnable, or the fence no longer holds. The read and the mark are two statements, not one
   * transaction: the mark re-checks all that makes the pick valid (still queued, runnable, not locked by
   * another node's claim, the fence), and under READ COMMITTED a transaction around them would read no more
   * consistently. A pick another node took in between is read again, a few times at most.
   */
  async claimNextJob(policy: ClaimPolicy, fence: Fence): Promise<JobRow | null> {
    if (policy.target != null && policy.target !== fence.target)
      throw new Error(`claim for target ${policy.target} under the fence of ${fence.target}`);
    for (let attempt = 0; attempt < CLAIM_RETRIES; attempt++) {
      const snapshot = await this.#snapshot(policy, fence);
      if (!snapshot.fenced) return null;
      const chosen = pickNextJob(snapshotView(snapshot, policy.maxWaitMs), policy, snapshot.now);
      if (!chosen) return null;
      const [row] = await this.#sql.unsafe(
        `UPDATE jobs SET state = 'loading', started_at = ${NOW_MS}, attempts = attempts + 1, error = NULL, error_status = NULL,
           swapped = $2, target = $3
         WHERE id = (SELECT id FROM jobs WHERE id = $1 AND state = 'queued' AND run_after <= ${NOW_MS} FOR UPDATE SKIP LOCKED)
           AND ${FENCE_HOLDS("$3", "$4")}
         RETURNING ${JOB_COLUMNS}`,
        [chosen.pick.id, chosen.swapped, fence.target, fence.token],
      );
      if (row) return row;
    }
    return null;
  }

  async #snapshot(policy: ClaimPolicy, fence: Fence): Promise<Snapshot> {
    const [row] = await this.#sql.unsafe(SNAPSHOT_SQL, [fence.target, fence.token, policy.maxWaitMs, this.fairEnabled]);
    return row as Snapshot;
  }

  /** loading → working: the first chunk arrived (under the fence the job was claimed with). */
  async markWorking(id: string, fence: Fence): Promise<JobRow | null> {
    const [row] = await this.#sql.unsafe(
      `UPDATE jobs SET state = 'working' WHERE id = $1 AND state = 'loading' AND target = $2 AND ${FENCE_HOLDS("$2", "$3")}
       RETURNING ${HEAD_COLUMNS}`,
      [id, fence.target, fence.token],
    );
    return row ?? null;
  }

  /**
   * Ends the job done with its result and usage, learns its model's costs and charges its caller, in one
   * transaction; null if it had already ended or the fence no longer holds (then nothing changed).
   */
  async finishJob(id: string, fence: Fence, result: string, usage: JobUsage = NO_USAGE): Promise<JobRow | null> {
    const { promptTokens, outputTokens, loadMs, evalMs, estimated } = usage;
    return this.#tx(async (tx) => {
      const [job] = await tx.unsafe(
        notifyingRows(
          JOB_END_CHANNEL,
          `UPDATE jobs SET state = 'done', finished_at = ${NOW_MS}, result = $2, error = NULL, error_status = NULL,
             prompt_tokens = $3, output_tokens = $4, load_ms = $5, eval_ms = $6, tokens_estimated = $7
           WHERE id = $1 AND state IN ('loading', 'working') AND target = $8 AND ${FENCE_HOLDS("$8", "$9")}
           RETURNING ${HEAD_COLUMNS}`,
        ),
        [id, result, promptTokens, outputTokens, loadMs, evalMs, estimated ? 1 : 0, fence.target, fence.token],
      );
      if (!job) return null;
      job.result = result;
      await this.#learn(tx, job);
      await this.#charge(tx, job);
      return job as JobRow;
    });
  }

  /** Ends the job failed with the upstream status (or null); null if it had already ended or the fence no longer holds. */
  async failJob(id: string, fence: Fence, error: string, status: number | null): Promise<JobRow | null> {
    return this.#tx(async (tx) => {
      const [job] = await tx.unsafe(
        notifyingRows(
          JOB_END_CHANNEL,
          `UPDATE jobs SET state = 'failed', finished_at = ${NOW_MS}, error = $2, error_status = $3::integer
           WHERE id = $1 AND state IN ('queued', 'loading', 'working') AND target = $4 AND ${FENCE_HOLDS("$4", "$5")}
           RETURNING ${HEAD_COLUMNS}`,
        ),
        [id, error, status, fence.target, fence.token],
      );
      if (job) await this.#charge(tx, job);
      return job ?? null;
    });
  }

  /**
   * Cancels a queued or running job; null when it does not exist or already ended. A runner's cancel (a
   * client hung up before the job was sent) gives its fence and takes effect only while it holds; a
   * client's cancel through the API gives none.
   */
  async cancelJob(
    id: string,
    reason: { error: string; status: number } = CLIENT_CANCELED,
    fence?: Fence,
  ): Promise<JobRow | null> {
    return this.#tx(async (tx) => {
      const [job] = fence
        ? await tx.unsafe(
            notifyingRows(
              JOB_END_CHANNEL,
              `UPDATE jobs SET state = 'canceled', finished_at = ${NOW_MS}, error = $2, error_status = $3
               WHERE id = $1 AND state IN ('queued', 'loading', 'working') AND target = $4 AND ${FENCE_HOLDS("$4", "$5")}
               RETURNING ${HEAD_COLUMNS}`,
            ),
            [id, reason.error, reason.status, fence.target, fence.token],
          )
        : await tx.unsafe(
            notifyingRows(
              JOB_END_CHANNEL,
              `UPDATE jobs SET state = 'canceled', finished_at = ${NOW_MS}, error = $2, error_status = $3
               WHERE id = $1 AND state IN ('queued', 'loading', 'working') RETURNING ${HEAD_COLUMNS}`,
            ),
            [id, reason.error, reason.status],
          );
      if (job) await this.#charge(tx, job);
      return job ?? null;
    });
  }

  /**
   * Puts a running job back in the queue, runnable `delayMs` after now by the database's clock (a backoff;
   * 0 for at once). `refundAttempt` undoes the claim's count. Null if it is not running or the fence no longer holds.
   */
  async requeueJob(
    id: string,
    fence: Fence,
    delayMs: number,
    error: string | null,
    status: number | null,
    refundAttempt = false,
  ): Promise<JobRow | null> {
    const [row] = await this.#sql.unsafe(
      notifyingRows(
        JOB_QUEUED_CHANNEL,
        `UPDATE jobs SET state = 'queued', run_after = ${NOW_MS} + $2::bigint, error = $3::text, error_status = $4::integer,
           attempts = greatest(0, attempts - $5::integer)
         WHERE id = $1 AND state IN ('loading', 'working') AND target = $6 AND ${FENCE_HOLDS("$6", "$7")}
         RETURNING ${HEAD_COLUMNS}`,
      ),
      [id, Math.max(0, Math.round(delayMs)), error, status, refundAttempt ? 1 : 0, fence.target, fence.token],
    );
    return row ?? null;
  }

  /**
   * Recovery by target, when a node takes over targets' leases (a dead or parted node held them): the jobs
   * left loading or working on those targets go back to the queue, their attempt counted; one that has used
   * every attempt fails; a client's own request is canceled (its stream died with the node that ran it).
   * Only targets whose fence holds are recovered. Unlike JobStore's recovery, queued client requests are left
   * alone: they may belong to a live node's clients.
   */
  async recoverInterruptedJobs(fences: readonly Fence[]): Promise<{ requeued: JobRow[]; failed: JobRow[]; canceled: JobRow[] }> {
    return this.#tx(async (tx) => {
      const held: string[] = [];
      for (const fence of fences) {
        const [row] = await tx.unsafe(`SELECT ${FENCE_HOLDS("$1", "$2")} AS yes`, [fence.target, fence.token]);
        if (row.yes) held.push(fence.target);
      }
      const running = `target = ANY($1::text[]) AND state IN ('loading', 'working')`;
      const targets = tx.array(held, "TEXT");
      const canceled: JobRow[] = await tx.unsafe(
        `UPDATE jobs SET state = 'canceled', finished_at = ${NOW_MS}, error = $2, error_status = $3
         WHERE ${running} AND source NOT IN (${NOBODY_WAITING}) RETURNING ${HEAD_COLUMNS}`,
        [targets, RESTART_DROPPED_RUNNING.error, RESTART_DROPPED_RUNNING.status],
      );
      const failed: JobRow[] = await tx.unsafe(
        `UPDATE jobs SET state = 'failed', finished_at = ${NOW_MS}, error = 'interrupted ' || attempts || ' times', error_status = 500
         WHERE ${running} AND source IN (${NOBODY_WAITING}) AND attempts >= max_attempts RETURNING ${HEAD_COLUMNS}`,
        [targets],
      );
      // The ended jobs' charges before the re-queue's count rows: key_counters, then queued_counts, the order an
      // enqueue locks them in (its lift, then its insert's trigger), so the two cannot deadlock.
      for (const job of [...canceled, ...failed]) await this.#charge(tx, job);
      if (canceled.length + failed.length > 0)
        await notifyJobEnded(
          tx,
          [...canceled, ...failed].map((job) => job.id),
        );
      const requeued: JobRow[] = await tx.unsafe(
        notifyingRows(
          JOB_QUEUED_CHANNEL,
          `UPDATE jobs SET state = 'queued', run_after = ${NOW_MS}, error = 'interrupted', error_status = NULL
           WHERE ${running} AND source IN (${NOBODY_WAITING}) AND attempts < max_attempts RETURNING ${HEAD_COLUMNS}`,
        ),
        [targets],
      );
      // Plain arrays of rows, not the driver's result objects (which carry the statement's count and command).
      return { requeued: [...requeued], failed: [...failed], canceled: [...canceled] };
    });
  }

  /** The earliest run_after among queued jobs, by the database's clock, or null when none is queued. */
  async nextRunAfter(): Promise<number | null> {
    const [row] = await this.#sql`SELECT min(run_after)::float8 AS t FROM jobs WHERE state = 'queued'`;
    return row.t;
  }

  /** How long until the earliest queued job is runnable (0: now), by the database's clock; null when none is queued. */
  async nextRunIn(): Promise<number | null> {
    const [row] = await this.#sql.unsafe(
      `SELECT greatest(0, min(run_after) - ${NOW_MS})::float8 AS t FROM jobs WHERE state = 'queued'`,
    );
    return row.t;
  }

  /** Deletes jobs that ended more than `ageMs` ago by the database's clock; how many. Count rows left at 0 go too. */
  async pruneFinishedJobs(ageMs: number): Promise<number> {
    const pruned = await this.#sql.unsafe(
      `DELETE FROM jobs WHERE state IN ('done', 'failed', 'canceled') AND finished_at < ${NOW_MS} - $1::bigint`,
      [Math.max(0, Math.round(ageMs))],
    );
    await this.#sql`DELETE FROM queued_counts WHERE n = 0`;
    return pruned.count;
  }

  /** The database's clock (epoch ms), the one every time in the queue is read from. */
  async now(): Promise<number> {
    const [row] = await this.#sql.unsafe(`SELECT ${NOW_MS}::float8 AS now`);
    return row.now;
  }

  /**
   * Folds a job that ended done into its model key's averages (as ModelCosts.learnTx): its row is locked
   * first (an upsert that changes nothing but returns it), so two nodes ending jobs of one key at once
   * each fold their sample into the other's.
   */
  async #learn(tx: Tx, job: JobRow): Promise<void> {
    if (job.startedAt === null || job.finishedAt === null) return;
    const totalMs = Math.max(0, job.finishedAt - job.startedAt);
    const [old] = await tx.unsafe(
      `INSERT INTO model_costs AS m (model_key, jobs, loads, updated_at) VALUES ($1, 0, 0, $2)
       ON CONFLICT (model_key) DO UPDATE SET model_key = m.model_key
       RETURNING load_ms AS "loadMs", run_ms AS "runMs", total_ms AS "totalMs", output_tokens AS "outputTokens",
         eval_ms AS "evalMs", jobs, loads`,
      [job.modelKey, job.finishedAt],
    );
    const { loadSample, runSample } = samplesOf(job, totalMs, old.runMs);
    await tx.unsafe(
      `UPDATE model_costs SET load_ms = $2, run_ms = $3, total_ms = $4, output_tokens = $5, eval_ms = $6, jobs = $7, loads = $8,
         updated_at = $9 WHERE model_key = $1`,
      [
        job.modelKey,
        ewma(old.loadMs, loadSample),
        ewma(old.runMs, runSample),
        ewma(old.totalMs, totalMs),
        ewma(old.outputTokens, job.outputTokens),
        ewma(old.evalMs, job.evalMs),
        old.jobs + 1,
        old.loads + (loadSample === null ? 0 : 1),
        job.finishedAt,
      ],
    );
  }

  /** Fair share's charge at the end of a job that ran: its GPU time over its key's weight (FairShare.chargeTx). */
  async #charge(tx: Tx, job: JobRow): Promise<void> {
    if (job.startedAt === null || job.finishedAt === null || !this.fairEnabled) return;
    await tx.unsafe(
      `INSERT INTO key_counters AS k (key_id, counter, updated_at)
       SELECT coalesce($1, ''), $2::float8 / coalesce((SELECT weight FROM keys WHERE id = $1), 1), $3::bigint
       WHERE EXISTS (SELECT 1 FROM keys)
       ON CONFLICT (key_id) DO UPDATE SET counter = k.counter + excluded.counter, updated_at = excluded.updated_at`,
      [job.keyId, Math.max(0, job.finishedAt - job.startedAt), job.finishedAt],
    );
  }

  /** A transaction, run again from the start when PostgreSQL aborted it for a deadlock or a serialization failure. */
  async #tx<T>(body: (tx: Tx) => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return (await this.#sql.begin((tx) => body(tx as unknown as Tx))) as T;
      } catch (error) {
        const code = (error as { errno?: string }).errno;
        if (attempt >= TX_RETRIES || code === undefined || !RETRYABLE.has(code)) throw error;
      }
    }
  }
}
