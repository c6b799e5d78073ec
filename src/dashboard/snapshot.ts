import type { ModelInventory } from "../ollama/inventory";
import type { JobStore } from "../queue/store";
import { jobTimes, tokensPerSecond } from "../queue/job-view";
import type { DashboardSnapshot, HourChart, QueueGroup, RunningJob } from "./types";

/** How much a snapshot lists: jobs shown per model group, ended jobs shown. */
export interface SnapshotLimits {
  /** Queued jobs listed per model, default 20; the rest are counted. */
  perGroup: number;
  /** Ended jobs listed, default 20. */
  recent: number;
}

export const DEFAULT_LIMITS: SnapshotLimits = { perGroup: 20, recent: 20 };

const MINUTE_MS = 60_000;
const HOUR_BUCKETS = 60;

/** The running job's live counts, kept by the feed from the job's streamed records. */
export interface LiveCount {
  tokens: number;
  tokensPerS: number | null;
}

/**
 * Builds the dashboard's snapshot from the database and the inventory, without `now` (the feed adds
 * it), so two snapshots of an unchanged queue are equal. Bounded: a fixed number of queries, each
 * with a LIMIT or an aggregate, one per model with queued jobs.
 */
export function buildSnapshot(
  store: JobStore,
  inventory: ModelInventory,
  live: (jobId: string) => LiveCount,
  limits: SnapshotLimits = DEFAULT_LIMITS,
  now = Date.now(),
): Omit<DashboardSnapshot, "now"> {
  const { snapshot } = inventory;
  const row = store.runningJob();
  const running: RunningJob | null = row && {
    id: row.id,
    model: row.model,
    state: row.state === "working" ? "working" : "loading",
    source: row.source,
    priority: row.priority,
    createdAt: row.createdAt,
    startedAt: row.startedAt,
    swapped: row.swapped === null ? null : row.swapped === 1,
    ...live(row.id),
  };

  const groups = store.dashboard
    .queueGroups()
    .sort(
      (a, b) =>
        Number(b.model === running?.model) - Number(a.model === running?.model) ||
        b.top - a.top ||
        (a.oldest < b.oldest ? -1 : 1),
    )
    .map((group): QueueGroup => {
      const jobs = store.dashboard.queuedJobs(group.model, limits.perGroup).map((job) => ({
        id: job.id,
        type: job.type,
        source: job.source,
        priority: job.priority,
        createdAt: job.createdAt,
      }));
      return { model: group.model, count: group.n, jobs, more: group.n - jobs.length };
    });

  const recent = store.dashboard.recentJobs(limits.recent).map((job) => {
    const { waitMs, runMs } = jobTimes(job, now);
    return {
      id: job.id,
      model: job.model,
      source: job.source,
      state: job.state,
      error: job.error,
      finishedAt: job.finishedAt!,
      waitMs,
      runMs,
      outputTokens: job.outputTokens,
      tokensPerS: tokensPerSecond(job, runMs),
    };
  });

  return {
    ollama: {
      reachable: !snapshot.degraded && snapshot.updatedAt > 0,
      resident: snapshot.running.map((model) => model.name),
    },
    running,
    queue: { total: groups.reduce((sum, group) => sum + group.count, 0), groups },
    recent,
    hour: hourChart(store, now),
  };
}

/** The last hour in whole minutes (the current one last), so the chart only moves once a minute. */
function hourChart(store: JobStore, now: number): HourChart {
  const since = (Math.floor(now / MINUTE_MS) - (HOUR_BUCKETS - 1)) * MINUTE_MS;
  const done = new Array<number>(HOUR_BUCKETS).fill(0);
  const swaps = new Array<number>(HOUR_BUCKETS).fill(0);
  for (const row of store.dashboard.endedPerBucket(since, MINUTE_MS)) {
    if (row.bucket < 0 || row.bucket >= HOUR_BUCKETS) continue;
    done[row.bucket] = row.done;
    swaps[row.bucket] = row.swaps;
  }
  return { since, bucketMs: MINUTE_MS, done, swaps };
}
