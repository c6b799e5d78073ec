import type { Logger } from "../log";
import type { JobState } from "../queue/store";
import type { FromWorker, ToWorker, WorkerSettings } from "./protocol";

/** What a job's listeners hear, in order: state changes, streamed lines, then one end. */
export type JobEvent =
  | { type: "state"; state: JobState; contentType?: string }
  | { type: "chunk"; bytes: Uint8Array }
  | { type: "ended"; state: "done" | "failed" | "canceled"; status: number | null; error: string | null };

type Listener = (event: JobEvent) => void;

/**
 * The HTTP thread's side of the worker: spawns it, forwards wake/cancel/inventory, and fans the
 * worker's messages out to whoever listens to a job (a waiting /api/chat response, an SSE stream).
 */
export class WorkerBridge {
  readonly #worker: Worker;
  readonly #listeners = new Map<string, Set<Listener>>();
  readonly #log: Logger;
  readonly #stopped: Promise<void>;
  readonly ready: Promise<void>;
  /** Called when the worker hit a connection error, so the inventory re-polls at once. */
  onUnreachable: () => void = () => {};
  /** Called when the worker ended a job (webhook deliveries wait on this). */
  onJobEnded: () => void = () => {};

  /** `workerUrl` is src/worker/index.ts, which `bun build --compile` must be given as a second entry point. */
  constructor(workerUrl: string, settings: WorkerSettings, log: Logger) {
    this.#log = log;
    this.#worker = new Worker(workerUrl);
    let resolveReady!: () => void;
    let resolveStopped!: () => void;
    this.ready = new Promise((resolve) => (resolveReady = resolve));
    this.#stopped = new Promise((resolve) => (resolveStopped = resolve));
    this.#worker.onmessage = (event: MessageEvent<FromWorker>) => {
      const message = event.data;
      switch (message.type) {
        case "ready":
          resolveReady();
          break;
        case "stopped":
          resolveStopped();
          break;
        case "unreachable":
          this.onUnreachable();
          break;
        case "state":
          this.emit(message.jobId, { type: "state", state: message.state, contentType: message.contentType });
          break;
        case "chunk":
          this.emit(message.jobId, { type: "chunk", bytes: message.bytes });
          break;
        case "ended":
          this.onJobEnded();
          this.emit(message.jobId, { type: "ended", state: message.state, status: message.status, error: message.error });
          break;
      }
    };
    // A worker that fails to load (missing from a build) shows up only here: say so loudly.
    this.#worker.addEventListener("error", (event) => {
      log.error("worker thread error", { error: (event as ErrorEvent).message });
    });
    this.#worker.addEventListener("close", () => resolveStopped());
    this.#send({ type: "init", settings });
  }

  #send(message: ToWorker): void {
    this.#worker.postMessage(message);
  }

  /** Listens to one job's events until `unsubscribe` is called. */
  subscribe(jobId: string, listener: Listener): () => void {
    let set = this.#listeners.get(jobId);
    if (!set) this.#listeners.set(jobId, (set = new Set()));
    set.add(listener);
    return () => {
      set.delete(listener);
      if (set.size === 0) this.#listeners.delete(jobId);
    };
  }

  /** Delivers an event to a job's listeners; the HTTP thread uses it too (a cancel ends a job here). */
  emit(jobId: string, event: JobEvent): void {
    const set = this.#listeners.get(jobId);
    if (!set) return;
    for (const listener of [...set]) {
      try {
        listener(event);
      } catch (error) {
        this.#log.error("job listener failed", { job: jobId, error });
      }
    }
  }

  wake(): void {
    this.#send({ type: "wake" });
  }

  cancel(jobId: string): void {
    this.#send({ type: "cancel", jobId });
  }

  setInventory(residentKeys: string[], reachable: boolean): void {
    this.#send({ type: "inventory", residentKeys, reachable });
  }

  /** Asks the loop to stop (the running job gets graceMs) and resolves once it has. */
  async shutdown(graceMs: number): Promise<void> {
    this.#send({ type: "shutdown", graceMs });
    await this.#stopped;
    this.#worker.terminate();
  }
}
