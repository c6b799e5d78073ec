import type { SchedulePolicy } from "../config";
import { type ExpectedCost, type ModelCost, expectedCosts, rankGroups } from "./model-costs";
import type { JobRow, QueueGroup } from "./store";

/** A queued group in the plan: when its first job would start, and what each of its jobs is expected to take. */
export interface PlannedGroup extends QueueGroup {
  /** Expected start of the group's first job (epoch ms): its load, if any, is before it. */
  startAt: number;
  /** Expected run time of each of its jobs, ms. */
  runMs: number;
  /** Queued jobs planned to run before its first drained job: that job's queue position is ahead + 1. */
  ahead: number;
  /** Its jobs left to drain once the starvation guard has taken its overdue ones: queued - overdue. */
  drained: number;
}

/**
 * A priority's overdue jobs (see {@link QueueGroup.overdue}), which the claim takes first at that priority,
 * oldest first across model keys: one run, ahead of the drain order. Its time is approximated: each job's
 * run time, plus one load per model key in it that is not already loaded (it assumes a model's overdue jobs
 * run together; interleaved ones swap more), spread evenly over the run.
 */
export interface OverdueRun {
  priority: number;
  count: number;
  /** Queued jobs planned before the run (higher priorities): its first job's position is ahead + 1. */
  ahead: number;
  startAt: number;
  /** The run's expected time per job, ms: the k-th (0 first) starts at startAt + k × perJobMs. */
  perJobMs: number;
  oldestCreatedAt: number;
  newestCreatedAt: number;
}

/** The queue's expected order at one moment, group by group; see {@link planQueue}. */
export interface QueuePlan {
  now: number;
  /** By `${priority}\t${modelKey}`. */
  groups: Map<string, PlannedGroup>;
  /** By priority: the starvation guard's run at each priority that has overdue jobs. */
  overdue: Map<number, OverdueRun>;
  /** Jobs created before this (not batch lines) are overdue in this plan; null when it models no guard (fifo). */
  overdueBefore: number | null;
  cost: (modelKey: string) => ExpectedCost;
}

/** What {@link planQueue} reads: all of it O(model keys × priorities), none of it O(queued jobs). */
export interface PlanInput {
  groups: readonly QueueGroup[];
  costs: Map<string, ModelCost>;
  running: JobRow | null;
  residentKeys: readonly string[];
  schedule: SchedulePolicy;
  now: number;
  /** The cutoff the groups' overdue counts were made with (now - FOREMAN_MAX_WAIT); absent, no guard is modelled. */
  overdueBefore?: number;
}

const groupId = (priority: number, modelKey: string) => `${priority}\t${modelKey}`;

/**
 * Plays the scheduler forward over groups (model key × priority) rather than jobs: the running job's
 * expected remainder; then each priority, highest first; within it, first the starvation guard's run
 * (its overdue jobs, oldest first across model keys, as the claim takes them; see {@link OverdueRun}),
 * then the model loaded after it, then the other groups in the schedule's order (drain: rankGroups;
 * drain-oldest and fifo: oldest first), each with its overdue jobs taken out, each paying its load when
 * it is not the model loaded before it, then its count × its run time.
 * Approximate by design: the guard is modelled as the queue stands (jobs that will pass FOREMAN_MAX_WAIT
 * before they run are not foreseen), and so are jobs still to arrive and retries' back-off; under fifo
 * (no guard) each model's jobs are treated as one run.
 */
