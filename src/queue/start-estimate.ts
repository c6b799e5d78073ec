import type { SchedulePolicy } from "../config";
import { type ExpectedCost, type ModelCost, type WaitingGroup, expectedCosts, rankGroups } from "./model-costs";
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
  /** Several targets: when each of its drained jobs starts, piece by piece (see {@link Segment}); absent, startAt + rank × runMs. */
  segments?: Segment[];
}

/**
 * Several targets drain one group together: from its job `fromRank` (0 first) on, one starts every
 * `perJobMs` from `startAt` (the run time over the slots of every target on it then), until the next piece.
 */
export interface Segment {
  fromRank: number;
  startAt: number;
  perJobMs: number;
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
  /** Several targets: as {@link PlannedGroup.segments}. */
  segments?: Segment[];
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
  /**
   * Several targets: how many queued jobs are planned to start before `at` (every target's), so a job's
   * queue position is that + 1 and agrees with its estimate; absent (one target), positions come from `ahead`.
   */
  jobsBefore?: (at: number) => number;
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
  /** Several targets: each one's lane (then `running` and `residentKeys` are not read); one or none, the plan above. */
  lanes?: readonly PlanLane[];
}

/** One Ollama target as the plan sees it: what it can run, how many at once, what it holds and runs. */
export interface PlanLane {
  name: string;
  slots: number;
  reachable: boolean;
  /** Whether it has the model key's model installed. */
  installed: (modelKey: string) => boolean;
  /** Its /api/ps, most recently used first. */
  residentKeys: readonly string[];
  /** The jobs running on it (one key). */
  running: readonly JobRow[];
  /** Expected costs on it (learned per target, else anywhere). */
  cost: (modelKey: string) => ExpectedCost;
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
  if (input.lanes && input.lanes.length > 1) return planLanes(input, input.lanes);
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
      const { byAge, newest, total, count } = overdueTotals(late, cost, (key) => key === loaded);
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
    if (run.segments) return Math.max(plan.now, job.runAfter, Math.round(startOfRank(run.segments, rank)));
    return Math.max(plan.now, job.runAfter, Math.round(run.startAt + rank * run.perJobMs));
  }
  const group = plannedGroup(job, plan);
  if (!group) return null;
  if (rank === undefined) {
    rank = job.id === group.oldestId ? 0 : interpolate(job.createdAt, group.oldestCreatedAt, group.newestCreatedAt, group.queued);
    rank = Math.max(0, Math.min(Math.max(0, group.drained - 1), rank - (group.queued - group.drained)));
  }
  if (group.segments) return Math.max(plan.now, job.runAfter, Math.round(startOfRank(group.segments, rank)));
  return Math.max(plan.now, job.runAfter, Math.round(group.startAt + rank * group.runMs));
}

/**
 * A priority's overdue run as the claim takes it, by created_at: its groups oldest first, the group of
 * the newest job (whose model is loaded after the run), and its jobs and time in all: each group's jobs
 * × run time, plus a load unless `loaded` says its model is already on a GPU.
 */
function overdueTotals(
  late: readonly QueueGroup[],
  cost: (modelKey: string) => ExpectedCost,
  loaded: (modelKey: string) => boolean,
): { byAge: QueueGroup[]; newest: QueueGroup; total: number; count: number } {
  const byAge = [...late].sort((a, b) => a.overdueOldestAt! - b.overdueOldestAt!);
  const newest = late.reduce((a, b) => (b.overdueNewestAt! > a.overdueNewestAt! ? b : a));
  let total = 0;
  let count = 0;
  for (const g of late) {
    const { loadMs, runMs } = cost(g.modelKey);
    total += g.overdue * runMs + (loaded(g.modelKey) ? 0 : loadMs);
    count += g.overdue;
  }
  return { byAge, newest, total, count };
}

function interpolate(at: number, oldest: number, newest: number, count: number): number {
  const span = newest - oldest;
  const fraction = span > 0 ? Math.min(1, Math.max(0, (at - oldest) / span)) : 0;
  return Math.round(fraction * (count - 1));
}

