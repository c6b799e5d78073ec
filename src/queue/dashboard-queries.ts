import type { Database } from "bun:sqlite";
import { PROMPT_HEAD_SQL } from "../dashboard/preview";
import type { JobRow } from "./job-row";

/** A queued job as the dashboard lists it (what its expected start needs, too). */
export type QueuedJobRow = Pick<
  JobRow,
  "id" | "state" | "model" | "modelKey" | "type" | "source" | "priority" | "createdAt" | "runAfter"
>;

/** A job's time on the GPU, for the timeline. */
export type TimelineRow = Pick<JobRow, "id" | "modelKey" | "type" | "state" | "swapped" | "loadMs"> & {
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
  readonly #recentStmt;
  readonly #bucketsStmt;
  readonly #timelineStmt;
  readonly #promptHeadStmt;

  constructor(db: Database) {
    // One priority level of one model in claim order: a seek into jobs_by_model (state, priority, model_key, id).
    this.#groupJobsStmt = db.query<QueuedJobRow, [number, string, number]>(
      `SELECT id, state, model, model_key AS modelKey, type, source, priority, created_at AS createdAt, run_after AS runAfter
       FROM jobs WHERE state = 'queued' AND priority = ? AND model_key = ? ORDER BY id LIMIT ?`,
    );
    this.#recentStmt = db.query<EndedJobRow, [number]>(
      `SELECT id, model, model_key AS modelKey, type, source, state, priority, error, created_at AS createdAt, started_at AS startedAt,
         finished_at AS finishedAt, swapped, output_tokens AS outputTokens, eval_ms AS evalMs
       FROM jobs WHERE finished_at IS NOT NULL ORDER BY finished_at DESC LIMIT ?`,
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
         load_ms AS loadMs
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
  queuedJobs(modelKey: string, priorities: readonly number[], limit: number): QueuedJobRow[] {
    const jobs: QueuedJobRow[] = [];
    for (const p of priorities) {
      if (jobs.length >= limit) break;
      jobs.push(...this.#groupJobsStmt.all(p, modelKey, limit - jobs.length));
    }
    return jobs;
  }

  /** The `limit` jobs that ended last, newest first. */
  recentJobs(limit: number): EndedJobRow[] {
    return this.#recentStmt.all(limit);
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
