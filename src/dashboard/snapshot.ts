import type { ModelInventory } from "../ollama/inventory";
import type { JobStore, QueueGroup as StoreQueueGroup } from "../queue/store";
import { jobTimes, tokensPerSecond } from "../queue/job-view";
import type { DashboardSnapshot, HourChart, QueueGroup, RunningJob } from "./types";

/** How much a snapshot lists. */
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
 * it), so two snapshots of an unchanged queue are equal. Bounded: a fixed number of indexed queries,
 * each with a LIMIT or an aggregate, a few per model with queued jobs; the hour's finished minutes are
 * counted once a minute and only the current minute each time.
 */
export class SnapshotBuilder {
  /** The hour chart's finished minutes, for the window starting at `since`. */
  #hour: { since: number; done: number[]; swaps: number[] } | undefined;

  constructor(
    readonly store: JobStore,
    readonly inventory: ModelInventory,
    readonly limits: SnapshotLimits = DEFAULT_LIMITS,
  ) {}

  build(live: (jobId: string) => LiveCount, now = Date.now()): Omit<DashboardSnapshot, "now"> {
    const { store } = this;
    const { snapshot } = this.inventory;
    const row = store.runningJob();
    const running: RunningJob | null = row && {
      id: row.id,
      model: row.model,
      modelKey: row.modelKey,
      state: row.state === "working" ? "working" : "loading",
      source: row.source,
      priority: row.priority,
      createdAt: row.createdAt,
      startedAt: row.startedAt,
      swapped: row.swapped === null ? null : row.swapped === 1,
      ...live(row.id),
    };

    const groups = byModelKey(store.queueGroups())
      .sort(
        (a, b) =>
          Number(b.modelKey === running?.modelKey) - Number(a.modelKey === running?.modelKey) ||
          b.top - a.top ||
          (a.oldest < b.oldest ? -1 : 1),
      )
      .map((group): QueueGroup => {
        const jobs = store.dashboard.queuedJobs(group.modelKey, group.priorities, this.limits.perGroup).map((job) => ({
          id: job.id,
          model: job.model,
          type: job.type,
          source: job.source,
          priority: job.priority,
          createdAt: job.createdAt,
        }));
        return { model: group.modelKey, count: group.n, jobs, more: group.n - jobs.length };
      });

    const recent = store.dashboard.recentJobs(this.limits.recent).map((job) => {
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
      hour: this.#hourChart(now),
    };
  }

  /** The last hour in whole minutes, the current one last, so the chart's window moves once a minute. */
  #hourChart(now: number): HourChart {
    const current = Math.floor(now / MINUTE_MS) * MINUTE_MS;
    const since = current - (HOUR_BUCKETS - 1) * MINUTE_MS;
    if (this.#hour?.since !== since) {
      // A new minute: count the window's finished minutes once (the current one is counted every time).
      const done = new Array<number>(HOUR_BUCKETS).fill(0);
      const swaps = new Array<number>(HOUR_BUCKETS).fill(0);
      for (const row of this.store.dashboard.endedPerBucket(since, MINUTE_MS)) {
        if (row.bucket < 0 || row.bucket >= HOUR_BUCKETS - 1) continue;
        done[row.bucket] = row.done;
        swaps[row.bucket] = row.swaps;
      }
      this.#hour = { since, done, swaps };
    }
    const thisMinute = this.store.dashboard.endedPerBucket(current, MINUTE_MS).find((row) => row.bucket === 0);
    const done = [...this.#hour.done];
    const swaps = [...this.#hour.swaps];
    done[HOUR_BUCKETS - 1] = thisMinute?.done ?? 0;
    swaps[HOUR_BUCKETS - 1] = thisMinute?.swaps ?? 0;
    return { since, bucketMs: MINUTE_MS, done, swaps };
  }
}

/** One model key's share of the queue: how many wait, its priorities (highest first), the oldest id. */
type ModelKeyGroup = { modelKey: string; n: number; top: number; priorities: number[]; oldest: string };

/**
 * The scheduler's groups (model key × priority) folded into one per model key, as the page shows them:
 * its count, its highest priority and its oldest job.
 */
function byModelKey(groups: readonly StoreQueueGroup[]): ModelKeyGroup[] {
  const keys = new Map<string, ModelKeyGroup>();
  // The store lists them highest priority first, so each key's first group is its top one.
  for (const group of groups) {
    const key = keys.get(group.modelKey);
    if (!key) {
      keys.set(group.modelKey, {
        modelKey: group.modelKey,
        n: group.queued,
        top: group.priority,
        priorities: [group.priority],
        oldest: group.oldestId,
      });
      continue;
    }
    key.n += group.queued;
    key.priorities.push(group.priority);
    if (group.oldestId < key.oldest) key.oldest = group.oldestId;
  }
  return [...keys.values()];
}
