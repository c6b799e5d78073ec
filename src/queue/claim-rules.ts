import type { ClaimPick, ClaimView } from "./claim-view";
import type { WaitingCaller } from "./fair-share";
import { type ExpectedCost, type WaitingGroup, expectedCosts, rankGroups } from "./model-costs";

/** How the next job is chosen; see {@link pickNextJob}. */
export interface ClaimPolicy {
  /**
   * "drain" prefers the loaded model, then picks the model key by weighted waiting work over expected
   * cost (see rankGroups); "drain-oldest" prefers the loaded model, then the oldest job; "fifo" ignores it.
   */
  schedule: "drain" | "drain-oldest" | "fifo";
  /** Model keys Ollama has loaded, most recently used first. */
  residentKeys: readonly string[];
  /** A job queued longer than this (ms) goes before the loaded model's jobs. */
  maxWaitMs: number;
  /** The target claiming (recorded on the row); null or absent: none named. */
  target?: string | null;
  /**
   * Several targets: only model keys this target has installed may be claimed (absent: any, one target,
   * where Ollama answers a missing model's 404 itself).
   */
  eligible?: (modelKey: string) => boolean;
  /**
   * Jobs of this key are in flight on the target (its other slots): the claim takes the next job only if
   * the ordering picks this key, else nothing, so a target never serves two keys at once.
   */
  onlyKey?: string;
  /** Several targets: how this target weighs a group against the others (see {@link Placement}). */
  placement?: Placement;
  /**
   * Fair share: how many expected loads of its model a caller whose jobs all need another model may trail
   * the served caller by before it takes the GPU (FOREMAN_FAIR_SLACK; default {@link FAIR_SLACK_LOADS}).
   */
  fairSlackLoads?: number;
}

/**
 * A claiming target's view of the others, for the group choice: its own learned costs per model key,
 * and a test of whether another target that has a key resident will reach its group sooner than a load
 * here would take (then this target leaves the group to it).
 */
export interface Placement {
  /** Expected costs on this target (learned per target, else the key's costs anywhere). */
  cost: (modelKey: string) => ExpectedCost;
  /** True when another target will serve this group sooner than this one could load it (`loadMs` here). */
  leaveTo: (modelKey: string, loadMs: number) => boolean;
  /** True when no other target that answers has the key's model: only this one can ever run the group. */
  exclusive: (modelKey: string) => boolean;
}

/**
 * How far (in expected loads of its model) a caller whose jobs all need another model may fall behind the
 * caller being served before it takes the GPU: the swap there and the swap back are paid for.
 */
export const FAIR_SLACK_LOADS = 2;

/** The group choice's answer when every group it could take is better left to another target. */
const LEFT = Symbol("left to another target");

/**
 * The next job to claim, and whether running it swaps the model in (its key is not resident), or null.
 * Among jobs whose run_after has passed: highest priority; within it, jobs older than maxWait,
 * oldest first (the starvation guard); then the loaded models' jobs, oldest first; then, under drain,
 * the oldest job of the model key {@link rankGroups} puts first, else (drain-oldest, fifo) the oldest.
 * Pure over `view`: the store calls it inside its claim transaction and marks the pick it returns.
 */
export function pickNextJob(view: ClaimView, policy: ClaimPolicy, now: number): { pick: ClaimPick; swapped: 0 | 1 } | null {
  for (let p = view.topPriority(); p !== null; p = view.nextPriorityBelow(p)) {
    const pick = pickAtPriority(view, p, policy, now);
    // Every group this target could take at this priority is left to a target that has it resident.
    if (pick === LEFT) return null;
    if (pick !== undefined) {
      // Another key's slots are in flight here: this key waits until they end (never two keys at once).
      if (policy.onlyKey !== undefined && pick.modelKey !== policy.onlyKey) return null;
      return { pick, swapped: policy.residentKeys.includes(pick.modelKey) ? 0 : 1 };
    }
  }
  return null;
}

function pickAtPriority(
  view: ClaimView,
  priority: number,
  policy: ClaimPolicy,
  now: number,
): ClaimPick | typeof LEFT | undefined {
  if (policy.schedule === "fifo") return oldestPick(view, priority, policy, now);
  const overdue = oldestOverdue(view, priority, policy, now);
  if (overdue) return overdue;
  // Two callers or more wait at this priority: the group is chosen as without them, its job by caller.
  const callers = fairCallers(view, priority);
  const fair = (pick: ClaimPick | typeof LEFT | undefined) =>
    callers.length === 0 || pick === undefined || pick === LEFT ? pick : fairPick(view, priority, pick, callers, policy, now);
  for (const key of policy.residentKeys) {
    if (policy.eligible && !policy.eligible(key)) continue;
    const warm = view.oldestForModel(priority, key, now);
    if (warm) return fair(warm);
  }
  if (policy.schedule === "drain") {
    const chosen = cheapestGroup(view, priority, policy, now);
    if (chosen) return fair(chosen);
  }
  return fair(oldestPick(view, priority, policy, now));
}

/** The oldest runnable job at this priority, of a key this target may claim. */
function oldestPick(view: ClaimView, priority: number, policy: ClaimPolicy, now: number): ClaimPick | undefined {
  const eligible = policy.eligible;
  const oldest = view.oldest(priority, now);
  if (!eligible || !oldest || eligible(oldest.modelKey)) return oldest;
  // Several targets, and the oldest job is not this one's to run: the oldest of the keys it has.
  return eligibleGroups(view, priority, eligible)
    .flatMap((modelKey) => view.oldestForModel(priority, modelKey, now) ?? [])
    .reduce<ClaimPick | undefined>((best, pick) => (!best || pick.id < best.id ? pick : best), undefined);
}

