import type { TargetInventory } from "../ollama/targets";
import type { DashboardQueries, EndedJobRow, HourBucketRow, QueuedJobRow, TimelineRow } from "../queue/dashboard-queries";
import type { KeyDayRow } from "../keys/usage";
import type { JobRow, JobStore, QueueGroup as StoreQueueGroup } from "../queue/store";
import { jobTimes, tokensPerSecond } from "../queue/job-view";
import { type QueuePlan, estimatedStart } from "../queue/start-estimate";
import { STORAGE_DEGRADED_MESSAGE } from "../queue/storage-health";
import { promptPreview } from "./preview";
import { OPEN_ADMIN, type Principal, ownerFilter, sees } from "../keys/principal";
import type {
  DashboardSnapshot,
  DegradedReason,
  ExpectedStart,
  HourChart,
  KeyLine,
  QueueGroup,
  RunningJob,
  TargetLane,
  Timeline,
  TimelineBar,
} from "./types";

/** How much a snapshot lists. */
export interface SnapshotLimits {
  /** Queued jobs listed per model, default 20; the rest are counted. */
  perGroup: number;
  /** Ended jobs listed, default 20. */
  recent: number;
  /** Jobs on the GPU timeline at most, default 500 (the newest; the older ones in its window are left out). */
  timeline: number;
}

export const DEFAULT_LIMITS: SnapshotLimits = { perGroup: 20, recent: 20, timeline: 500 };

const MINUTE_MS = 60_000;
const HOUR_BUCKETS = 60;
/** The GPU timeline's window: what the GPU did over the last ten minutes. */
const TIMELINE_MS = 10 * MINUTE_MS;
/** An expected start within this of now is "next": the page need not count down a second. */
const NEXT_MS = 500;

/** What the page says while Ollama cannot be reached: the worker claims nothing until it answers again. */
const OLLAMA_AWAY: DegradedReason = {
  reason: "ollama_unreachable",
  message: "Ollama is unreachable: the queue is held (nothing is sent to it) and resumes when Ollama answers again.",
};

/** What the page says while the database cannot be written: new requests fail, the worker claims nothing. */
const STORAGE_FULL: DegradedReason = { reason: "storage", message: STORAGE_DEGRADED_MESSAGE };

/** Why foreman works below its best, for the dashboard's banner and GET /queue; empty while all is well. */
export function degradedList(ollamaAway: boolean, storageDegraded: boolean): DegradedReason[] {
  return [...(ollamaAway ? [OLLAMA_AWAY] : []), ...(storageDegraded ? [STORAGE_FULL] : [])];
}

/**
 * What one snapshot reads, answered at once: SQLite's stores directly ({@link sqliteDashboardReads}); on
 * PostgreSQL, the answers fetched before the build (src/queue/pg/dashboard-queries.ts prefetch), so the
 * builder stays one synchronous pass over whichever engine.
 */
export interface DashboardReads {
  runningJob(): JobRow | null;
  runningJobs(): JobRow[];
  queueGroups(): StoreQueueGroup[];
  queuedJobs(modelKey: string, priorities: readonly number[], limit: number, keyId?: string): QueuedJobRow[];
  recentJobs(limit: number, keyId?: string): EndedJobRow[];
  ranSince(since: number, limit: number): TimelineRow[];
  promptHead(id: string): string | null;
  endedPerBucket(since: number, bucketMs: number): HourBucketRow[];
  keyBoard(now: number, keyId?: string): KeyDayRow[];
  /** The queue's plan now (JobService.queuePlan): the expected starts the API reports too. */
  plan(): QueuePlan;
}

/** The reads of a snapshot over SQLite's store and the dashboard's queries, each at once. */
export function sqliteDashboardReads(store: JobStore, queries: DashboardQueries, plan: () => QueuePlan): DashboardReads {
  return {
    runningJob: () => store.runningJob(),
    runningJobs: () => store.runningJobs(),
    queueGroups: () => store.queueGroups(),
    queuedJobs: (modelKey, priorities, limit, keyId) => queries.queuedJobs(modelKey, priorities, limit, keyId),
    recentJobs: (limit, keyId) => queries.recentJobs(limit, keyId),
    ranSince: (since, limit) => queries.ranSince(since, limit),
    promptHead: (id) => queries.promptHead(id),
    endedPerBucket: (since, bucketMs) => queries.endedPerBucket(since, bucketMs),
    keyBoard: (now, keyId) => store.keyUsage.board(now, keyId),
    plan,
  };
}

/** The GPU timeline's window for a snapshot at `now`: from a whole minute, ten minutes and a little more back. */
export function timelineSince(now: number): number {
  return Math.floor((now - TIMELINE_MS) / MINUTE_MS) * MINUTE_MS;
}

