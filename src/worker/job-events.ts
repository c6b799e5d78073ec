import type { Logger } from "../log";
import type { JobState } from "../queue/job-states";

/** What a job's listeners hear, in order: state changes, streamed records, then one end (read the row for how). */
export type JobEvent =
  | { type: "state"; state: JobState; contentType?: string }
  | { type: "chunk"; bytes: Uint8Array }
  /**
   * The records from here on do not come to this node (relayed from the node running the job, which kept no
   * more for it): the job's stored stream has them once it ends.
   */
  | { type: "gap" }
  | { type: "ended" };

export type JobListener = (event: JobEvent) => void;

/** Hears every job's events (the dashboard's live feed). */
export type AnyJobListener = (jobId: string, event: JobEvent) => void;

/** The few things the HTTP side asks of the job loop, wherever it runs (a Worker, or this thread in tests). */
export interface JobLink {
  /** Listens to one job's events until the returned function is called. */
  subscribe(jobId: string, listener: JobListener): () => void;
  /** Listens to every job's events until the returned function is called. */
  subscribeAll(listener: AnyJobListener): () => void;
  /** Tells everyone a job ended (its row says how): listeners, and the webhook dispatcher. */
  jobEnded(jobId: string): void;
  /** A job was queued: look for work. */
  wake(): void;
  /** The job was canceled in the database: abort its upstream call if it runs. */
  cancel(jobId: string): void;
  /**
   * The job's waiting client hung up; its cancel follows with others (JobService.hungUp). Told at once,
   * so the loop never sends it in between.
   */
  clientGone(jobId: string): void;
}

/** Fans a job's events out to whoever listens to it (a waiting client, an SSE stream). */
export class JobEventHub {
  readonly #listeners = new Map<string, Set<JobListener>>();
  readonly #anyListeners = new Set<AnyJobListener>();
  readonly #log: Logger;
  /** Called whenever a job ends, from either thread's doing (webhook delivery hooks in here). */
  onJobEnded: (jobId: string) => void = () => {};

  constructor(log: Logger) {
    this.#log = log;
  }

  subscribe(jobId: string, listener: JobListener): () => void {
    let set = this.#listeners.get(jobId);
    if (!set) this.#listeners.set(jobId, (set = new Set()));
    set.add(listener);
    return () => {
      set.delete(listener);
      if (set.size === 0 && this.#listeners.get(jobId) === set) this.#listeners.delete(jobId);
    };
  }

  subscribeAll(listener: AnyJobListener): () => void {
    this.#anyListeners.add(listener);
    return () => void this.#anyListeners.delete(listener);
  }

  emit(jobId: string, event: JobEvent): void {
    for (const listener of this.#anyListeners) this.#call(jobId, () => listener(jobId, event));
    const set = this.#listeners.get(jobId);
    if (!set) return;
    for (const listener of [...set]) this.#call(jobId, () => listener(event));
  }

  #call(jobId: string, fn: () => void): void {
    try {
      fn();
    } catch (error) {
      this.#log.error("job listener failed", { job: jobId, error });
    }
  }

  /** The jobs someone here listens to (a waiting client, an SSE stream): what a node re-checks after missing news. */
  watched(): string[] {
    return [...this.#listeners.keys()];
  }

  /** Whether anyone here listens to the job. */
  isWatched(jobId: string): boolean {
    return this.#listeners.has(jobId);
  }

  /** The one way a job's end is announced, whichever thread ended it. */
  jobEnded(jobId: string): void {
    this.onJobEnded(jobId);
    this.emit(jobId, { type: "ended" });
  }
}