export function planQueue(input: PlanInput): QueuePlan {
  const cost = expectedCosts(input.costs);
  const groups = new Map<string, PlannedGroup>();
  const overdue = new Map<number, OverdueRun>();
  const guard = input.schedule !== "fifo" && input.overdueBefore !== undefined;
  let t = input.now;
  let ahead = 0;
  let loaded: string | undefined = input.residentKeys[0];
  if (input.running) {
    const { loadMs, runMs } = cost(input.running.modelKey);
    const expectedEnd = (input.running.startedAt ?? input.now) + runMs + (input.running.swapped === 1 ? loadMs : 0);
    t = Math.max(input.now, expectedEnd);
    loaded = input.running.modelKey;
  }
  const priorities = [...new Set(input.groups.map((g) => g.priority))].sort((a, b) => b - a);
  for (const priority of priorities) {
    const level = input.groups.filter((g) => g.priority === priority);
    const late = guard ? level.filter((g) => g.overdue > 0) : [];
    if (late.length > 0) {
      // The claim takes them by created_at: the model of the newest is the one loaded after the run.
      const byAge = [...late].sort((a, b) => a.overdueOldestAt! - b.overdueOldestAt!);
      const newest = late.reduce((a, b) => (b.overdueNewestAt! > a.overdueNewestAt! ? b : a));
      let total = 0;
      let count = 0;
      for (const g of late) {
        const { loadMs, runMs } = cost(g.modelKey);
        total += g.overdue * runMs + (g.modelKey === loaded ? 0 : loadMs);
        count += g.overdue;
      }
      overdue.set(priority, {
        priority,
        count,
        ahead,
        startAt: t,
        perJobMs: total / count,
        oldestCreatedAt: byAge[0]!.overdueOldestAt!,
        newestCreatedAt: newest.overdueNewestAt!,
      });
      t += total;
      ahead += count;
      loaded = newest.modelKey;
    }
    const left = (g: QueueGroup) => g.queued - (guard ? g.overdue : 0);
    const first = level.filter((g) => input.schedule !== "fifo" && g.modelKey === loaded);
    const rest = level.filter((g) => !first.includes(g));
    const waiting = rest.filter((g) => left(g) > 0).map((g) => ({ ...g, queued: left(g) }));
    const ordered =
      input.schedule === "drain"
        ? rankGroups(waiting, cost, [])
        : [...waiting].sort((a, b) => (a.oldestId < b.oldestId ? -1 : 1));
    const byId = new Map(level.map((g) => [g.modelKey, g]));
    for (const group of [...first, ...ordered.map((g) => byId.get(g.modelKey)!), ...rest.filter((g) => left(g) <= 0)]) {
      const drained = left(group);
      const { loadMs, runMs } = cost(group.modelKey);
      const startAt = t + (group.modelKey === loaded || drained === 0 ? 0 : loadMs);
      groups.set(groupId(group.priority, group.modelKey), { ...group, startAt, runMs, ahead, drained });
      if (drained === 0) continue;
      t = startAt + drained * runMs;
      ahead += drained;
      loaded = group.modelKey;
    }
  }
  return { now: input.now, groups, overdue, overdueBefore: guard ? input.overdueBefore! : null, cost };
}

/** The guard's run a queued job is in, when the plan has it overdue; else undefined. */
export function overdueRun(job: JobRow, plan: QueuePlan): OverdueRun | undefined {
  if (job.state !== "queued" || plan.overdueBefore === null) return undefined;
  if (job.source === "batch" || job.createdAt >= plan.overdueBefore) return undefined;
  return plan.overdue.get(job.priority);
}

/** The planned group a queued job is in, or undefined (not queued, or queued since the plan was made). */
export function plannedGroup(job: JobRow, plan: QueuePlan): PlannedGroup | undefined {
  return job.state === "queued" ? plan.groups.get(groupId(job.priority, job.modelKey)) : undefined;
}

/**
 * When a queued job is expected to start (epoch ms), or null when it is not queued. `rank` is its place
 * in its part of the plan (0 runs first): for an overdue job, in its priority's guard run
 * (JobStore.overdueRank); for the others, among its group's drained jobs (JobStore.rankInGroup less the
 * group's overdue jobs ahead of it): the same its queue position is made of, so a later position never
 * starts earlier. Without it, the rank is interpolated from the job's age between the oldest and newest
 * job of its part: exact at the ends and approximate between.
 */
export function estimatedStart(job: JobRow, plan: QueuePlan, rank?: number): number | null {
  const run = overdueRun(job, plan);
  if (run) {
    if (rank === undefined) rank = interpolate(job.createdAt, run.oldestCreatedAt, run.newestCreatedAt, run.count);
    return Math.max(plan.now, job.runAfter, Math.round(run.startAt + rank * run.perJobMs));
  }
  const group = plannedGroup(job, plan);
  if (!group) return null;
  if (rank === undefined) {
    rank = job.id === group.oldestId ? 0 : interpolate(job.createdAt, group.oldestCreatedAt, group.newestCreatedAt, group.queued);
    rank = Math.max(0, Math.min(Math.max(0, group.drained - 1), rank - (group.queued - group.drained)));
  }
  return Math.max(plan.now, job.runAfter, Math.round(group.startAt + rank * group.runMs));
}

function interpolate(at: number, oldest: number, newest: number, count: number): number {
  const span = newest - oldest;
  const fraction = span > 0 ? Math.min(1, Math.max(0, (at - oldest) / span)) : 0;
  return Math.round(fraction * (count - 1));
}