/** The hour chart's window for a snapshot at `now`: its first minute, and the current one (counted each time). */
export function hourWindow(now: number): { since: number; current: number; bucketMs: number } {
  const current = Math.floor(now / MINUTE_MS) * MINUTE_MS;
  return { since: current - (HOUR_BUCKETS - 1) * MINUTE_MS, current, bucketMs: MINUTE_MS };
}

/** The running job's live counts, kept by the feed from the job's streamed records. */
export interface LiveCount {
  tokens: number;
  tokensPerS: number | null;
}

/**
 * Builds the dashboard's snapshot from the database and the inventory, without `now` (the feed adds
 * it), so two snapshots of an unchanged queue are equal: expected starts are absolute times (0 for
 * "next"), and the timeline's window starts on a whole minute. Bounded: a fixed number of indexed
 * queries, each with a LIMIT or an aggregate, a few per model with queued jobs; the hour's finished
 * minutes are counted once a minute and only the current minute each time; a job's prompt is read once.
 */
export class SnapshotBuilder {
  /** The hour chart's finished minutes, for the window starting at `since`. */
  #hour: { since: number; done: number[]; swaps: number[] } | undefined;
  /** Prompt previews of the jobs the last snapshot listed, by id: a request never changes, so each is read once. */
  #previews = new Map<string, string>();

  /** `reads`: what a build reads by default (SQLite's stores); a build may be given its own (PostgreSQL's, fetched). */
  constructor(
    readonly reads: DashboardReads | null,
    readonly inventory: TargetInventory,
    readonly limits: SnapshotLimits = DEFAULT_LIMITS,
    readonly storage: { readonly degraded: boolean } = { degraded: false },
    readonly keyName: (keyId: string) => string | null = () => null,
  ) {}

  /**
   * The snapshot as `viewer` may see it: an admin everything and who asked; a client key its own jobs (queued,
   * running, recent) and the anonymous aggregate (counts per model, the running model, expected starts, the
   * GPU timeline's bars and the hour's counts), another key's job never by id, prompt or key.
   */
  build(
    live: (jobId: string) => LiveCount,
    now = Date.now(),
    viewer: Principal = OPEN_ADMIN,
    reads: DashboardReads | null = this.reads,
  ): Omit<DashboardSnapshot, "now"> {
    if (!reads) throw new Error("a dashboard snapshot needs its reads");
    const store = reads;
    const own = ownerFilter(viewer);
    const mine = (keyId: string | null) => sees(viewer, keyId);
    const name = (keyId: string | null) => (keyId === null || !mine(keyId) ? null : this.keyName(keyId));
    const { snapshot } = this.inventory;
    const reachable = !snapshot.degraded && snapshot.updatedAt > 0;
    const previews = new Map<string, string>();
    const preview = (id: string) => {
      const text = this.#previews.get(id) ?? promptPreview(reads.promptHead(id));
      previews.set(id, text);
      return text;
    };
    // While Ollama is away nothing starts: no time is expected, the page says the queue is held.
    const plan = reachable ? reads.plan() : null;
    const expected = (at: number | null): ExpectedStart => (at === null ? null : at <= now + NEXT_MS ? 0 : at);

    const runningJob = (row: JobRow): RunningJob => ({
      id: mine(row.keyId) ? row.id : "",
      model: row.model,
      modelKey: row.modelKey,
      state: row.state === "working" ? "working" : "loading",
      type: row.type,
      preview: mine(row.keyId) ? preview(row.id) : "",
      key: name(row.keyId),
      source: row.source,
      priority: row.priority,
      createdAt: row.createdAt,
      startedAt: row.startedAt,
      swapped: row.swapped === null ? null : row.swapped === 1,
      ...live(row.id),
    });
    // Several targets: a lane each, with every job running there.
    const rows = this.inventory.several ? store.runningJobs() : [];
    const targets: TargetLane[] | undefined = this.inventory.several
      ? this.inventory.targets.map(({ target, inventory }) => ({
          name: target.name,
          reachable: !inventory.snapshot.degraded,
          slots: target.slots,
          resident: inventory.snapshot.degraded ? [] : inventory.residentKeys(),
          running: rows.filter((r) => r.target === target.name).map(runningJob),
        }))
      : undefined;

    const row = store.runningJob();
    const running: RunningJob | null = row && runningJob(row);

    const groups = byModelKey(store.queueGroups())
      .sort(
        (a, b) =>
          Number(b.modelKey === running?.modelKey) - Number(a.modelKey === running?.modelKey) ||
          b.top - a.top ||
          (a.oldest < b.oldest ? -1 : 1),
      )
      .map((group): QueueGroup => {
        const jobs = reads.queuedJobs(group.modelKey, group.priorities, this.limits.perGroup, own).map((job) => ({
          id: job.id,
          key: name(job.keyId),
          model: job.model,
          type: job.type,
          preview: preview(job.id),
          source: job.source,
          priority: job.priority,
          createdAt: job.createdAt,
          estimatedStartAt: expected(plan && startOf(job, plan)),
        }));
        return {
          model: group.modelKey,
          count: group.n,
          estimatedStartAt: expected(plan && groupStart(group, plan)),
          jobs,
          more: group.n - jobs.length,
        };
      });
    this.#previews = previews;

    const recent = reads.recentJobs(this.limits.recent, own).map((job) => {
      const { waitMs, runMs } = jobTimes(job, now);
      return {
        id: job.id,
        model: job.model,
        modelKey: job.modelKey,
        type: job.type,
        source: job.source,
        state: job.state,
        error: job.error,
        finishedAt: job.finishedAt!,
        waitMs,
        runMs,
        outputTokens: job.outputTokens,
        tokensPerS: tokensPerSecond(job, runMs),
        key: name(job.keyId),
      };
    });

    return {
      ollama: { reachable, resident: snapshot.running.map((model) => model.name) },
      // Not yet polled (updatedAt 0) is not an outage.
      degraded: degradedList(snapshot.degraded, this.storage.degraded),
      running,
      ...(targets ? { targets } : {}),
      queue: { total: groups.reduce((sum, group) => sum + group.count, 0), groups },
      recent,
      hour: this.#hourChart(reads, now),
      timeline: this.#timeline(reads, now, mine, name),
      ...this.#keys(reads, now, viewer),
    };
  }

