import type { Logger } from "../log";
import { type AnyJobListener, JobEventHub, type JobLink, type JobListener } from "./job-events";
import type { FromWorker, ToWorker, UpstreamErrorKind, WorkerSettings } from "./protocol";

/** Applies one worker message to the HTTP side; shared by the Worker bridge and the in-process link. */
export function applyWorkerMessage(
  hub: JobEventHub,
  message: FromWorker,
  hooks: {
    onUnreachable: (target: string | undefined) => void;
    onReady?: () => void;
    onStopped?: () => void;
    onAttemptFailed?: (kind: UpstreamErrorKind, retry: boolean, target: string | undefined) => void;
    onStorage?: (error: string | undefined) => void;
  },
): void {
  switch (message.type) {
    case "ready":
      return hooks.onReady?.();
    case "stopped":
      return hooks.onStopped?.();
    case "unreachable":
      return hooks.onUnreachable(message.target);
    case "state":
      return hub.emit(message.jobId, { type: "state", state: message.state, contentType: message.contentType });
    case "chunk":
      if (message.contentType !== undefined)
        hub.emit(message.jobId, { type: "state", state: "working", contentType: message.contentType });
      return hub.emit(message.jobId, { type: "chunk", bytes: message.bytes });
    case "ended":
      return hub.jobEnded(message.jobId);
    case "attempt-failed":
      return hooks.onAttemptFailed?.(message.kind, message.retry, message.target);
    case "storage":
      return hooks.onStorage?.(message.error);
  }
}

/**
 * The HTTP thread's side of the worker: spawns it, forwards wake/cancel/inventory, and fans the
 * worker's messages out to whoever listens to a job (a waiting client, an SSE stream).
 */
export class WorkerBridge implements JobLink {
  readonly #worker: Worker;
  readonly #stopped: Promise<void>;
  readonly hub: JobEventHub;
  readonly ready: Promise<void>;
  /** Called when the worker hit a connection error on a target, so its inventory re-polls at once. */
  onUnreachable: (target: string | undefined) => void = () => {};
  /** Called when an attempt failed upstream (its kind, whether the job will be tried again, the target). */
  onAttemptFailed: (kind: UpstreamErrorKind, retry: boolean, target: string | undefined) => void = () => {};
  /** Called when the worker's pending write fails for space (`error`) or has landed (undefined). */
  onStorage: (error: string | undefined) => void = () => {};

  /** `workerUrl` is src/worker/index.ts, which `bun build --compile` must be given as a second entry point. */
  constructor(workerUrl: string, settings: WorkerSettings, log: Logger) {
    this.hub = new JobEventHub(log);
    this.#worker = new Worker(workerUrl);
    let resolveReady!: () => void;
    let resolveStopped!: () => void;
    this.ready = new Promise((resolve) => (resolveReady = resolve));
    this.#stopped = new Promise((resolve) => (resolveStopped = resolve));
    const hooks = {
      onUnreachable: (target: string | undefined) => this.onUnreachable(target),
      onAttemptFailed: (kind: UpstreamErrorKind, retry: boolean, target: string | undefined) =>
        this.onAttemptFailed(kind, retry, target),
      onStorage: (error: string | undefined) => this.onStorage(error),
      onReady: resolveReady,
      onStopped: resolveStopped,
    };
    this.#worker.onmessage = (event: MessageEvent<FromWorker>) => applyWorkerMessage(this.hub, event.data, hooks);
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

  subscribe(jobId: string, listener: JobListener): () => void {
    return this.hub.subscribe(jobId, listener);
  }

  subscribeAll(listener: AnyJobListener): () => void {
    return this.hub.subscribeAll(listener);
  }

  jobEnded(jobId: string): void {
    this.hub.jobEnded(jobId);
  }

  wake(): void {
    this.#send({ type: "wake" });
  }

  cancel(jobId: string): void {
    this.#send({ type: "cancel", jobId });
  }

  clientGone(jobId: string): void {
    this.#send({ type: "client-gone", jobId });
  }

  setInventory(residentKeys: string[], reachable: boolean, target?: string, installed?: string[]): void {
    this.#send({ type: "inventory", residentKeys, reachable, target, installed });
  }

  /** Asks the loop to stop (the running job gets graceMs) and resolves once it has. */
  async shutdown(graceMs: number): Promise<void> {
    this.#send({ type: "shutdown", graceMs });
    await this.#stopped;
    this.#worker.terminate();
  }
}