/** When the job of rank `rank` (0 first) of a group drained piece by piece starts. */
function startOfRank(segments: readonly Segment[], rank: number): number {
  let segment = segments[0]!;
  for (const s of segments) if (s.fromRank <= rank) segment = s;
  return segment.startAt + (rank - segment.fromRank) * segment.perJobMs;
}

/** How many of a drain's `total` jobs have started by `at`, as a flow (a fraction is the next one's share). */
function startedBy(segments: readonly Segment[], total: number, at: number): number {
  let started = 0;
  for (const s of segments) {
    if (at < s.startAt) break;
    started = s.fromRank + (at - s.startAt) / s.perJobMs;
  }
  return Math.min(total, started);
}

/**
 * A queued job's position with several targets: the jobs planned to start before it on any target, + 1
 * (see {@link QueuePlan.jobsBefore}); undefined with one target (positions come from `ahead`).
 */
export function lanePosition(job: JobRow, plan: QueuePlan, rank: number): number | undefined {
  if (!plan.jobsBefore) return undefined;
  const segments = overdueRun(job, plan)?.segments ?? plannedGroup(job, plan)?.segments;
  return segments ? plan.jobsBefore(startOfRank(segments, rank)) + 1 : undefined;
}

/** The shortest time per job the lane plan works with (ms), so a rate is never infinite. */
const MIN_JOB_MS = 1e-3;

/** One target as the plan plays it: the key it holds, and when it can start that key's next job and another key's. */
interface LaneState {
  lane: PlanLane;
  loaded: string | undefined;
  free: number;
  freeOther: number;
}

/** A run of jobs the lanes drain together: a group's drained jobs, or a priority's starvation-guard run. */
interface Drain {
  modelKey: string | undefined;
  total: number;
  oldestId: string;
  segments: Segment[];
  /** The lanes on it, each from when it starts there and at what rate (jobs per ms). */
  drainers: Array<{ lane: LaneState; startAt: number; rate: number }>;
  perJobMs: (lane: LaneState) => number;
}

/**
 * {@link planQueue} with several targets: the same plan played on a lane per target. A lane that frees
 * (each in turn, the earliest first) does what its runner's claim would: the jobs of the key it holds
 * first, then, at the same priority, the group the placement rule picks for it (src/worker/placement.ts):
 * ranked by rankGroups on its own costs, those only it has installed first, passing over one that a
 * target holding it will reach sooner than a load here would end. Only groups whose model it has, and
 * the starvation guard's run (any target, oldest first) before the rest of its priority. Several lanes
 * on one group drain it together, each at its slots over its run time, so the group is pieces of rates
 * (see {@link Segment}). Still group by group, never job by job: O(groups × targets) joins. A target that
 * does not answer plans nothing (its jobs wait for the others), unless none answers. A group no lane
 * can run is placed after all the others.
 */