/** The callers waiting at this priority, least served first, when fair share applies and there are two or more. */
function fairCallers(view: ClaimView, priority: number): WaitingCaller[] {
  if (!view.fairActive()) return [];
  const callers = view.fairWaiting(priority);
  return callers.length >= 2 ? callers : [];
}

/**
 * Fair share inside the chosen model group (`pick` is its oldest job): the job of the least served
 * caller that has one in the group, its oldest (callers level: the oldest of theirs). A caller further behind whose jobs all need another
 * model takes the GPU instead once its counter trails the served one by more than two expected loads
 * of that model (FOREMAN_FAIR_SLACK) (the swap it costs, in the counters' GPU-ms): a flood on the loaded model cannot starve
 * it, and it cannot make the GPU swap for every job. Keys and groups are few: a seek per caller, and
 * per group for the callers behind.
 */
function fairPick(
  view: ClaimView,
  priority: number,
  pick: ClaimPick,
  callers: readonly WaitingCaller[],
  policy: ClaimPolicy,
  now: number,
): ClaimPick {
  const group = pick.modelKey;
  let served: { pick: ClaimPick; counter: number } | undefined;
  const behind: WaitingCaller[] = [];
  for (const caller of callers) {
    // Callers level with the served one: the oldest job among them (then callers are in counter order).
    if (served && caller.counter > served.counter) break;
    const own = view.fairOldest(caller.keyId, priority, group, now);
    if (!own) {
      if (!served) behind.push(caller);
      continue;
    }
    if (!served || own.id < served.pick.id) served = { pick: own, counter: caller.counter };
  }
  // Only callers without a counter have jobs here (queued before fair share counted them): as without it.
  if (!served) return pick;
  let cost: ((modelKey: string) => ExpectedCost) | undefined;
  let groups: string[] | undefined;
  for (const caller of behind) {
    groups ??= view
      .groupsAt(priority)
      .map((g) => g.modelKey)
      .filter((modelKey) => modelKey !== group && (!policy.eligible || policy.eligible(modelKey)));
    const other = groups
      .flatMap((modelKey) => view.fairOldest(caller.keyId, priority, modelKey, now) ?? [])
      .reduce<ClaimPick | undefined>((best, p) => (!best || p.id < best.id ? p : best), undefined);
    if (!other) continue;
    cost ??= policy.placement?.cost ?? expectedCosts(view.costs());
    const { loadMs } = cost(other.modelKey);
    if (served.counter - caller.counter <= (policy.fairSlackLoads ?? FAIR_SLACK_LOADS) * loadMs) continue;
    // Several targets: another that has the model loaded will reach it sooner than a load here.
    if (policy.placement?.leaveTo(other.modelKey, loadMs)) continue;
    return other;
  }
  return served.pick;
}

/** The starvation guard's pick: the oldest overdue job, of a key this target may claim. */
function oldestOverdue(view: ClaimView, priority: number, policy: ClaimPolicy, now: number): ClaimPick | undefined {
  const cutoff = now - policy.maxWaitMs;
  const overdue = view.oldestOverdue(priority, cutoff, now);
  const eligible = policy.eligible;
  if (!eligible || !overdue || eligible(overdue.modelKey)) return overdue;
  return eligibleGroups(view, priority, eligible)
    .flatMap((modelKey) => view.oldestOverdueForModel(priority, modelKey, cutoff, now) ?? [])
    .reduce<ClaimPick | undefined>(
      (best, pick) =>
        !best || pick.createdAt! < best.createdAt! || (pick.createdAt === best.createdAt && pick.id < best.id) ? pick : best,
      undefined,
    );
}

/** The model keys with jobs queued at this priority that `eligible` lets this target claim. */
function eligibleGroups(view: ClaimView, priority: number, eligible: (modelKey: string) => boolean): string[] {
  return view
    .groupsAt(priority)
    .map((g) => g.modelKey)
    .filter(eligible);
}

/**
 * The loaded model has nothing left at this priority: the oldest runnable job of the model key with
 * the most waiting work per expected cost (rankGroups). Runs only at a model change, and reads one
 * row per model key (the queued counts, the learned costs) plus one index seek per key.
 */
function cheapestGroup(view: ClaimView, priority: number, policy: ClaimPolicy, now: number): ClaimPick | typeof LEFT | undefined {
  const candidates = new Map<string, ClaimPick>();
  const groups: WaitingGroup[] = [];
  const { eligible, placement } = policy;
  for (const { modelKey, queued } of view.groupsAt(priority)) {
    if (eligible && !eligible(modelKey)) continue;
    const oldest = view.oldestForModel(priority, modelKey, now);
    if (!oldest) continue; // every job of it is backing off
    candidates.set(modelKey, oldest);
    groups.push({ modelKey, queued, oldestId: oldest.id });
  }
  if (!placement) {
    if (groups.length <= 1) return groups[0] && candidates.get(groups[0].modelKey);
    const best = rankGroups(groups, expectedCosts(view.costs()), policy.residentKeys)[0]!;
    return candidates.get(best.modelKey);
  }
  // Several targets: ranked on this target's costs, the groups only this target can run first (nobody
  // else will take them, while a shared group can still be split to fill another target's idle time);
  // a group another target holds and will reach sooner than a load here would take is left to it (none
  // of these is resident here: those went first).
  if (groups.length === 0) return undefined;
  const byRank = rankGroups(groups, placement.cost, policy.residentKeys);
  const ranked = [
    ...byRank.filter((g) => placement.exclusive(g.modelKey)),
    ...byRank.filter((g) => !placement.exclusive(g.modelKey)),
  ];
  const best = ranked.find((g) => !placement.leaveTo(g.modelKey, placement.cost(g.modelKey).loadMs));
  return best ? candidates.get(best.modelKey) : LEFT;
}
