// A ClaimView over plain arrays, written from the interface's doc comments alone (src/queue/claim-view.ts),
// not from either store's SQL: the reference each engine's view is checked against (claim-rules.test.ts).
// Every read is a scan; clarity over speed.
import type { ClaimPick, ClaimView } from "../../src/queue/claim-view";
import type { WaitingCaller } from "../../src/queue/fair-share";
import type { JobSource, JobState } from "../../src/queue/job-states";
import type { ModelCost } from "../../src/queue/model-costs";

/** A job as the claim's rules see it. */
export interface MemoryJob {
  id: string;
  modelKey: string;
  priority: number;
  createdAt: number;
  runAfter: number;
  source: JobSource;
  /** The caller; null for the anonymous one. */
  keyId: string | null;
  state: JobState;
}

/** The queue, the callers' counters and the learned costs, as a store would hold them. */
export interface MemoryQueue {
  jobs: MemoryJob[];
  /** Fair share's setting is on and keys exist. */
  fairActive: boolean;
  /** Each counted caller's service received (null: the anonymous caller); a caller without one is not counted. */
  counters: Map<string | null, number>;
  costs: Map<string, ModelCost>;
}

/** The order of ids (ULIDs sort by age), of callers' key ids (the anonymous caller as the empty key), of times. */
const compare = (a: string | number, b: string | number) => (a < b ? -1 : a > b ? 1 : 0);
const callerKey = (keyId: string | null) => keyId ?? "";

/** The first of `jobs` in the order `cmp` gives, as a pick (createdAt set), or undefined. */
function first(jobs: MemoryJob[], cmp: (a: MemoryJob, b: MemoryJob) => number): ClaimPick | undefined {
  const best = jobs.reduce<MemoryJob | undefined>((best, job) => (!best || cmp(job, best) < 0 ? job : best), undefined);
  return best && { id: best.id, modelKey: best.modelKey, createdAt: best.createdAt };
}

const byId = (a: MemoryJob, b: MemoryJob) => compare(a.id, b.id);
const byAge = (a: MemoryJob, b: MemoryJob) => compare(a.createdAt, b.createdAt) || compare(a.id, b.id);

export function memoryClaimView(queue: MemoryQueue): ClaimView {
  const queued = () => queue.jobs.filter((job) => job.state === "queued");
  /** "Runnable" means queued with run_after <= now. */
  const runnable = (priority: number, now: number) => queued().filter((job) => job.priority === priority && job.runAfter <= now);
  /** The starvation guard's jobs: runnable, created before the cutoff, never a batch line. */
  const overdue = (priority: number, cutoff: number, now: number) =>
    runnable(priority, now).filter((job) => job.createdAt < cutoff && job.source !== "batch");
  const highest = (priorities: number[]) => (priorities.length ? Math.max(...priorities) : null);

  return {
    topPriority: () => highest(queued().map((job) => job.priority)),
    nextPriorityBelow: (priority) => highest(queued().flatMap((job) => (job.priority < priority ? [job.priority] : []))),
    oldest: (priority, now) => first(runnable(priority, now), byId),
    oldestForModel: (priority, modelKey, now) =>
      first(
        runnable(priority, now).filter((job) => job.modelKey === modelKey),
        byId,
      ),
    oldestOverdue: (priority, cutoff, now) => first(overdue(priority, cutoff, now), byAge),
    oldestOverdueForModel: (priority, modelKey, cutoff, now) =>
      first(
        overdue(priority, cutoff, now).filter((job) => job.modelKey === modelKey),
        byAge,
      ),
    groupsAt: (priority) => {
      const counts = new Map<string, number>();
      for (const job of queued()) if (job.priority === priority) counts.set(job.modelKey, (counts.get(job.modelKey) ?? 0) + 1);
      return [...counts].map(([modelKey, n]) => ({ modelKey, queued: n }));
    },
    fairActive: () => queue.fairActive,
    fairWaiting: (priority): WaitingCaller[] =>
      [...queue.counters]
        .filter(([keyId]) => queued().some((job) => job.keyId === keyId && job.priority === priority))
        .map(([keyId, counter]) => ({ keyId, counter }))
        .sort((a, b) => compare(a.counter, b.counter) || compare(callerKey(a.keyId), callerKey(b.keyId))),
    fairOldest: (keyId, priority, modelKey, now) =>
      first(
        runnable(priority, now).filter((job) => job.keyId === keyId && job.modelKey === modelKey),
        byId,
      ),
    costs: () => new Map(queue.costs),
  };
}
