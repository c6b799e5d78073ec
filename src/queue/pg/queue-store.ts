import type { SQL } from "bun";
import type { JobRow } from "../job-row";
import type { JobState } from "../job-states";
import type { QueueStore } from "../queue-store";
import type { NewJob } from "../store";
import type { PgJobStore } from "./job-store";
import { PgQueueReads } from "./queue-reads";

/**
 * The HTTP side's queue on PostgreSQL (QueueStore): the reads of PgQueueReads, and the lookups by id, writes,
 * costs and artifacts of PgJobStore, whose statements notify the other nodes. An API client's cancel carries no fence:
 * it ends the job wherever it runs, and the node running it hears the end and aborts its call.
 */
export class PgQueueStore extends PgQueueReads implements QueueStore {
  readonly costs: PgJobStore["costs"];
  readonly artifacts: PgJobStore["artifacts"];

  constructor(
    sql: SQL,
    readonly jobs: PgJobStore,
  ) {
    super(sql);
    this.costs = jobs.costs;
    this.artifacts = jobs.artifacts;
  }

  enqueueMany(jobs: readonly NewJob[], maxQueue: number): Promise<Array<{ job: JobRow; created: boolean } | Error>> {
    return this.jobs.enqueueMany(jobs, maxQueue);
  }

  cancelJob(id: string, reason: { error: string; status: number }): Promise<JobRow | null> {
    return this.jobs.cancelJob(id, reason);
  }

  cancelJobs(ids: readonly string[], reason: { error: string; status: number }): Promise<JobRow[]> {
    return this.jobs.cancelJobs(ids, reason);
  }

  getJob(id: string): Promise<JobRow | null> {
    return this.jobs.getJob(id);
  }

  getJobHead(id: string): Promise<JobRow | null> {
    return this.jobs.getJobHead(id);
  }

  jobState(id: string): Promise<JobState | null> {
    return this.jobs.jobState(id);
  }
}
