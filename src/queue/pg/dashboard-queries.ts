import type { SQL } from "bun";
import type { DashboardReads, SnapshotLimits } from "../../dashboard/snapshot";
import { hourWindow, timelineSince } from "../../dashboard/snapshot";
import { type Principal, ownerFilter } from "../../keys/principal";
import { type KeyDayRow, utcDay } from "../../keys/usage";
import type { EndedJobRow, HourBucketRow, QueuedJobRow, TimelineRow } from "../dashboard-queries";
import type { JobRow } from "../job-row";
import type { MaybePromise } from "../maybe-promise";
import type { QueuePlan } from "../start-estimate";
import type { QueueGroup } from "../store";
import type { PgQueueReads } from "./queue-reads";

const QUEUED_COLUMNS = `id, state, model, model_key AS "modelKey", type, source, priority, created_at::float8 AS "createdAt",
  run_after::float8 AS "runAfter", key_id AS "keyId"`;
const ENDED_COLUMNS = `id, model, model_key AS "modelKey", type, source, state, priority, error, created_at::float8 AS "createdAt",
  started_at::float8 AS "startedAt", finished_at::float8 AS "finishedAt", swapped, output_tokens AS "outputTokens",
  eval_ms AS "evalMs", key_id AS "keyId"`;
/**
 * SQLite's PROMPT_HEAD_SQL (src/dashboard/preview.ts) here: the first path present as JSON text, its first
 * 1,000 characters. `json`, not `jsonb`: the value's own text, its keys in the order the client sent them.
 */
const PROMPT_HEAD = `substr(coalesce(request::json -> 'prompt', request::json -> 'input',
  request::json -> 'messages' -> -1 -> 'content')::text, 1, 1000)`;

/**
 * The dashboard's queries on PostgreSQL (SQLite's DashboardQueries, the same rows), and the one way a snapshot
 * reads them: {@link prefetch} fetches everything a snapshot for one viewer reads, in three rounds of parallel
 * queries (what the queue holds; each model's first jobs; their prompts' heads), and answers the builder from
 * that, so the builder stays the one synchronous pass SQLite's dashboard makes.
 */
export class PgDashboardQueries {
  readonly #sql: SQL;
  readonly #store: Pick<PgQueueReads, "runningJob" | "runningJobs" | "queueGroups">;

  constructor(sql: SQL, store: Pick<PgQueueReads, "runningJob" | "runningJobs" | "queueGroups">) {
    this.#sql = sql;
    this.#store = store;
  }

