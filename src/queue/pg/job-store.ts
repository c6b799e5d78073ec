import type { SQL } from "bun";
import { monotonicFactory } from "ulid";
import { QueueFullError } from "../../errors";
import type { ArtifactInput } from "../artifacts";
import { type ClaimPolicy, pickNextJob } from "../claim-rules";
import type { ClaimPick, ClaimView } from "../claim-view";
import type { WaitingCaller } from "../fair-share";
import type { JobRow } from "../job-row";
import { type JobState, NOBODY_WAITING_SOURCES, isNobodyWaiting } from "../job-states";
import { type ModelCost, type TargetCost, ewma, samplesOf } from "../model-costs";
import { CLIENT_CANCELED, type JobUsage, type NewJob, RESTART_DROPPED_RUNNING } from "../store";
import { PgArtifacts, type PgStatement, artifactsInsert } from "./artifacts";
import { admitKey, capLocks, cappedKeys, usageCharge } from "./key-usage";
import { JOB_END_CHANNEL, JOB_QUEUED_CHANNEL, JOB_STARTED_CHANNEL, notifyJobEnded, notifyingRows } from "./notify";

// Monotonic: ids this node makes in one millisecond still sort in the order it made them (the FIFO tie-break).
const ulid = monotonicFactory();
/** Webhook deliveries' ids (msg_<ULID> at the job's end, as SQLite's WebhookDeliveries makes them), apart from the jobs'. */
const deliveryUlid = monotonicFactory();

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
export const JOB_COLUMNS = `id, type, model, model_key AS "modelKey", request, source, state, priority, attempts,
  max_attempts AS "maxAttempts", run_after::float8 AS "runAfter", error, error_status AS "errorStatus",
  created_at::float8 AS "createdAt", started_at::float8 AS "startedAt", finished_at::float8 AS "finishedAt", result,
  idempotency_key AS "idempotencyKey", webhook_url AS "webhookUrl", webhook_secret AS "webhookSecret", swapped,
  prompt_tokens AS "promptTokens", output_tokens AS "outputTokens", load_ms AS "loadMs", eval_ms AS "evalMs",
  tokens_estimated AS "tokensEstimated", key_id AS "keyId", target`;

/** The columns a state change returns: the request and result come back as "" and null (see JobStore). */
export const HEAD_COLUMNS = JOB_COLUMNS.replace(", request,", `, '' AS request,`).replace(", result,", ", NULL::text AS result,");

const NOBODY_WAITING = NOBODY_WAITING_SOURCES.map((s) => `'${s}'`).join(", ");

/** Why a client's request is canceled when the node holding its connection died: nobody is left to read it. */
export const NODE_GONE = {
  error: "the foreman node holding this request's connection stopped; nobody is left waiting for the answer",
  status: 499,
} as const;

const NO_USAGE: JobUsage = { promptTokens: null, outputTokens: null, loadMs: null, evalMs: null };

/** model_costs' columns as a ModelCost. */
const MODEL_COST_COLUMNS = `model_key AS "modelKey", load_ms AS "loadMs", run_ms AS "runMs", total_ms AS "totalMs",
  output_tokens AS "outputTokens", eval_ms AS "evalMs", jobs, loads, updated_at::float8 AS "updatedAt"`;

/** target_costs' columns as a TargetCost. */
const TARGET_COST_COLUMNS = `model_key AS "modelKey", load_ms AS "loadMs", run_ms AS "runMs", jobs, loads,
  updated_at::float8 AS "updatedAt"`;

/** The learned costs on PostgreSQL: ModelCosts' reads (all, forTarget) made async, and its perTarget switch. */
export interface PgCosts {
  /** Every model key's costs, by key (in byte order). */
  all(): Promise<Map<string, ModelCost>>;
  /** What each model key has cost on one target (rows only for keys it has run there). */
  forTarget(target: string): Promise<Map<string, TargetCost>>;
  /**
   * Learn per target too, as ModelCosts.perTarget: a node running several targets (its worker sets it). With
   * one target its costs are the key's costs, and a second row would be the first's copy.
   */
  perTarget: boolean;
}

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

