import type { SQL } from "bun";
import type { JobRow } from "../job-row";
import type { QueueStore } from "../queue-store";
import type { JobFilter, QueueGroup } from "../store";
import { HEAD_COLUMNS, JOB_COLUMNS } from "./job-store";

/** The reads of QueueStore this class answers: the job API's lists and lookups, and the queue's shape for positions. */
type QueueReads = Pick<
  QueueStore,
  | "listJobs"
  | "listJobPage"
  | "queuePosition"
  | "rankInGroup"
  | "overdueRank"
  | "overdueAheadInGroup"
  | "queuedCount"
  | "queuedCountByModel"
  | "runningJob"
  | "runningJobs"
  | "queueGroups"
>;

/** listJobs' WHERE clause for a filter, its values as $1, $2, … in `params` (which a caller may go on filling). */
function filterSql(filter: JobFilter): { where: string; params: (string | number)[] } {
  const conditions: string[] = [];
  const params: (string | number)[] = [];
  const add = (condition: string, value: string) => conditions.push(`${condition} $${params.push(value)}`);
  if (filter.state) add("state =", filter.state);
  if (filter.model) add("model =", filter.model);
  if (filter.type) add("type =", filter.type);
  if (filter.keyId !== undefined) add("key_id =", filter.keyId);
  if (filter.cursor) add("id <", filter.cursor);
  return { where: conditions.length > 0 ? `WHERE ${conditions.join(" AND ")}` : "", params };
}

/** JOB_COLUMNS with the bodies a list did not ask for as JobStore.listJobs gives them: request "{}", result null. */
function listColumns(withBodies: JobFilter["withBodies"]): string {
  let columns = JOB_COLUMNS;
  if (withBodies && !withBodies.request) columns = columns.replace(", request,", ", '{}' AS request,");
  if (withBodies && !withBodies.result) columns = columns.replace(", result,", ", NULL::text AS result,");
  return columns;
}

/**
 * A cutoff for `created_at < cutoff` as a bigint: created_at is a whole number of ms, so `< x` and `< ceil(x)`
 * select the same rows, and a bigint bound (not a float8 one, which casts the column) is an index range.
 */
const cutoffMs = (ms: number) => Math.ceil(ms);

/**
 * The low ends of the range counts over a queued group's index entries, a seek each: its oldest job by id,
 * and its oldest the guard may promote (not a batch line) by created_at. They change no count; they are
 * there for the planner, which places a queued job's id or time in the statistics of the whole table (as if
 * state and age were unrelated), so expects most of the group's jobs before any queued one and would read
 * jobs_queued_run_after whole instead of the range. A range with an end it cannot know it estimates small,
 * and seeks the index.
 */
const FROM_OLDEST = (priority: string, modelKey: string) =>
  `id >= (SELECT id FROM jobs WHERE state = 'queued' AND priority = ${priority} AND model_key = ${modelKey} ORDER BY id LIMIT 1)`;
const FROM_OLDEST_GUARDED = (priority: string, modelKey: string) =>
  `created_at >= (SELECT created_at FROM jobs WHERE state = 'queued' AND source <> 'batch' AND priority = ${priority}
     AND model_key = ${modelKey} ORDER BY created_at LIMIT 1)`;

/**
 * The queue's reads for the HTTP side on PostgreSQL, each JobStore's method of the same name (src/queue/store.ts)
 * with its answers, async: the job API's lookups and lists, and what positions and start estimates read of the
 * queue's shape. Each is one statement. The counts come from queued_counts (its rows left at 0 skipped) and range
 * counts over the partial indexes on queued jobs (migrations/001_queue.sql), so they follow the model keys and the
 * jobs ahead of the one asked about, never the finished jobs the table keeps until pruning.
 */
export class PgQueueReads implements QueueReads {
  readonly #sql: SQL;

  constructor(sql: SQL) {
    this.#sql = sql;
  }

