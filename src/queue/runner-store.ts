import type { ArtifactInput } from "./artifacts";
import type { JobRow } from "./job-row";
import type { JobState } from "./job-states";
import type { MaybePromise } from "./maybe-promise";
import type { ModelCosts } from "./model-costs";
import type { ClaimPolicy, JobUsage } from "./store";

/**
 * Everything a job runner does to the database, and nothing else: claim, the job's state changes up to
 * its end, re-queue, crash recovery and pruning. JobStore (SQLite) is today's one implementation; a
 * store shared by several foreman nodes implements this and leaves the runner as it is. Each method is
 * one transaction, and a job's end (finishJob, failJob, cancelJob) writes everything that goes with it
 * (artifacts, and the end hooks' rows: webhook delivery, batch line) in that same transaction.
 *
 * Each answer is the value (JobStore: bun:sqlite is synchronous) or a Promise of it (a store on a
 * server, PostgreSQL): the runner awaits only what is a Promise (maybe-promise.ts), so on SQLite its
 * path from one job's end to the next job's send takes no extra turn. With an async store the runner
 * serializes its group's claims (one claim in flight per worker thread) and publishes a claimed job as
 * its answer lands, so placement and the per-target key rule read what they read with a sync store.
 */
export interface RunnerStore {
  /** Crash recovery before the first claim: jobs a dead process left running are re-queued, failed or canceled. */
  recoverInterruptedJobs(): MaybePromise<{ requeued: JobRow[]; failed: JobRow[]; canceled: JobRow[] }>;
  /** Picks and marks the next job (state loading, attempts + 1) by the policy; null when none is runnable. */
  claimNextJob(policy: ClaimPolicy): MaybePromise<JobRow | null>;
  /** loading → working: the first chunk arrived. */
  markWorking(id: string): MaybePromise<JobRow | null>;
  /** Ends the job done with its result, usage and artifacts; null if it had already ended. */
  finishJob(id: string, result: string, artifacts: readonly ArtifactInput[], usage?: JobUsage): MaybePromise<JobRow | null>;
  /** Ends the job failed with the upstream status (or null); null if it had already ended. */
  failJob(id: string, error: string, status: number | null, artifacts?: readonly ArtifactInput[]): MaybePromise<JobRow | null>;
  /** Ends the job canceled (a client that hung up before it was sent); null if it had already ended. */
  cancelJob(id: string, reason: { error: string; status: number }): MaybePromise<JobRow | null>;
  /** Puts a running job back in the queue to run after `runAfter`; `refundAttempt` undoes the claim's count. */
  requeueJob(
    id: string,
    runAfter: number,
    error: string | null,
    status: number | null,
    refundAttempt?: boolean,
  ): MaybePromise<JobRow | null>;
  /** The job's state alone (null: no such job): the last look before a job claimed ahead is sent. */
  jobState(id: string): MaybePromise<JobState | null>;
  /** The earliest run_after among queued jobs (when to look again), or null when none is queued. */
  nextRunAfter(): MaybePromise<number | null>;
  /** Deletes jobs that ended before `before` (with what is theirs); how many. */
  pruneFinishedJobs(before: number): MaybePromise<number>;
  /**
   * Placement with several targets (worker/placement.ts): what each model has cost, per target and
   * overall. Synchronous: placement reads it inside a claim (claimNextJob's policy), so an async store
   * answers it from the snapshot its claim read, as it answers the claim rules (claim-view.ts).
   */
  readonly costs: Pick<ModelCosts, "all" | "forTarget">;
  /**
   * Placement: how many jobs of the key wait (another target's remaining work). Synchronous for the
   * same reason as `costs`: an async store answers it from its claim's snapshot.
   */
  queuedOfKey(modelKey: string): number;
}