/**
 * The webhook deliveries of the ended `jobs` that have a webhook (webhook_deliveries, migration 004), one
 * statement whatever their number, its one parameter `$from` (the rows as JSON), for the transaction that ends
 * them to run with its other writes (#recordEnds): so an ended job always has its delivery and an end rolled
 * back has none. Each is due at its job's end (the database's clock). ON CONFLICT DO NOTHING is SQLite's INSERT
 * OR IGNORE (WebhookDeliveries.queueTx). The new rows wake every node's dispatcher on commit (the table's
 * trigger). Null when none has a webhook, the end of most jobs: nothing is written, nothing added to the end.
 */
function deliveriesInsert(jobs: readonly JobRow[], from = 1): PgStatement | null {
  const hooked = jobs.filter((job) => job.webhookUrl);
  if (hooked.length === 0) return null;
  const rows = hooked.map((job) => ({
    id: `msg_${deliveryUlid(job.finishedAt!)}`,
    job_id: job.id,
    url: job.webhookUrl,
    secret: job.webhookSecret,
    at: job.finishedAt,
    key_id: job.keyId,
  }));
  return {
    sql: `INSERT INTO webhook_deliveries (id, job_id, url, secret, state, next_attempt_at, created_at, key_id)
      SELECT id, job_id, url, secret, 'pending', at, at, key_id
      FROM jsonb_to_recordset($${from}::text::jsonb) AS d(id text, job_id text, url text, secret text, at bigint, key_id text)
      ON CONFLICT DO NOTHING`,
    params: [JSON.stringify(rows)],
  };
}

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
  /** The node whose clients' requests this store queues (their `waiter`); null: none waits here (a runner, a test). */
  node: string | null = null;
  /** The jobs' artifacts, written in the transaction that ends each (QueueStore.artifacts). */
  readonly artifacts: PgArtifacts;
  /** What each model key has cost, overall and per target, learned in the transaction that ends a job done. */
  readonly costs: PgCosts;

  constructor(sql: SQL) {
    this.#sql = sql;
    this.artifacts = new PgArtifacts(sql);
    this.costs = {
      perTarget: false,
      all: async () => {
        const rows: ModelCost[] = await sql.unsafe(`SELECT ${MODEL_COST_COLUMNS} FROM model_costs ORDER BY model_key`);
        return new Map(rows.map((cost) => [cost.modelKey, cost]));
      },
      forTarget: async (target) => {
        const rows: TargetCost[] = await sql.unsafe(
          `SELECT ${TARGET_COST_COLUMNS} FROM target_costs WHERE target = $1 ORDER BY model_key`,
          [target],
        );
        return new Map(rows.map((cost) => [cost.modelKey, cost]));
      },
    };
  }

  /**
   * Adds a queued job. Throws QueueFullError when `maxQueue` jobs already wait (batch lines not counted), and
   * KeyLimitError when its owner's key is at its job cap or used its daily tokens (KeyUsage.admitTx's checks).
   * With an idempotency key that is already known, returns that job and `created: false` instead.
   */
  async enqueue(job: NewJob, maxQueue: number): Promise<{ job: JobRow; created: boolean }> {
    const [outcome] = await this.enqueueMany([job], maxQueue);
    if (outcome instanceof Error) throw outcome;
    return outcome!;
  }

  /**
   * Several {@link enqueue}s in one transaction (one commit for all): each its own outcome, its job or the
   * QueueFullError or KeyLimitError it alone met. As JobStore's, the check counts interactive jobs (not batch
   * lines) and applies to every job. The count is read once and kept up to date with each job this call adds;
   * two nodes admitting at once may each pass the last free place (the bound is backpressure, not a quota).
   * A job with an owner is then admitted by its key's limits (admitKey: JobStore's order, errors and
   * messages). A job cap is a quota, so a capped key's admissions are serialized across nodes (capLocks).
   */
  async enqueueMany(jobs: readonly NewJob[], maxQueue: number): Promise<Array<{ job: JobRow; created: boolean } | Error>> {
    const capped = cappedKeys(jobs.map((job) => job.owner));
    return this.#tx(async (tx) => {
      const head = `SELECT ${NOW_MS}::float8 AS now, (SELECT coalesce(sum(n), 0) FROM queued_counts WHERE batch = 0)::float8 AS admitted`;
      // The capped keys' locks in the first statement, so every count admitKey reads later follows them.
      const [{ now, admitted: counted }] =
        capped.length > 0
          ? await tx.unsafe(`${head}, ${capLocks("$1")} AS locked`, [tx.array(capped, "TEXT")])
          : await tx.unsafe(head);
      let admitted: number = counted;
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
        const refusal = job.owner ? await admitKey(tx, job.owner, now) : null;
        if (refusal) {
          outcomes.push(refusal);
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
           created_at, idempotency_key, webhook_url, webhook_secret, key_id, waiter)
         VALUES ($1, $2, $3, $4, $5, $6, 'queued', $7, 0, $8, $10, $10, $9, $11, $12, $13, $15)
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
        isNobodyWaiting(job.source) ? null : this.node,
      ],
    );
    return row ?? null;
  }

  /**
   * This node is alive (its clients' connections with it): its row in `nodes` on the database's clock. Rows of
   * nodes gone for a day with nothing left waiting on them are deleted on the way (a restart is a new name).
   */
  async heartbeat(node: string, url: string | null = null): Promise<void> {
    await this.#sql`INSERT INTO nodes (name, seen_at, url) VALUES (${node}, now(), ${url})
      ON CONFLICT (name) DO UPDATE SET seen_at = now(), url = excluded.url`;
    await this.#sql`DELETE FROM nodes n WHERE n.seen_at < now() - interval '1 day' AND NOT EXISTS (
      SELECT 1 FROM jobs WHERE waiter = n.name AND state IN ('queued', 'loading', 'working'))`;
  }

  /**
   * Cancels the client requests whose node has not beaten for `silentMs` (it died with their connections),
   * queued or running on any target; the rows canceled (their end notified, as cancelJobs does).
   */
  async cancelOrphans(silentMs: number, reason: { error: string; status: number }): Promise<JobRow[]> {
    const orphans: Array<{ id: string }> = await this.#sql.unsafe(
      `SELECT j.id FROM nodes n JOIN jobs j ON j.waiter = n.name AND j.state IN ('queued', 'loading', 'working')
       WHERE n.seen_at < now() - make_interval(secs => $1::float8 / 1000)`,
      [silentMs],
    );
    return this.cancelJobs(
      orphans.map((row) => row.id),
      reason,
    );
  }

  /**
   * Where the job runs now: the node holding its target's lease and that node's relay URL (null when it
   * has none), or null when it is not running.
   */
  async runningAt(id: string): Promise<{ node: string; url: string | null } | null> {
    const [row] = await this.#sql`SELECT l.node, n.url FROM jobs j JOIN target_leases l ON l.target = j.target
      LEFT JOIN nodes n ON n.name = l.node WHERE j.id = ${id} AND j.state IN ('loading', 'working')`;
    return row ?? null;
  }

  /** The secret the nodes' relays share: made by the first node that asks, the same for every node after. */
  async nodeSecret(): Promise<string> {
    const made = Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString("base64url");
    await this.#sql`INSERT INTO node_secret (id, secret) VALUES (1, ${made}) ON CONFLICT (id) DO NOTHING`;
    const [row] = await this.#sql`SELECT secret FROM node_secret WHERE id = 1`;
    return row.secret as string;
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
   * key's learned costs, overall and per target (by target, then key), and how many jobs of each key are
   * queued. One round trip each, in parallel, over the few count and cost rows, whatever the queue's length.
   */
  async placementView(): Promise<{
    costs: Map<string, ModelCost>;
    targetCosts: Map<string, Map<string, TargetCost>>;
    queuedByKey: Map<string, number>;
  }> {
    const [costs, perTarget, counts] = await Promise.all([
      this.#sql.unsafe(`SELECT ${MODEL_COST_COLUMNS} FROM model_costs`) as Promise<ModelCost[]>,
      this.#sql.unsafe(`SELECT target, ${TARGET_COST_COLUMNS} FROM target_costs ORDER BY target, model_key`) as Promise<
        (TargetCost & { target: string })[]
      >,
      this.#sql`SELECT model_key AS "modelKey", sum(n)::float8 AS n FROM queued_counts GROUP BY model_key` as Promise<
        { modelKey: string; n: number }[]
      >,
    ]);
    const targetCosts = new Map<string, Map<string, TargetCost>>();
    for (const { target, ...cost } of perTarget) {
      const here = targetCosts.get(target) ?? new Map<string, TargetCost>();
      here.set(cost.modelKey, cost);
      targetCosts.set(target, here);
    }
    return {
      costs: new Map(costs.map((cost) => [cost.modelKey, cost])),
      targetCosts,
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
      // The start is announced in the claim's own commit: a node whose client waits on it connects to this
      // node's relay for the records (src/nodes/relay-sink.ts).
      const [row] = await this.#sql.unsafe(
        notifyingRows(
          JOB_STARTED_CHANNEL,
          `UPDATE jobs SET state = 'loading', started_at = ${NOW_MS}, attempts = attempts + 1, error = NULL, error_status = NULL,
             swapped = $2, target = $3
           WHERE id = (SELECT id FROM jobs WHERE id = $1 AND state = 'queued' AND run_after <= ${NOW_MS} FOR UPDATE SKIP LOCKED)
             AND ${FENCE_HOLDS("$3", "$4")}
           RETURNING ${JOB_COLUMNS}`,
        ),
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
   * Ends the job done with its result and usage, learns its model's costs, charges its caller (fair share)
   * and its key (tokens, GPU time) and stores its artifacts, in one transaction; null if it had already ended
   * or the fence no longer holds (then nothing changed, nothing is stored).
   */
  async finishJob(
    id: string,
    fence: Fence,
    result: string,
    usage: JobUsage = NO_USAGE,
    artifacts: readonly ArtifactInput[] = [],
  ): Promise<JobRow | null> {
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
      await this.#recordEnds(tx, [job], artifacts);
      return job as JobRow;
    });
  }

  /**
   * Ends the job failed with the upstream status (or null), charging what it held the GPU and storing its
   * artifacts (a stream's part) with it; null if it had already ended or the fence no longer holds.
   */
  async failJob(
    id: string,
    fence: Fence,
    error: string,
    status: number | null,
    artifacts: readonly ArtifactInput[] = [],
  ): Promise<JobRow | null> {
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
      if (!job) return null;
      await this.#charge(tx, job);
      await this.#recordEnds(tx, [job], artifacts);
      return job;
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
      if (!job) return null;
      await this.#charge(tx, job);
      await this.#recordEnds(tx, [job]);
      return job;
    });
  }

  /**
   * {@link cancelJob} for many jobs in one transaction, as API cancels (no fence): one statement cancels them
   * all and tells every node each end, then each is charged as cancelJob charges it. The rows canceled, in
   * the order of `ids` (a repeated id once), leaving out those that do not exist or had already ended.
   */
  async cancelJobs(ids: readonly string[], reason: { error: string; status: number } = CLIENT_CANCELED): Promise<JobRow[]> {
    if (ids.length === 0) return [];
    return this.#tx(async (tx) => {
      const rows: JobRow[] = await tx.unsafe(
        notifyingRows(
          JOB_END_CHANNEL,
          `UPDATE jobs SET state = 'canceled', finished_at = ${NOW_MS}, error = $2, error_status = $3
           WHERE id = ANY($1::text[]) AND state IN ('queued', 'loading', 'working') RETURNING ${HEAD_COLUMNS}`,
        ),
        [tx.array([...ids], "TEXT"), reason.error, reason.status],
      );
      // Fair share's charges by key, so two transactions charging the same keys lock their counters in one order.
      const byKey = [...rows].sort((a, b) =>
        (a.keyId ?? "") < (b.keyId ?? "") ? -1 : (a.keyId ?? "") > (b.keyId ?? "") ? 1 : 0,
      );
      for (const job of byKey) await this.#charge(tx, job);
      await this.#recordEnds(tx, rows);
      const byId = new Map(rows.map((job) => [job.id, job]));
      return [...new Set(ids)].flatMap((id) => byId.get(id) ?? []);
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
  async recoverInterruptedJobs(
    fences: readonly Fence[],
    /**
     * With several nodes: a client's request whose node (its `waiter`) beat this recently still has its client
     * waiting there, so it goes back to the queue like a job API job instead of being canceled.
     */
    waiterAliveWithinMs?: number,
  ): Promise<{ requeued: JobRow[]; failed: JobRow[]; canceled: JobRow[] }> {
    return this.#tx(async (tx) => {
      const held: string[] = [];
      for (const fence of fences) {
        const [row] = await tx.unsafe(`SELECT ${FENCE_HOLDS("$1", "$2")} AS yes`, [fence.target, fence.token]);
        if (row.yes) held.push(fence.target);
      }
      const running = `target = ANY($1::text[]) AND state IN ('loading', 'working')`;
      // Someone still waits for it: a job API or batch job, or a client request whose node is alive.
      const waited = `(source IN (${NOBODY_WAITING}) OR ($2::float8 IS NOT NULL AND EXISTS (SELECT 1 FROM nodes n
        WHERE n.name = jobs.waiter AND n.seen_at >= now() - make_interval(secs => $2::float8 / 1000))))`;
      const targets = tx.array(held, "TEXT");
      const alive = waiterAliveWithinMs ?? null;
      const canceled: JobRow[] = await tx.unsafe(
        `UPDATE jobs SET state = 'canceled', finished_at = ${NOW_MS}, error = $3, error_status = $4
         WHERE ${running} AND NOT ${waited} RETURNING ${HEAD_COLUMNS}`,
        [targets, alive, RESTART_DROPPED_RUNNING.error, RESTART_DROPPED_RUNNING.status],
      );
      // The queued requests of clients whose node is gone too (the dead holder's own, most often): before this
      // node claims any of them for nobody. A standby node's death is left to the slower heartbeat check.
      if (alive !== null)
        canceled.push(
          ...(await tx.unsafe(
            `UPDATE jobs SET state = 'canceled', finished_at = ${NOW_MS}, error = $2, error_status = $3
             WHERE state = 'queued' AND waiter IS NOT NULL AND NOT EXISTS (SELECT 1 FROM nodes n
               WHERE n.name = jobs.waiter AND n.seen_at >= now() - make_interval(secs => $1::float8 / 1000))
             RETURNING ${HEAD_COLUMNS}`,
            [alive, NODE_GONE.error, NODE_GONE.status],
          )),
        );
      const failed: JobRow[] = await tx.unsafe(
        `UPDATE jobs SET state = 'failed', finished_at = ${NOW_MS}, error = 'interrupted ' || attempts || ' times', error_status = 500
         WHERE ${running} AND ${waited} AND attempts >= max_attempts RETURNING ${HEAD_COLUMNS}`,
        [targets, alive],
      );
      // The ended jobs' charges before the re-queue's count rows: key_counters, then queued_counts, the order an
      // enqueue locks them in (its lift, then its insert's trigger), so the two cannot deadlock.
      for (const job of [...canceled, ...failed]) await this.#charge(tx, job);
      await this.#recordEnds(tx, [...canceled, ...failed]);
      if (canceled.length + failed.length > 0)
        await notifyJobEnded(
          tx,
          [...canceled, ...failed].map((job) => job.id),
        );
      const requeued: JobRow[] = await tx.unsafe(
        notifyingRows(
          JOB_QUEUED_CHANNEL,
          `UPDATE jobs SET state = 'queued', run_after = ${NOW_MS}, error = 'interrupted', error_status = NULL
           WHERE ${running} AND ${waited} AND attempts < max_attempts RETURNING ${HEAD_COLUMNS}`,
        ),
        [targets, alive],
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
   * Folds a job that ended done into its model key's averages (as ModelCosts.learnTx), and with
   * costs.perTarget into the key's averages on the job's target as well. Its rows are locked first (one
   * statement of upserts that change nothing but return them), so two nodes ending jobs of one key at once
   * each fold their sample into the other's; then one statement writes them.
   */
  async #learn(tx: Tx, job: JobRow): Promise<void> {
    if (job.startedAt === null || job.finishedAt === null) return;
    const totalMs = Math.max(0, job.finishedAt - job.startedAt);
    const target = this.costs.perTarget ? job.target : null;
    const [old] = await tx.unsafe(
      `WITH m AS (
         INSERT INTO model_costs AS m (model_key, jobs, loads, updated_at) VALUES ($1, 0, 0, $2::bigint)
         ON CONFLICT (model_key) DO UPDATE SET model_key = m.model_key
         RETURNING load_ms, run_ms, total_ms, output_tokens, eval_ms, jobs, loads
       ), t AS (
         INSERT INTO target_costs AS t (target, model_key, jobs, loads, updated_at)
         SELECT $3::text, $1, 0, 0, $2::bigint WHERE $3::text IS NOT NULL
         ON CONFLICT (target, model_key) DO UPDATE SET model_key = t.model_key
         RETURNING load_ms, run_ms, jobs, loads
       )
       SELECT m.load_ms AS "loadMs", m.run_ms AS "runMs", m.total_ms AS "totalMs", m.output_tokens AS "outputTokens",
         m.eval_ms AS "evalMs", m.jobs, m.loads, t.load_ms AS "targetLoadMs", t.run_ms AS "targetRunMs",
         t.jobs AS "targetJobs", t.loads AS "targetLoads"
       FROM m LEFT JOIN t ON true`,
      [job.modelKey, job.finishedAt, target],
    );
    const { loadSample, runSample } = samplesOf(job, totalMs, old.runMs);
    // The target's samples against its own warm run time, as ModelCosts.#learnOnTarget takes them.
    const here = target === null ? null : samplesOf(job, totalMs, old.targetRunMs);
    await tx.unsafe(
      `WITH t AS (
         UPDATE target_costs SET load_ms = $11, run_ms = $12, jobs = $13, loads = $14, updated_at = $9
         WHERE target = $10 AND model_key = $1
       )
       UPDATE model_costs SET load_ms = $2, run_ms = $3, total_ms = $4, output_tokens = $5, eval_ms = $6, jobs = $7, loads = $8,
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
        target,
        here && ewma(old.targetLoadMs, here.loadSample),
        here && ewma(old.targetRunMs, here.runSample),
        here && old.targetJobs + 1,
        here && old.targetLoads + (here.loadSample === null ? 0 : 1),
      ],
    );
  }

  /**
   * What every end records besides fair share's charge, in its transaction: the jobs' key usage (tokens of
   * those done, GPU time of those that ran: key-usage.ts), the one job's artifacts and the webhook deliveries
   * of those that have a webhook (deliveriesInsert), as one statement of all the writes, or none when there is
   * nothing to write. `artifacts` are `jobs[0]`'s (a runner's end). Every end of a job goes through here.
   */
  async #recordEnds(tx: Tx, jobs: readonly JobRow[], artifacts: readonly ArtifactInput[] = []): Promise<void> {
    const writes: PgStatement[] = [];
    const from = () => 1 + writes.reduce((n, write) => n + write.params.length, 0);
    const charge = usageCharge(jobs);
    if (charge) writes.push(charge);
    const stored = jobs[0] && artifactsInsert(jobs[0].id, artifacts, jobs[0].finishedAt!, from());
    if (stored) writes.push(stored);
    const deliveries = deliveriesInsert(jobs, from());
    if (deliveries) writes.push(deliveries);
    if (writes.length === 0) return;
    if (writes.length === 1) await tx.unsafe(writes[0]!.sql, writes[0]!.params);
    else
      await tx.unsafe(
        `WITH ${writes.map((write, i) => `w${i} AS (${write.sql})`).join(", ")} SELECT 1`,
        writes.flatMap((write) => write.params),
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
