import type { Placement } from "../queue/store";
import type { RunnerStore } from "../queue/runner-store";
import { type ExpectedCost, expectedCosts, targetCosts } from "../queue/model-costs";
import type { JobRunner } from "./runner";

/**
 * How a free runner weighs the groups that are not resident on its target, with several targets:
 *  - each group is ranked by the cost-aware rule (rankGroups) on *this* target's learned costs
 *    (per target and model key; a key it never ran costs what it costs anywhere), the groups that no
 *    other target (answering) has installed first: only this target will ever run them, while a
 *    shared group can be split later to keep both busy to the end;
 *  - a group another target has resident is left to it when that target's remaining work (the jobs
 *    of the key it is on, in flight and queued, at its run time over its slots; 0 when idle) is less
 *    than the load here: it will reach the group before a load here would even end.
 * Everything is read lazily: a claim that never reaches the group choice (its resident key had work)
 * reads nothing of it.
 */
export function placementFor(self: JobRunner, runners: readonly JobRunner[], store: RunnerStore): Placement {
  let anywhere: ((modelKey: string) => ExpectedCost) | undefined;
  const costsOn = new Map<JobRunner, (modelKey: string) => ExpectedCost>();
  const costOn = (runner: JobRunner) => {
    let cost = costsOn.get(runner);
    if (!cost) {
      anywhere ??= expectedCosts(store.costs.all());
      cost = targetCosts(store.costs.forTarget(runner.target.name), anywhere);
      costsOn.set(runner, cost);
    }
    return cost;
  };
  return {
    cost: (modelKey) => costOn(self)(modelKey),
    exclusive: (modelKey) => !runners.some((other) => other !== self && other.state.reachable && other.hasInstalled(modelKey)),
    leaveTo: (modelKey, loadMs) =>
      runners.some((other) => {
        if (other === self || !other.hasInstalled(modelKey)) return false;
        const state = other.state;
        if (!state.reachable || !state.residentKeys.includes(modelKey)) return false;
        return remainingWork(other, state, store, costOn(other)) < loadMs;
      }),
  };
}

/** The work `runner` has before it is free for another group: its current key's jobs, in flight and queued. */
function remainingWork(
  runner: JobRunner,
  state: JobRunner["state"],
  store: RunnerStore,
  cost: (modelKey: string) => ExpectedCost,
): number {
  if (state.busyKey === undefined) return 0;
  const jobs = state.inFlight + store.queuedOfKey(state.busyKey);
  return (jobs * cost(state.busyKey).runMs) / runner.target.slots;
}