function planLanes(input: PlanInput, all: readonly PlanLane[]): QueuePlan {
  const { now } = input;
  const anywhere = expectedCosts(input.costs);
  const guard = input.schedule !== "fifo" && input.overdueBefore !== undefined;
  const up = all.filter((lane) => lane.reachable);
  const lanes: LaneState[] = (up.length > 0 ? up : all).map((lane) => {
    if (lane.running.length === 0) return { lane, loaded: lane.residentKeys[0], free: now, freeOther: now };
    const ends = lane.running.map((job) => {
      const { loadMs, runMs } = lane.cost(job.modelKey);
      return Math.max(now, (job.startedAt ?? now) + runMs + (job.swapped === 1 ? loadMs : 0));
    });
    // A free slot takes the key it runs at once; another key waits for every slot to end.
    const free = lane.running.length < lane.slots ? now : Math.min(...ends);
    return { lane, loaded: lane.running[0]!.modelKey, free, freeOther: Math.max(...ends) };
  });
  const drains: Drain[] = [];
  const groups = new Map<string, PlannedGroup>();
  const overdue = new Map<number, OverdueRun>();
  const pending: Array<{ group: QueueGroup; drain: Drain }> = [];
  const unplaced: QueueGroup[] = [];
  const priorities = [...new Set(input.groups.map((g) => g.priority))].sort((a, b) => b - a);
  for (const priority of priorities) {
    const level = input.groups.filter((g) => g.priority === priority);
    const late = guard ? level.filter((g) => g.overdue > 0) : [];
    if (late.length > 0) {
      const { byAge, newest, total, count } = overdueTotals(late, anywhere, (key) => lanes.some((l) => l.loaded === key));
      const perJobMs = Math.max(MIN_JOB_MS, total / count);
      const run: Drain = {
        modelKey: undefined,
        total: count,
        oldestId: "",
        segments: [],
        drainers: [],
        perJobMs: () => perJobMs,
      };
      playLevel([run], lanes, input.schedule);
      for (const { lane } of run.drainers) lane.loaded = newest.modelKey;
      drains.push(run);
      overdue.set(priority, {
        priority,
        count,
        ahead: 0,
        startAt: run.segments[0]?.startAt ?? now,
        perJobMs,
        oldestCreatedAt: byAge[0]!.overdueOldestAt!,
        newestCreatedAt: newest.overdueNewestAt!,
        segments: run.segments.length > 0 ? run.segments : [{ fromRank: 0, startAt: now, perJobMs }],
      });
    }
    const left = (g: QueueGroup) => g.queued - (guard ? g.overdue : 0);
    const levelDrains = level
      .filter((g) => left(g) > 0)
      .map((group) => {
        const drain: Drain = {
          modelKey: group.modelKey,
          total: left(group),
          oldestId: group.oldestId,
          segments: [],
          drainers: [],
          // Never 0 (a rate of jobs per ms divides by it): a learned 0 ms is a microsecond.
          perJobMs: (lane) => Math.max(MIN_JOB_MS, lane.lane.cost(group.modelKey).runMs) / lane.lane.slots,
        };
        return { group, drain };
      });
    playLevel(
      levelDrains.map((d) => d.drain),
      lanes,
      input.schedule,
    );
    for (const entry of levelDrains) {
      if (entry.drain.segments.length > 0) {
        drains.push(entry.drain);
        pending.push(entry);
      } else unplaced.push(entry.group);
    }
    for (const group of level.filter((g) => left(g) <= 0)) {
      const run = overdue.get(priority);
      groups.set(groupId(priority, group.modelKey), {
        ...group,
        startAt: run?.startAt ?? now,
        runMs: anywhere(group.modelKey).runMs,
        ahead: 0,
        drained: 0,
      });
    }
  }
  // Groups no lane that answers can run: after everything else, one at a time at their costs anywhere.
  let t = Math.max(now, ...lanes.map((l) => Math.max(l.free, l.freeOther)));
  for (const group of unplaced) {
    const { loadMs, runMs } = anywhere(group.modelKey);
    const drained = group.queued - (guard ? group.overdue : 0);
    const segments = [{ fromRank: 0, startAt: t + loadMs, perJobMs: Math.max(MIN_JOB_MS, runMs) }];
    drains.push({
      modelKey: group.modelKey,
      total: drained,
      oldestId: group.oldestId,
      segments,
      drainers: [],
      perJobMs: () => runMs,
    });
    pending.push({ group, drain: drains.at(-1)! });
    t += loadMs + drained * runMs;
  }
  const jobsBefore = (at: number) =>
    drains.reduce((n, d) => n + Math.max(0, Math.ceil(startedBy(d.segments, d.total, at) - 1e-9)), 0);
  for (const { group, drain } of pending) {
    const startAt = drain.segments[0]!.startAt;
    groups.set(groupId(group.priority, group.modelKey), {
      ...group,
      startAt,
      runMs: drain.segments[0]!.perJobMs,
      ahead: jobsBefore(startAt),
      drained: drain.total,
      segments: drain.segments,
    });
  }
  for (const run of overdue.values()) run.ahead = jobsBefore(run.startAt);
  return { now, groups, overdue, overdueBefore: guard ? input.overdueBefore! : null, cost: anywhere, jobsBefore };
}

