import type { ArtifactInput } from "../artifacts";
import type { ClaimPolicy } from "../claim-rules";
import type { JobRow } from "../job-row";
import type { JobState } from "../job-states";
import type { ModelCost, TargetCost } from "../model-costs";
import type { RunnerStore } from "../runner-store";
import type { JobUsage } from "../store";
import type { Fence, PgJobStore } from "./job-store";

/** How often the placement's copies of the learned costs and the queue's per-key counts are read again. */
const REFRESH_MS = 1000;

/**
 * The job loop's store on PostgreSQL: RunnerStore over PgJobStore for one node, which runs only the targets
 * it holds a lease on (`fence(target)`: the lease's token, or null while it holds none). Every write a runner
 * makes carries the fence of the target the job was claimed on, so once the lease is lost (another node took
 * the target over) nothing this node writes for those jobs changes anything: the new owner re-queued them.
 *
 * The runner speaks in this node's wall clock (run_after, prune cutoffs); the queue keeps the database's
 * clock (PgJobStore), so instants are turned into durations here. Placement's synchronous reads (`costs`,
 * overall and per target, and `queuedOfKey`) answer from copies refreshed at most every second: they steer the
 * choice between targets, while the claim itself reads the queue fresh.
 */
export class PgRunnerStore implements RunnerStore {
  readonly #pg: PgJobStore;
  readonly #fence: (target: string) => Fence | null;
  /** The fence each running job was claimed under: its ends must present that one, not a later token. */
  readonly #claimedUnder = new Map<string, Fence>();
  #costs = new Map<string, ModelCost>();
  #targetCosts = new Map<string, Map<string, TargetCost>>();
  #queuedByKey = new Map<string, number>();
  #refreshedAt = 0;
  #refreshing: Promise<void> | undefined;

  readonly costs: { all(): Map<string, ModelCost>; forTarget(target: string): Map<string, TargetCost>; perTarget: boolean };

  constructor(pg: PgJobStore, fence: (target: string) => Fence | null) {
    this.#pg = pg;
    this.#fence = fence;
    this.costs = {
      all: () => this.#costs,
      // A target that has run none of the keys yet: placement falls back to the keys' costs anywhere.
      forTarget: (target) => this.#targetCosts.get(target) ?? new Map(),
      // ModelCosts' switch, set by the worker when this node runs several targets: the store's ends learn per target.
      get perTarget() {
        return pg.costs.perTarget;
      },
      set perTarget(on: boolean) {
        pg.costs.perTarget = on;
      },
    };
  }

  /**
   * Recovery happens per target when its lease is taken (see {@link recoverTargets}), not once at start: at
   * start this node holds no lease, and another node's running jobs are not this node's to touch.
   */
  recoverInterruptedJobs(): { requeued: JobRow[]; failed: JobRow[]; canceled: JobRow[] } {
    return { requeued: [], failed: [], canceled: [] };
  }

  /** A lease was just taken: the jobs a previous holder left running on those targets go back to the queue. */
  recoverTargets(
    fences: readonly Fence[],
    waiterAliveWithinMs?: number,
  ): Promise<{ requeued: JobRow[]; failed: JobRow[]; canceled: JobRow[] }> {
    return this.#pg.recoverInterruptedJobs(fences, waiterAliveWithinMs);
  }

  async claimNextJob(policy: ClaimPolicy): Promise<JobRow | null> {
    const target = policy.target;
    if (target == null) throw new Error("a claim on PostgreSQL names its target (the lease it runs under)");
    const fence = this.#fence(target);
    if (!fence) return null;
    this.#refreshSoon();
    const job = await this.#pg.claimNextJob(policy, fence);
    if (job) this.#claimedUnder.set(job.id, fence);
    return job;
  }

  markWorking(id: string): Promise<JobRow | null> {
    const fence = this.#claimedUnder.get(id);
    return fence ? this.#pg.markWorking(id, fence) : Promise.resolve(null);
  }

  finishJob(id: string, result: string, artifacts: readonly ArtifactInput[], usage?: JobUsage): Promise<JobRow | null> {
    return this.#end(id, (fence) => this.#pg.finishJob(id, fence, result, usage, artifacts));
  }

  failJob(id: string, error: string, status: number | null, artifacts: readonly ArtifactInput[] = []): Promise<JobRow | null> {
    return this.#end(id, (fence) => this.#pg.failJob(id, fence, error, status, artifacts));
  }

  /** A runner's cancel (its client hung up): under the claim's fence when it ran; a queued job's as the client's. */
  cancelJob(id: string, reason: { error: string; status: number }): Promise<JobRow | null> {
    const fence = this.#claimedUnder.get(id);
    this.#claimedUnder.delete(id);
    return this.#pg.cancelJob(id, reason, fence);
  }

  requeueJob(
    id: string,
    runAfter: number,
    error: string | null,
    status: number | null,
    refundAttempt?: boolean,
  ): Promise<JobRow | null> {
    return this.#end(id, (fence) => this.#pg.requeueJob(id, fence, runAfter - Date.now(), error, status, refundAttempt));
  }

  jobState(id: string): Promise<JobState | null> {
    return this.#pg.jobState(id);
  }

  /** In this node's clock: now plus how long the database says the earliest queued job still backs off. */
  async nextRunAfter(): Promise<number | null> {
    const inMs = await this.#pg.nextRunIn();
    return inMs === null ? null : Date.now() + inMs;
  }

  pruneFinishedJobs(before: number): Promise<number> {
    return this.#pg.pruneFinishedJobs(Date.now() - before);
  }

  queuedOfKey(modelKey: string): number {
    this.#refreshSoon();
    return this.#queuedByKey.get(modelKey) ?? 0;
  }

  /** The jobs this node runs on `target` (claimed and not ended): what to abort when its lease is lost. */
  runningOn(target: string): string[] {
    return [...this.#claimedUnder].flatMap(([id, fence]) => (fence.target === target ? [id] : []));
  }

  /** Read the refreshed copies now (tests; a node after taking a lease). */
  refresh(): Promise<void> {
    this.#refreshing ??= (async () => {
      try {
        const { costs, targetCosts, queuedByKey } = await this.#pg.placementView();
        this.#costs = costs;
        this.#targetCosts = targetCosts;
        this.#queuedByKey = queuedByKey;
        this.#refreshedAt = performance.now();
      } finally {
        this.#refreshing = undefined;
      }
    })();
    return this.#refreshing;
  }

  #refreshSoon(): void {
    if (performance.now() - this.#refreshedAt < REFRESH_MS || this.#refreshing) return;
    this.refresh().catch(() => {});
  }

  async #end(id: string, write: (fence: Fence) => Promise<JobRow | null>): Promise<JobRow | null> {
    const fence = this.#claimedUnder.get(id);
    if (!fence) return null;
    this.#claimedUnder.delete(id);
    return write(fence);
  }
}
