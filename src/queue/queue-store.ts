import type { ArtifactInfo } from "./artifacts";
import type { JobRow } from "./job-row";
import type { JobState } from "./job-states";
import type { MaybePromise } from "./maybe-promise";
import type { ModelCost, TargetCost } from "./model-costs";
import type { JobFilter, NewJob, QueueGroup } from "./store";

/**
 * The queue as the HTTP side reads and changes it: submissions, the job API's reads and cancels, the
 * queue's shape for positions and estimates (start-estimate.ts), the artifacts a finished job's replay
 * reads, and the learned costs the estimates use. JobStore (SQLite) answers each synchronously; a store on
 * a server (PostgreSQL, shared by several foreman nodes) answers with Promises. Callers await only what is
 * a Promise (maybe-promise.ts), so on SQLite nothing takes an extra turn.
 *
 * The runner's side is RunnerStore (runner-store.ts); the two together are everything foreman does to the
 * jobs table.
 */
export interface QueueStore {
  /** Queues jobs in one transaction: each new job (created) or the one its idempotency key names, or the error refusing it. */
  enqueueMany(jobs: readonly NewJob[], maxQueue: number): MaybePromise<Array<{ job: JobRow; created: boolean } | Error>>;
  getJob(id: string): MaybePromise<JobRow | null>;
  /** The job without its request and result ("{}"-less: "" and null), cheap however big the bodies. */
  getJobHead(id: string): MaybePromise<JobRow | null>;
  jobState(id: string): MaybePromise<JobState | null>;
  /** Jobs newest first (by id), `limit` of them after `cursor`. */
  listJobs(filter: JobFilter): MaybePromise<JobRow[]>;
  /** A page of listJobs holding at most `budgetBytes` of bodies (its first job whatever its size); `more`: a next page follows. */
  listJobPage(
    filter: JobFilter & { withBodies: { request: boolean; result: boolean } },
    budgetBytes: number,
  ): MaybePromise<{ rows: JobRow[]; more: boolean }>;
  /** Cancels a queued or running job (an API client's cancel: no fence); null when it no longer can be. */
  cancelJob(id: string, reason: { error: string; status: number }): MaybePromise<JobRow | null>;
  /** cancelJob for many jobs in one transaction: the rows canceled. */
  cancelJobs(ids: readonly string[], reason: { error: string; status: number }): MaybePromise<JobRow[]>;

  /** The job's place by priority and age alone (fifo's order), 1 first; null when it is not queued. */
  queuePosition(job: JobRow): MaybePromise<number | null>;
  /** The job's place, 0 first, among the queued jobs of its model key and priority (by id). */
  rankInGroup(job: JobRow, groupSize: number): MaybePromise<number>;
  /** An overdue job's place, 0 first, among the starvation guard's jobs of its priority (created_at, id). */
  overdueRank(job: JobRow): MaybePromise<number>;
  /** How many of the group's overdue jobs (created before `overdueBefore`, not batch lines) are ahead of the job by id. */
  overdueAheadInGroup(job: JobRow, overdueBefore: number, groupOverdue: number): MaybePromise<number>;
  queuedCount(): MaybePromise<number>;
  queuedCountByModel(): MaybePromise<{ model: string; n: number }[]>;
  /** The oldest-started running job (one target, one slot: the one), or null. */
  runningJob(): MaybePromise<JobRow | null>;
  /** Every running job, oldest start first. */
  runningJobs(): MaybePromise<JobRow[]>;
  /** Queued jobs per (model key, priority), highest priority first; with `overdueBefore`, each group's overdue jobs. */
  queueGroups(overdueBefore?: number): MaybePromise<QueueGroup[]>;

  /** What each model key has cost, overall and on one target (the estimates'). */
  readonly costs: {
    all(): MaybePromise<Map<string, ModelCost>>;
    forTarget(target: string): MaybePromise<Map<string, TargetCost>>;
  };
  /** A finished job's artifacts (its stream's bytes, for a late reader's replay). */
  readonly artifacts: {
    list(jobId: string): MaybePromise<ArtifactInfo[]>;
    get(jobId: string, name: string): MaybePromise<{ contentType: string; data: Uint8Array } | null>;
    /** `length` bytes of the artifact from `offset` (fewer at its end; empty past it); null when it does not exist. */
    slice(jobId: string, name: string, offset: number, length: number): MaybePromise<Uint8Array | null>;
  };
}
