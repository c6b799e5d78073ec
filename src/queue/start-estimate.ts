import type { SchedulePolicy } from "../config";
import { type ExpectedCost, type ModelCost, expectedCosts, rankGroups } from "./model-costs";
import type { JobRow, QueueGroup } from "./store";

/** A queued group in the plan: when its first job would start, and what each of its jobs is expected to take. */
export interface PlannedGroup extends QueueGroup {
  /** Expected start of the group's first job (epoch ms): its load, if any, is before it. */
  startAt: number;
  /** Expected run time of each of its jobs, ms. */
  runMs: number;
  /** Queued jobs in the groups planned to run before it: its first job's queue position is ahead + 1. */
  ahead: number;
}

/** The queue's expected order at one moment, group by group; see {@link planQueue}. */
export interface QueuePlan {
  now: number;
  /** By `${priority}\t${modelKey}`. */
  groups: Map<string, PlannedGroup>;
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
}

const groupId = (priority: number, modelKey: string) => `${priority}\t${modelKey}`;

/**
 * Plays the scheduler forward over groups (model key × priority) rather than jobs: the running job's
 * expected remainder; then each priority, highest first; within it the loaded model's group, then the
 * others in the schedule's order (drain: rankGroups; drain-oldest and fifo: oldest first), each paying
 * its load when it is not the model loaded before it, then its count × its run time.
 * Approximate by design: it ignores starvation-guard promotions, jobs still to arrive and retries'
 * back-off, and under fifo treats each model's jobs as one run.
 */
export function planQueue(input: PlanInput): QueuePlan {
  const cost = expectedCosts(input.costs);
  const groups = new Map<string, PlannedGroup>();
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
    const first = level.filter((g) => input.schedule !== "fifo" && g.modelKey === loaded);
    const rest = level.filter((g) => !first.includes(g));
    const ordered =
      input.schedule === "drain" ? rankGroups(rest, cost, []) : [...rest].sort((a, b) => (a.oldestId < b.oldestId ? -1 : 1));
    for (const group of [...first, ...ordered]) {
      const { loadMs, runMs } = cost(group.modelKey);
      const startAt = t + (group.modelKey === loaded ? 0 : loadMs);
      groups.set(groupId(group.priority, group.modelKey), { ...group, startAt, runMs, ahead });
      t = startAt + group.queued * runMs;
      ahead += group.queued;
      loaded = group.modelKey;
    }
  }
  return { now: input.now, groups, cost };
}

/** The planned group a queued job is in, or undefined (not queued, or queued since the plan was made). */
export function plannedGroup(job: JobRow, plan: QueuePlan): PlannedGroup | undefined {
  return job.state === "queued" ? plan.groups.get(groupId(job.priority, job.modelKey)) : undefined;
}

/**
 * When a queued job is expected to start (epoch ms), or null when it is not queued. `rank` is its place
 * in its group (0 runs first; see JobStore.rankInGroup), the same its queue position is made of, so a
 * later position never starts earlier. Without it, the rank is interpolated from the job's age between
 * the group's oldest and newest job: exact at the ends and approximate between.
 */
export function estimatedStart(job: JobRow, plan: QueuePlan, rank?: number): number | null {
  const group = plannedGroup(job, plan);
  if (!group) return null;
  if (rank === undefined) {
    const span = group.newestCreatedAt - group.oldestCreatedAt;
    const fraction = span > 0 ? Math.min(1, Math.max(0, (job.createdAt - group.oldestCreatedAt) / span)) : 0;
    rank = job.id === group.oldestId ? 0 : Math.round(fraction * (group.queued - 1));
  }
  return Math.max(plan.now, job.runAfter, Math.round(group.startAt + rank * group.runMs));
}