  /** One model key's first `limit` queued jobs in claim order over its priorities (highest first): SQLite's queuedJobs. */
  async queuedJobs(modelKey: string, priorities: readonly number[], limit: number, keyId?: string): Promise<QueuedJobRow[]> {
    const rows: QueuedJobRow[] = await this.#sql.unsafe(
      `SELECT ${QUEUED_COLUMNS} FROM jobs WHERE state = 'queued' AND model_key = $1 AND priority = ANY($2::int[])
         AND ($4::text IS NULL OR key_id = $4) ORDER BY priority DESC, id LIMIT $3::int`,
      [modelKey, [...priorities], limit, keyId ?? null],
    );
    return [...rows];
  }

  async recentJobs(limit: number, keyId?: string): Promise<EndedJobRow[]> {
    const rows: EndedJobRow[] = await this.#sql.unsafe(
      keyId === undefined
        ? `SELECT ${ENDED_COLUMNS} FROM jobs WHERE finished_at IS NOT NULL ORDER BY finished_at DESC LIMIT $1::int`
        : `SELECT ${ENDED_COLUMNS} FROM jobs WHERE key_id = $2 AND finished_at IS NOT NULL ORDER BY finished_at DESC LIMIT $1::int`,
      keyId === undefined ? [limit] : [limit, keyId],
    );
    return [...rows];
  }

  async ranSince(since: number, limit: number): Promise<TimelineRow[]> {
    const rows: TimelineRow[] = await this.#sql.unsafe(
      `SELECT id, model_key AS "modelKey", type, state, started_at::float8 AS "startedAt", finished_at::float8 AS "finishedAt",
         swapped, load_ms AS "loadMs", key_id AS "keyId"
       FROM jobs WHERE finished_at >= $1::bigint AND started_at IS NOT NULL ORDER BY finished_at DESC LIMIT $2::int`,
      [since, limit],
    );
    return [...rows];
  }

  async endedPerBucket(since: number, bucketMs: number): Promise<HourBucketRow[]> {
    const rows: HourBucketRow[] = await this.#sql.unsafe(
      `SELECT ((finished_at - $1::bigint) / $2::bigint)::int AS bucket, count(*) FILTER (WHERE state = 'done')::int AS done,
         count(*) FILTER (WHERE swapped = 1)::int AS swaps
       FROM jobs WHERE finished_at >= $1::bigint GROUP BY 1`,
      [since, bucketMs],
    );
    return [...rows];
  }

  /** The heads of the prompts of `ids` (see PROMPT_HEAD), by id. */
  async promptHeads(ids: readonly string[]): Promise<Map<string, string | null>> {
    if (ids.length === 0) return new Map();
    const rows: Array<{ id: string; head: string | null }> = await this.#sql.unsafe(
      `SELECT id, ${PROMPT_HEAD} AS head FROM jobs WHERE id = ANY($1::text[])`,
      [[...ids]],
    );
    return new Map(rows.map((row) => [row.id, row.head]));
  }

  /** SQLite's KeyUsage.board: each key's day (a revoked one while it used the GPU today or still has jobs waiting). */
  async keyBoard(now: number, keyId?: string): Promise<KeyDayRow[]> {
    const rows: KeyDayRow[] = await this.#sql.unsafe(
      `SELECT "keyId", name, "promptTokens", "outputTokens", jobs, "gpuMs", waiting FROM (
         SELECT k.id AS "keyId", k.name, k.revoked_at AS "revokedAt",
           coalesce(u.prompt_tokens, 0)::float8 AS "promptTokens", coalesce(u.output_tokens, 0)::float8 AS "outputTokens",
           coalesce(u.jobs, 0) AS jobs, coalesce(u.gpu_ms, 0)::float8 AS "gpuMs",
           (SELECT count(*) FROM jobs j WHERE j.key_id = k.id AND j.state IN ('queued', 'loading', 'working'))::int AS waiting,
           u.key_id IS NOT NULL AS used
         FROM keys k LEFT JOIN key_usage u ON u.key_id = k.id AND u.day = $1
         WHERE $2::text IS NULL OR k.id = $2) board
       WHERE "revokedAt" IS NULL OR used OR waiting > 0
       ORDER BY name COLLATE "C"`,
      [utcDay(now), keyId ?? null],
    );
    return [...rows];
  }

  /** Everything a snapshot for `viewer` at `now` reads, fetched: the builder's reads for that one build. */
  async prefetch(
    now: number,
    viewer: Principal,
    limits: SnapshotLimits,
    plan: () => MaybePromise<QueuePlan>,
  ): Promise<DashboardReads> {
    const own = ownerFilter(viewer);
    const hour = hourWindow(now);
    const [running, groups, recent, ran, hourRows, minuteRows, board, queuePlan] = await Promise.all([
      this.#store.runningJobs(),
      this.#store.queueGroups(),
      this.recentJobs(limits.recent, own),
      this.ranSince(timelineSince(now), limits.timeline),
      this.endedPerBucket(hour.since, hour.bucketMs),
      this.endedPerBucket(hour.current, hour.bucketMs),
      own === "" ? Promise.resolve([]) : this.keyBoard(now, own),
      plan(),
    ]);
    // Each model key's priorities, highest first (the store lists the groups so), as the builder asks for them.
    const priorities = new Map<string, number[]>();
    for (const group of groups) priorities.set(group.modelKey, [...(priorities.get(group.modelKey) ?? []), group.priority]);
    const queued = new Map<string, QueuedJobRow[]>();
    await Promise.all(
      [...priorities].map(async ([modelKey, levels]) =>
        queued.set(modelKey, await this.queuedJobs(modelKey, levels, limits.perGroup, own)),
      ),
    );
    const heads = await this.promptHeads([...running.map((job) => job.id), ...[...queued.values()].flat().map((job) => job.id)]);
    return fetchedReads({ running, groups, queued, recent, ran, hourRows, minuteRows, board, heads, plan: queuePlan, hour });
  }
}

/** The builder's reads over what {@link PgDashboardQueries.prefetch} fetched. */
function fetchedReads(fetched: {
  running: JobRow[];
  groups: QueueGroup[];
  queued: Map<string, QueuedJobRow[]>;
  recent: EndedJobRow[];
  ran: TimelineRow[];
  hourRows: HourBucketRow[];
  minuteRows: HourBucketRow[];
  board: KeyDayRow[];
  heads: Map<string, string | null>;
  plan: QueuePlan;
  hour: { since: number; current: number };
}): DashboardReads {
  return {
    // Oldest start first: the running job is the first of them (PgQueueReads.runningJob's order).
    runningJob: () => fetched.running[0] ?? null,
    runningJobs: () => fetched.running,
    queueGroups: () => fetched.groups,
    queuedJobs: (modelKey, _priorities, limit) => (fetched.queued.get(modelKey) ?? []).slice(0, limit),
    recentJobs: (limit) => fetched.recent.slice(0, limit),
    ranSince: (_since, limit) => fetched.ran.slice(0, limit),
    promptHead: (id) => fetched.heads.get(id) ?? null,
    endedPerBucket: (since) => (since === fetched.hour.current ? fetched.minuteRows : fetched.hourRows),
    keyBoard: () => fetched.board,
    plan: () => fetched.plan,
  };
}
