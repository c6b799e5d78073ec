import type { Logger } from "./log";
import type { ForemanMetrics } from "./metrics";
import { jobStats } from "./queue/job-view";
import type { JobRow, JobStore } from "./queue/store";

/**
 * What happens once per job end, whichever thread ended it (the worker's outcome or a cancel here): the
 * row is read once, counted in the metrics and logged as one `job ended` line at info. The line carries
 * figures only, never the prompt, the answer or a webhook secret.
 */
export function jobEndReporter(
  store: Pick<JobStore, "getJobHead">,
  metrics: ForemanMetrics,
  log: Logger,
  keyName: (keyId: string) => string | null = () => null,
): (jobId: string) => void {
  return (jobId) => {
    // The head: figures only, never a result of megabytes read back per end.
    const job = store.getJobHead(jobId);
    if (!job) return;
    const now = Date.now();
    metrics.jobEnded(job, now);
    logJobEnd(log, job, keyName, now);
  };
}

/** The `job ended` line at info: figures only, never the prompt, the answer or a webhook secret. */
export function logJobEnd(log: Logger, job: JobRow, keyName: (keyId: string) => string | null, now = Date.now()): void {
  if (!log.enabled("info")) return;
  log.info("job ended", {
    job: job.id,
    type: job.type,
    model: job.model,
    source: job.source,
    key: job.keyId === null ? undefined : (keyName(job.keyId) ?? undefined),
    outcome: job.state,
    attempts: job.attempts,
    target: job.target ?? undefined,
    ...jobStats(job, now),
    status: job.errorStatus ?? undefined,
    error: job.error ?? undefined,
  });
}
