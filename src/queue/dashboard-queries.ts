import type { Database } from "bun:sqlite";
import { PROMPT_HEAD_SQL } from "../dashboard/preview";
import type { JobRow } from "./job-row";

/** A queued job as the dashboard lists it (what its expected start needs, too). */
export type QueuedJobRow = Pick<
  JobRow,
  "id" | "state" | "model" | "modelKey" | "type" | "source" | "priority" | "createdAt" | "runAfter" | "keyId"
>;

/** A job's time on the GPU, for the timeline. */
export type TimelineRow = Pick<JobRow, "id" | "modelKey" | "type" | "state" | "swapped" | "loadMs" | "keyId"> & {
  startedAt: number;
  finishedAt: number;
};

/** An ended job as the dashboard lists it (no request, no result). */
export type EndedJobRow = Pick<
  JobRow,
  | "id"
  | "model"
  | "modelKey"
  | "type"
  | "source"
  | "state"
  | "priority"
  | "error"
  | "createdAt"
  | "startedAt"
  | "finishedAt"
  | "swapped"
  | "outputTokens"
  | "evalMs"
  | "keyId"
>;

/** Jobs ended in one bucket of time: `bucket` counts buckets from the window's start. */
export interface HourBucketRow {
  bucket: number;
  done: number;
  swaps: number;
}

/**
 * The dashboard's read-only queries, each bounded (LIMIT, or an aggregate over an index range) so a
 * snapshot stays cheap with a large queue or a busy hour.
 */
export class DashboardQueries {
  readonly #groupJobsStmt;
  readonly #groupJobsOfKeyStmt;
  readonly #recentStmt;
  readonly #recentOfKeyStmt;
  readonly #bucketsStmt;
  readonly #timelineStmt;
  readonly #promptHeadStmt;

  constructor(db: Database) {
    // One priority level of one model in claim order: a seek into jobs_by_model (state, priority, model_key, id).
    const queued = `SELECT id, state, model, model_key AS modelKey, type, source, priority, created_at AS createdAt,
       run_after AS runAfter, key_id AS keyId FROM jobs`;
    this.#groupJobsStmt = db.query<QueuedJobRow, [number, string, number]>(
      `${queued} WHERE state = 'queued' AND priority = ? AND model_key = ? ORDER BY id LIMIT ?`,
    );
    // A client key's own jobs of the group: jobs_by_key holds only the key's (its job cap keeps them few).
    this.#groupJobsOfKeyStmt = db.query<QueuedJobRow, [number, string, number, string]>(
      `${queued} WHERE key_id = ?4 AND state = 'queued' AND priority = ?1 AND model_key = ?2 ORDER BY id LIMIT ?3`,
    );
    const ended = `SELECT id, model, model_key AS modelKey, type, source, state, priority, error, created_at AS createdAt,
       started_at AS startedAt, finished_at AS finishedAt, swapped, output_tokens AS outputTokens, eval_ms AS evalMs,
       key_id AS keyId FROM jobs`;
    this.#recentStmt = db.query<EndedJobRow, [number]>(
      `${ended} WHERE finished_at IS NOT NULL ORDER BY finished_at DESC LIMIT ?`,
    );
    this.#recentOfKeyStmt = db.query<EndedJobRow, [number, string]>(
      `${ended} WHERE key_id = ?2 AND finished_at IS NOT NULL ORDER BY finished_at DESC LIMIT ?1`,
    );
    // A range of the jobs_by_finish index; a job whose claim loaded its model counts as one swap.
    this.#bucketsStmt = db.query<HourBucketRow, [number, number]>(
      `SELECT (finished_at - ?1) / ?2 AS bucket, coalesce(sum(state = 'done'), 0) AS done, coalesce(sum(swapped = 1), 0) AS swaps
       FROM jobs WHERE finished_at >= ?1 GROUP BY bucket`,
    );
    // The newest `limit` ends since a time: a backward walk of jobs_by_finish that stops at the limit, so the
    // cost is bounded by the limit whatever the table holds. Jobs canceled before they started never ran.
    this.#timelineStmt = db.query<TimelineRow, [number, number]>(
      `SELECT id, model_key AS modelKey, type, state, started_at AS startedAt, finished_at AS finishedAt, swapped,
         load_ms AS loadMs, key_id AS keyId
       FROM jobs WHERE finished_at >= ? AND started_at IS NOT NULL ORDER BY finished_at DESC LIMIT ?`,
    );
    this.#promptHeadStmt = db.query<{ head: string | null }, [string]>(
      `SELECT ${PROMPT_HEAD_SQL} AS head FROM jobs WHERE id = ?`,
    );
  }

  /**
   * The first `limit` queued jobs of one model key in claim order (priority, then age), over the
   * priorities it holds, highest first: one index seek per priority level.
   */
  queuedJobs(modelKey: string, priorities: readonly number[], limit: number, keyId?: string): QueuedJobRow[] {
    const jobs: QueuedJobRow[] = [];
    for (const p of priorities) {
      if (jobs.length >= limit) break;
      const left = limit - jobs.length;
      jobs.push(
        ...(keyId === undefined
          ? this.#groupJobsStmt.all(p, modelKey, left)
          : this.#groupJobsOfKeyStmt.all(p, modelKey, left, keyId)),
      );
    }
    return jobs;
  }

  /** The `limit` jobs that ended last, newest first; given `keyId`, that key's alone. */
  recentJobs(limit: number, keyId?: string): EndedJobRow[] {
    return keyId === undefined ? this.#recentStmt.all(limit) : this.#recentOfKeyStmt.all(limit, keyId);
  }

  /** Up to `limit` jobs that ran and ended since `since` (epoch ms), the newest first. */
  ranSince(since: number, limit: number): TimelineRow[] {
    return this.#timelineStmt.all(since, limit);
  }

  /** The head of a job's prompt as {@link PROMPT_HEAD_SQL} reads it (the request itself stays in SQLite). */
  promptHead(id: string): string | null {
    return this.#promptHeadStmt.get(id)?.head ?? null;
  }

  /** Jobs done and model swaps per bucket of `bucketMs` since `since` (epoch ms); empty buckets are absent. */
  endedPerBucket(since: number, bucketMs: number): HourBucketRow[] {
    return this.#bucketsStmt.all(since, bucketMs);
  }
}
