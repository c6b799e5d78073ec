import type { Logger } from "./log";
import type { ForemanMetrics } from "./metrics";
import { jobStats } from "./queue/job-view";
import { type MaybePromise, isPromise } from "./queue/maybe-promise";
import type { QueueStore } from "./queue/queue-store";
import type { JobRow } from "./queue/store";

/**
 * What happens once per job end, whichever thread ended it (the worker's outcome or a cancel here): the
 * row is read once, counted in the metrics and logged as one `job ended` line at info. The line carries
 * figures only, never the prompt, the answer or a webhook secret.
 *
 * Either engine's store: on SQLite the row is read and reported at once (the reporter returns nothing); on
 * PostgreSQL it is reported when its read answers, and the reporter returns that Promise, which never
 * rejects (a read that fails is logged at warn, that end left uncounted), so a caller may drop it. With
 * several nodes each reports the ends it made: see ForemanMetrics for what the counters then mean.
 */
export function jobEndReporter(
  store: Pick<QueueStore, "getJobHead">,
  metrics: ForemanMetrics,
  log: Logger,
  keyName: (keyId: string) => string | null = () => null,
): (jobId: string) => MaybePromise<void> {
  const report = (job: JobRow | null) => {
    if (!job) return;
    const now = Date.now();
    metrics.jobEnded(job, now);
    logJobEnd(log, job, keyName, now);
  };
  return (jobId) => {
    // The head: figures only, never a result of megabytes read back per end.
    const job = store.getJobHead(jobId);
    if (!isPromise(job)) return report(job);
    return job.then(report).catch((error: unknown) => log.warn("job end not reported", { job: jobId, error }));
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