/** Plays one priority's drains on the lanes, each lane in turn as it frees (see {@link planLanes}). */
function playLevel(level: readonly Drain[], lanes: readonly LaneState[], schedule: SchedulePolicy): void {
  const done = new Set<LaneState>();
  for (;;) {
    const waiting = lanes.filter((l) => !done.has(l));
    if (waiting.length === 0) return;
    const lane = waiting.reduce((a, b) => (b.free < a.free ? b : a));
    const pick = choose(lane, level, lanes, schedule);
    if (!pick) done.add(lane);
    else join(pick.drain, lane, pick.startAt);
  }
}

const unstarted = (drain: Drain, at: number) => drain.total - startedBy(drain.segments, drain.total, at);
const laneHas = (lane: LaneState, drain: Drain) => drain.modelKey === undefined || lane.lane.installed(drain.modelKey);

/** What a free lane's claim would take at this priority, and when it would start it; undefined: nothing. */
function choose(
  lane: LaneState,
  level: readonly Drain[],
  lanes: readonly LaneState[],
  schedule: SchedulePolicy,
): { drain: Drain; startAt: number } | undefined {
  // The starvation guard's run first, then the key it holds (not under fifo).
  const run = level.find((d) => d.modelKey === undefined && unstarted(d, lane.free) >= 1);
  if (run) return { drain: run, startAt: lane.free };
  const own = level.find((d) => d.modelKey === lane.loaded && laneHas(lane, d) && unstarted(d, lane.free) >= 1);
  if (own && schedule !== "fifo") return { drain: own, startAt: lane.free };
  const options = level.flatMap((drain) => {
    if (drain.modelKey === undefined || drain === own || !laneHas(lane, drain)) return [];
    const loadMs = drain.modelKey === lane.loaded ? 0 : lane.lane.cost(drain.modelKey).loadMs;
    const startAt = Math.max(lane.free, lane.freeOther) + loadMs;
    const queued = unstarted(drain, startAt);
    return queued >= 1 ? [{ drain, startAt, loadMs, modelKey: drain.modelKey, queued, oldestId: drain.oldestId }] : [];
  });
  if (own)
    options.push({
      drain: own,
      startAt: lane.free,
      loadMs: 0,
      modelKey: own.modelKey!,
      queued: unstarted(own, lane.free),
      oldestId: own.oldestId,
    });
  if (options.length === 0) return undefined;
  if (schedule !== "drain") return [...options].sort((a, b) => (a.oldestId < b.oldestId ? -1 : 1))[0];
  const exclusive = (o: WaitingGroup) => !lanes.some((other) => other !== lane && other.lane.installed(o.modelKey));
  const byRank = rankGroups(options, lane.lane.cost, []);
  const ranked = [...byRank.filter(exclusive), ...byRank.filter((o) => !exclusive(o))];
  // Left to a lane that holds it and will be through its own work before a load here would end.
  const leftTo = (o: (typeof options)[number]) =>
    lanes.some(
      (other) =>
        other !== lane &&
        other.loaded === o.modelKey &&
        other.lane.installed(o.modelKey) &&
        Math.max(0, other.free - (o.startAt - o.loadMs)) < o.loadMs,
    );
  return ranked.find((o) => !leftTo(o));
}

/** `lane` joins `drain` from `startAt`: the drain's pieces are remade with every lane on it, each from its start. */
function join(drain: Drain, lane: LaneState, startAt: number): void {
  drain.drainers.push({ lane, startAt, rate: 1 / drain.perJobMs(lane) });
  const ordered = [...drain.drainers].sort((a, b) => a.startAt - b.startAt);
  drain.segments = [];
  let rate = 0;
  for (const d of ordered) {
    const fromRank = drain.segments.length === 0 ? 0 : startedBy(drain.segments, drain.total, d.startAt);
    rate += d.rate;
    drain.segments.push({ fromRank, startAt: d.startAt, perJobMs: 1 / rate });
  }
  const last = drain.segments.at(-1)!;
  const end = Math.max(last.startAt, last.startAt + (drain.total - last.fromRank) * last.perJobMs);
  for (const d of drain.drainers) {
    d.lane.free = end;
    d.lane.freeOther = end;
    if (drain.modelKey !== undefined) d.lane.loaded = drain.modelKey;
  }
}