  /**
   * Who uses the GPU today: each key's line (an admin's view), or the client key's own; nothing at all where no
   * key exists (or none is the viewer's), so a deployment without keys sends the snapshot it always did.
   */
  #keys(reads: DashboardReads, now: number, viewer: Principal): { keys?: KeyLine[] } {
    const own = ownerFilter(viewer);
    if (own === "") return {};
    const lines = reads.keyBoard(now, own).map((row): KeyLine => ({
      name: row.name,
      tokens: row.promptTokens + row.outputTokens,
      gpuMs: row.gpuMs,
      waiting: row.waiting,
      done: row.jobs,
    }));
    return lines.length ? { keys: lines } : {};
  }

  /**
   * The jobs that ended in the last ten minutes and a little more (from a whole minute, so the list
   * changes only when a job ends or a minute passes), oldest first; the page draws the window up to its clock.
   */
  #timeline(
    reads: DashboardReads,
    now: number,
    mine: (keyId: string | null) => boolean,
    name: (keyId: string | null) => string | null,
  ): Timeline {
    const since = timelineSince(now);
    const rows = reads.ranSince(since, this.limits.timeline);
    const jobs = rows.reverse().map((job): TimelineBar => ({
      id: mine(job.keyId) ? job.id : "",
      key: name(job.keyId),
      modelKey: job.modelKey,
      type: job.type,
      state: job.state,
      startedAt: job.startedAt,
      finishedAt: job.finishedAt,
      swapped: job.swapped === 1,
      loadMs: job.loadMs === null ? null : Math.round(job.loadMs),
    }));
    return { since, windowMs: TIMELINE_MS, jobs, truncated: rows.length >= this.limits.timeline };
  }

  /** The last hour in whole minutes, the current one last, so the chart's window moves once a minute. */
  #hourChart(reads: DashboardReads, now: number): HourChart {
    const { since, current } = hourWindow(now);
    if (this.#hour?.since !== since) {
      // A new minute: count the window's finished minutes once (the current one is counted every time).
      const done = new Array<number>(HOUR_BUCKETS).fill(0);
      const swaps = new Array<number>(HOUR_BUCKETS).fill(0);
      for (const row of reads.endedPerBucket(since, MINUTE_MS)) {
        if (row.bucket < 0 || row.bucket >= HOUR_BUCKETS - 1) continue;
        done[row.bucket] = row.done;
        swaps[row.bucket] = row.swaps;
      }
      this.#hour = { since, done, swaps };
    }
    const thisMinute = reads.endedPerBucket(current, MINUTE_MS).find((row) => row.bucket === 0);
    const done = [...this.#hour.done];
    const swaps = [...this.#hour.swaps];
    done[HOUR_BUCKETS - 1] = thisMinute?.done ?? 0;
    swaps[HOUR_BUCKETS - 1] = thisMinute?.swaps ?? 0;
    return { since, bucketMs: MINUTE_MS, done, swaps };
  }
}

/** A listed job's expected start: the API's estimated_start_at (the dashboard's row holds what it reads). */
const startOf = (job: QueuedJobRow, plan: QueuePlan) => estimatedStart(job as JobRow, plan);

/** A model key's expected start: the earliest of its groups' (model key × priority) in the plan, as GET /queue's. */
function groupStart(group: ModelKeyGroup, plan: QueuePlan): number | null {
  let first: number | null = null;
  for (const planned of plan.groups.values()) {
    if (planned.modelKey === group.modelKey && (first === null || planned.startAt < first)) first = planned.startAt;
  }
  return first === null ? null : Math.max(plan.now, Math.round(first));
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
