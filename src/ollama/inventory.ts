import type { Logger } from "../log";
import { normalizeModel } from "./model-key";
import type { OllamaClient } from "./client";

/** One entry of /api/tags or /api/ps, as Ollama sends it (other fields kept as they are). */
export interface ModelEntry {
  name: string;
  model?: string;
  [field: string]: unknown;
}

/** A snapshot of what Ollama has and holds in memory. */
export interface InventorySnapshot {
  /** The /api/tags list, last known. */
  models: ModelEntry[];
  /** The /api/ps list, last known. */
  running: ModelEntry[];
  /** True while the last poll could not reach Ollama. */
  degraded: boolean;
  /** Epoch ms of the last successful poll, 0 before the first. */
  updatedAt: number;
}

/** How often a degraded inventory polls, so the queue resumes within about this long of Ollama's return. */
export const DEGRADED_POLL_MS = 1000;

/**
 * The model inventory: polls /api/tags and /api/ps every `intervalMs`. When Ollama is unreachable it
 * keeps the last known lists, sets `degraded`, and polls every second until a poll succeeds.
 */
export class ModelInventory {
  #snapshot: InventorySnapshot = { models: [], running: [], degraded: false, updatedAt: 0 };
  #timer: Timer | undefined;
  #polling = false;
  #inFlight: Promise<InventorySnapshot> | undefined;
  #runningRead: Promise<void> | undefined;
  #runningReadAgain = false;
  readonly #client: OllamaClient;
  readonly #intervalMs: number;
  readonly #log: Logger;
  readonly #listeners = new Set<(snapshot: InventorySnapshot) => void>();

  constructor(client: OllamaClient, intervalMs: number, log: Logger) {
    this.#client = client;
    this.#intervalMs = intervalMs;
    this.#log = log;
  }

  /** Calls `listener` after every poll with the new snapshot; returns the unsubscribe function. */
  onChange(listener: (snapshot: InventorySnapshot) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  #notify(): void {
    for (const listener of this.#listeners) listener(this.#snapshot);
  }

  get snapshot(): InventorySnapshot {
    return this.#snapshot;
  }

  /** Polls now and then every interval (every second while degraded). Resolves after the first poll. */
  async start(): Promise<void> {
    this.#polling = true;
    await this.refresh();
  }

  stop(): void {
    this.#polling = false;
    clearTimeout(this.#timer);
  }

  /** Counts the next poll from this one, any poll: a re-poll asked for by the worker also resets it. */
  #scheduleNext(): void {
    clearTimeout(this.#timer);
    if (!this.#polling) return;
    const delay = this.#snapshot.degraded ? Math.min(DEGRADED_POLL_MS, this.#intervalMs) : this.#intervalMs;
    this.#timer = setTimeout(() => void this.refresh(), delay);
  }

  /** Polls now; concurrent callers share one poll. */
  refresh(): Promise<InventorySnapshot> {
    this.#inFlight ??= this.#poll().finally(() => (this.#inFlight = undefined));
    return this.#inFlight;
  }

  /**
   * Re-reads /api/ps alone (a job just ended, perhaps on another model), so /api/ps and /queue show
   * what the GPU holds now rather than at the last poll. Calls coalesce: one read in flight, one more after.
   */
  refreshRunning(): void {
    if (this.#runningRead) {
      this.#runningReadAgain = true;
      return;
    }
    this.#runningRead = (async () => {
      do {
        this.#runningReadAgain = false;
        try {
          const ps = await this.#client.getJson<{ models?: ModelEntry[] }>("/api/ps", AbortSignal.timeout(5_000));
          this.#snapshot = { ...this.#snapshot, running: ps.models ?? [] };
          this.#notify();
        } catch {
          // The regular poll notices an outage and says so; this read only freshens the list.
        }
      } while (this.#runningReadAgain);
    })().finally(() => (this.#runningRead = undefined));
  }

  async #poll(): Promise<InventorySnapshot> {
    const signal = AbortSignal.timeout(Math.max(5_000, Math.min(this.#intervalMs, 30_000)));
    try {
      const [tags, ps] = await Promise.all([
        this.#client.getJson<{ models?: ModelEntry[] }>("/api/tags", signal),
        this.#client.getJson<{ models?: ModelEntry[] }>("/api/ps", signal),
      ]);
      if (this.#snapshot.degraded) this.#log.info("ollama reachable again", { url: this.#client.baseUrl });
      this.#snapshot = { models: tags.models ?? [], running: ps.models ?? [], degraded: false, updatedAt: Date.now() };
    } catch (error) {
      if (!this.#snapshot.degraded) this.#log.warn("ollama unreachable: degraded", { url: this.#client.baseUrl, error });
      this.#snapshot = { ...this.#snapshot, degraded: true };
    }
    this.#scheduleNext();
    this.#notify();
    return this.#snapshot;
  }

  /** True when Ollama lists the model; a name without a tag means `:latest`. */
  has(model: string): boolean {
    const wanted = normalizeModel(model);
    return this.#snapshot.models.some(
      (entry) => normalizeModel(entry.name) === wanted || normalizeModel(entry.model ?? "") === wanted,
    );
  }

  /**
   * Is the model known, after one re-poll on a miss (it may have just been pulled)? Before Ollama has
   * answered even once there is nothing to check against: the job is accepted, and waits for Ollama,
   * which says 404 itself if the model is missing.
   */
  async knows(model: string): Promise<boolean> {
    if (this.has(model)) return true;
    await this.refresh();
    return this.has(model) || this.#snapshot.updatedAt === 0;
  }

  /** Model keys Ollama has loaded, per /api/ps. */
  residentKeys(): string[] {
    return this.#snapshot.running.map((entry) => normalizeModel(entry.model ?? entry.name));
  }
}
