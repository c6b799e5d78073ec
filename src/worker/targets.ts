import type { Logger } from "../log";
import type { ModelCosts } from "../queue/model-costs";
import type { RunnerStore } from "../queue/runner-store";
import type { FromWorker, ToWorker, WorkerSettings } from "./protocol";
import { JobRunner, RunnerGroup } from "./runner";

/**
 * One runner per Ollama target, in this one worker thread over its one database connection. Several
 * loops in one thread rather than a Worker per target: a runner spends its time awaiting Ollama, so one
 * thread serves many; every claim is then a synchronous transaction on one connection, never two
 * threads contending for SQLite's write lock (SQLITE_BUSY, busy_timeout waits) at each job's end; and
 * the runners read each other's state (resident keys, the key in flight) for placement directly rather
 * than by message. The claim stays atomic in the database all the same (IMMEDIATE, `state = 'queued'`).
 * An async store (its answers Promises) is served the same way: the runners then claim one at a time.
 */
export class TargetRunners {
  readonly group = new RunnerGroup();
  readonly runners: JobRunner[];

  /** `store`: JobStore, or any store the runners can run on whose costs learn per target when told. */
  constructor(
    store: RunnerStore & { readonly costs: Pick<ModelCosts, "perTarget"> },
    settings: WorkerSettings,
    post: (message: FromWorker) => void,
    log: Logger,
  ) {
    this.runners = settings.targets.map((target) => new JobRunner(store, settings, post, log, { target, group: this.group }));
    store.costs.perTarget = this.group.several;
  }

  /** Crash recovery once (by the first runner), then `onRecovered`, then every runner's loops; resolves when all stopped. */
  async run(onRecovered: () => void = () => {}): Promise<void> {
    const [first, ...others] = this.runners;
    let started!: () => void;
    const recovered = new Promise<void>((resolve) => (started = resolve));
    await Promise.all([
      first!.run(() => {
        onRecovered();
        started();
      }),
      ...others.map(async (runner) => {
        await recovered;
        await runner.run(() => {}, { recover: false });
      }),
    ]);
  }

  /** The runner of the target named (absent: the first). */
  runner(target: string | undefined): JobRunner | undefined {
    return target === undefined ? this.runners[0] : this.runners.find((r) => r.target.name === target);
  }

  /** Applies one message from the HTTP thread (all but init). */
  handle(message: Exclude<ToWorker, { type: "init" }>): void {
    switch (message.type) {
      case "wake":
        return this.group.wakeAll();
      case "inventory":
        return this.runner(message.target)?.setInventory(message.residentKeys, message.reachable, message.installed);
      case "cancel":
        for (const runner of this.runners) runner.cancel(message.jobId);
        return;
      case "client-gone":
        // One set for the group: whichever runner claims the job sees it.
        return this.runners[0]?.clientGone(message.jobId);
      case "shutdown":
        for (const runner of this.runners) runner.shutdown(message.graceMs);
        return;
    }
  }
}