  /** Jobs newest first (by id), `limit` of them after `cursor`; the bodies `withBodies` leaves out as "{}" and null. */
  async listJobs(filter: JobFilter): Promise<JobRow[]> {
    const { where, params } = filterSql(filter);
    const limit = params.push(filter.limit);
    const rows = await this.#sql.unsafe(
      `SELECT ${listColumns(filter.withBodies)} FROM jobs ${where} ORDER BY id DESC LIMIT $${limit}::int`,
      params,
    );
    return [...rows];
  }

  /**
   * A page of {@link listJobs} with the bodies `filter.withBodies` asks for, holding at most `budgetBytes` of
   * them: the page ends before the job that would pass it (its first job comes whatever its size), and `more`
   * says a next page follows. One statement: the `limit + 1` heads with their bodies' sizes (octet_length reads
   * a stored value's length from its header, loading no body) and running total, then the bodies of the jobs
   * kept alone, joined to one row so that a page keeping none (a row of nulls) still answers `more`.
   */
  async listJobPage(
    filter: JobFilter & { withBodies: { request: boolean; result: boolean } },
    budgetBytes: number,
  ): Promise<{ rows: JobRow[]; more: boolean }> {
    const { where, params } = filterSql(filter);
    const limit = params.push(filter.limit);
    const budget = params.push(budgetBytes);
    const { request, result } = filter.withBodies;
    const bytes = `${request ? "octet_length(request)" : "0"} + ${result ? "coalesce(octet_length(result), 0)" : "0"}`;
    const rows = await this.#sql.unsafe(
      `WITH heads AS (
         SELECT id AS head, row_number() OVER w AS rn, sum(bytes) OVER w AS total
         FROM (SELECT id, ${bytes} AS bytes FROM jobs ${where} ORDER BY id DESC LIMIT $${limit}::int + 1) h
         WINDOW w AS (ORDER BY id DESC)
       ),
       kept AS (SELECT head, rn FROM heads WHERE rn <= $${limit}::int AND (rn = 1 OR total <= $${budget}::float8))
       SELECT (SELECT count(*) FROM heads) > (SELECT count(*) FROM kept) AS more, ${listColumns(filter.withBodies)}
       FROM (SELECT 1) one LEFT JOIN (kept JOIN jobs ON jobs.id = kept.head) ON true
       ORDER BY kept.rn`,
      params,
    );
    const jobs: JobRow[] = [];
    for (const { more: _more, ...job } of rows) if (job.id !== null) jobs.push(job as JobRow);
    return { rows: jobs, more: rows[0].more };
  }

  /**
   * The job's place by priority and age alone (fifo's order), 1 first; null when the job is not queued. The
   * higher priorities from queued_counts; the older jobs of its priority as one range count per model key
   * queued there (jobs_queued_by_model), so it reads the index entries ahead of the job, not the rest.
   * (SQLite counts whole 32 ms slots from queued_slots instead; PostgreSQL has no such table.)
   */
  async queuePosition(job: JobRow): Promise<number | null> {
    if (job.state !== "queued") return null;
    const [row] = await this.#sql.unsafe(
      `SELECT ((SELECT coalesce(sum(n), 0) FROM queued_counts WHERE n > 0 AND priority > $1)
         + (SELECT coalesce(sum(ahead.n), 0)
            FROM (SELECT DISTINCT model_key FROM queued_counts WHERE n > 0 AND priority = $1) k
            CROSS JOIN LATERAL (SELECT count(*) AS n FROM jobs
              WHERE state = 'queued' AND priority = $1 AND model_key = k.model_key AND ${FROM_OLDEST("$1", "k.model_key")}
                AND id < $2) ahead)
         + 1)::float8 AS position`,
      [job.priority, job.id],
    );
    return row.position;
  }

  /**
   * The job's place, 0 first, among the queued jobs of its model key and priority, in the claim's order there
   * (by id): the group's size less one for its newest job (one seek), else a range count over
   * jobs_queued_by_model of the jobs ahead. `groupSize` is the group's queued count the caller's plan read.
   */
  async rankInGroup(job: JobRow, groupSize: number): Promise<number> {
    // The job just queued (what POST /jobs shows) is its group's newest: one seek says so, and its rank is the
    // group's size less one, however deep the group (the count below reads every job ahead, heap pages too
    // until a vacuum marks them visible: 7 ms at 3,000 queued).
    const [row] = await this.#sql.unsafe(
      `SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM jobs WHERE state = 'queued' AND priority = $1 AND model_key = $2 AND id > $3)
         THEN $4::float8 - 1
         ELSE (SELECT count(*)::float8 FROM jobs
           WHERE state = 'queued' AND priority = $1 AND model_key = $2 AND ${FROM_OLDEST("$1", "$2")} AND id < $3) END AS n`,
      [job.priority, job.modelKey, job.id, groupSize],
    );
    return row.n;
  }

  /**
   * An overdue job's place, 0 first, among the starvation guard's jobs of its priority (queued, not batch
   * lines), in the claim's order for them: created_at, then id, across model keys. One range count per model
   * key with such jobs at the priority, over jobs_queued_overdue: the entries ahead of the job alone.
   */
  async overdueRank(job: JobRow): Promise<number> {
    const [row] = await this.#sql.unsafe(
      `SELECT coalesce(sum(ahead.n), 0)::float8 AS n
       FROM (SELECT DISTINCT model_key FROM queued_counts WHERE n > 0 AND priority = $1 AND batch = 0) k
       CROSS JOIN LATERAL (SELECT count(*) AS n FROM jobs
         WHERE state = 'queued' AND source <> 'batch' AND priority = $1 AND model_key = k.model_key
           AND ${FROM_OLDEST_GUARDED("$1", "k.model_key")} AND created_at <= $2::bigint AND (created_at, id) < ($2::bigint, $3)) ahead`,
      [job.priority, job.createdAt, job.id],
    );
    return row.n;
  }

  /**
   * How many of the job's group's overdue jobs (created before `overdueBefore`, not batch lines) are ahead of
   * it by id: none when the group has none, all of them for a job created since the cutoff (no round trip for
   * either); counted over jobs_queued_overdue for an old batch line (never promoted, but as old as they are).
   */
  async overdueAheadInGroup(job: JobRow, overdueBefore: number, groupOverdue: number): Promise<number> {
    if (groupOverdue === 0) return 0;
    if (job.createdAt >= overdueBefore) return groupOverdue;
    const [row] = await this.#sql.unsafe(
      `SELECT count(*)::float8 AS n FROM jobs
       WHERE state = 'queued' AND source <> 'batch' AND priority = $1 AND model_key = $2 AND ${FROM_OLDEST_GUARDED("$1", "$2")}
         AND created_at < $3::bigint AND id < $4`,
      [job.priority, job.modelKey, cutoffMs(overdueBefore), job.id],
    );
    return row.n;
  }

  /** Queued jobs, batch lines included (as JobStore's; the FOREMAN_MAX_QUEUE check leaves them out itself): queued_counts. */
  async queuedCount(): Promise<number> {
    const [row] = await this.#sql`SELECT coalesce(sum(n), 0)::float8 AS n FROM queued_counts WHERE n > 0`;
    return row.n;
  }

  /** Queued jobs per model as clients named it, by model in byte order (SQLite's): queued_counts. */
  async queuedCountByModel(): Promise<{ model: string; n: number }[]> {
    // queued_counts.model has the database's collation; COLLATE "C" orders as SQLite does whatever the locale.
    const rows = await this.#sql`SELECT model, sum(n)::float8 AS n FROM queued_counts WHERE n > 0
      GROUP BY model ORDER BY model COLLATE "C"`;
    return [...rows];
  }

  /** The oldest-started running job (one target, one slot: the one), or null: jobs_running_by_target's few rows. */
  async runningJob(): Promise<JobRow | null> {
    const [row] = await this.#sql.unsafe(
      `SELECT ${HEAD_COLUMNS} FROM jobs WHERE state IN ('loading', 'working') ORDER BY started_at, id LIMIT 1`,
    );
    return row ?? null;
  }

  /** Every running job (several targets, several slots), oldest start first (then by id, where SQLite leaves ties be). */
  async runningJobs(): Promise<JobRow[]> {
    const rows = await this.#sql.unsafe(
      `SELECT ${HEAD_COLUMNS} FROM jobs WHERE state IN ('loading', 'working') ORDER BY started_at, id`,
    );
    return [...rows];
  }

  /**
   * Queued jobs per (model key, priority), highest priority first then by model key, with each group's oldest
   * and newest by id: per group of queued_counts, two seeks of jobs_queued_by_model. Given `overdueBefore`
   * (now - FOREMAN_MAX_WAIT), each group also carries its jobs the starvation guard promotes (created before it,
   * not batch lines) with their oldest and newest creation times: a range over jobs_queued_overdue, its
   * overdue jobs alone. Without it, none (0 and nulls): `created_at < NULL` selects nothing.
   *
   * SQLite counts a group without batch lines by id instead (a ULID starts with its creation time), the same
   * jobs while ids are made at created_at; this counts by created_at, the time the guard itself compares.
   */
  async queueGroups(overdueBefore?: number): Promise<QueueGroup[]> {
    const rows = await this.#sql.unsafe(
      `SELECT g.model_key AS "modelKey", g.priority, g.queued, oldest.id AS "oldestId",
         oldest.created_at::float8 AS "oldestCreatedAt", newest.created_at::float8 AS "newestCreatedAt",
         late.n AS overdue, late.first AS "overdueOldestAt", late.last AS "overdueNewestAt"
       FROM (SELECT priority, model_key, sum(n)::float8 AS queued FROM queued_counts WHERE n > 0 GROUP BY priority, model_key) g
       CROSS JOIN LATERAL (SELECT id, created_at FROM jobs
         WHERE state = 'queued' AND priority = g.priority AND model_key = g.model_key ORDER BY id LIMIT 1) oldest
       CROSS JOIN LATERAL (SELECT created_at FROM jobs
         WHERE state = 'queued' AND priority = g.priority AND model_key = g.model_key ORDER BY id DESC LIMIT 1) newest
       CROSS JOIN LATERAL (SELECT count(*)::float8 AS n, min(created_at)::float8 AS first, max(created_at)::float8 AS last
         FROM jobs WHERE state = 'queued' AND source <> 'batch' AND priority = g.priority AND model_key = g.model_key
           AND ${FROM_OLDEST_GUARDED("g.priority", "g.model_key")} AND created_at < $1::bigint) late
       ORDER BY g.priority DESC, g.model_key`,
      [overdueBefore === undefined ? null : cutoffMs(overdueBefore)],
    );
    return [...rows];
  }
}
