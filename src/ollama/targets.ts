import type { OllamaTarget } from "../config";
import type { Logger } from "../log";
import { OllamaClient } from "./client";
import { type InventorySnapshot, type ModelEntry, ModelInventory } from "./inventory";
import { normalizeModel } from "./model-key";

/** One target as the HTTP side knows it: its settings, its client (direct proxies) and its inventory. */
export interface TargetView {
  target: OllamaTarget;
  client: OllamaClient;
  inventory: ModelInventory;
}

/**
 * The inventory of every target, read as one: installed models the union (one entry per name),
 * resident models the union with each entry's `target` (an extra field Ollama's clients ignore),
 * degraded only while no target answers. With one target it is that target's inventory, answers
 * unchanged (no `target` field). Each target polls on its own, so one that stops answering is degraded
 * alone and rejoins at its next poll (every second while degraded).
 */
export class TargetInventory {
  readonly targets: TargetView[];
  readonly #listeners = new Set<(snapshot: InventorySnapshot) => void>();
  readonly #targetListeners = new Set<(view: TargetView) => void>();
  #snapshot: InventorySnapshot;

  constructor(targets: readonly OllamaTarget[], intervalMs: number, log: Logger) {
    this.targets = targets.map((target) => {
      const client = new OllamaClient({ baseUrl: target.url, token: target.token });
      return { target, client, inventory: new ModelInventory(client, intervalMs, log) };
    });
    this.#snapshot = this.#union();
    for (const view of this.targets) {
      view.inventory.onChange(() => {
        this.#snapshot = this.#union();
        for (const listener of this.#targetListeners) listener(view);
        for (const listener of this.#listeners) listener(this.#snapshot);
      });
    }
  }

  /** Several targets behind the queue (answers gain a `target` where they name a host). */
  get several(): boolean {
    return this.targets.length > 1;
  }

  /** Calls `listener` after every poll of any target with the union; returns the unsubscribe function. */
  onChange(listener: (snapshot: InventorySnapshot) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Calls `listener` with the target whose poll just ended. */
  onTargetChange(listener: (view: TargetView) => void): () => void {
    this.#targetListeners.add(listener);
    return () => this.#targetListeners.delete(listener);
  }

  get snapshot(): InventorySnapshot {
    return this.#snapshot;
  }

  #union(): InventorySnapshot {
    if (this.targets.length === 1) return this.targets[0]!.inventory.snapshot;
    const models = new Map<string, ModelEntry>();
    const running: ModelEntry[] = [];
    for (const { target, inventory } of this.targets) {
      const snapshot = inventory.snapshot;
      // A target that does not answer keeps its last list, as one Ollama does: its jobs wait for it.
      for (const entry of snapshot.models) {
        const name = normalizeModel(entry.name);
        if (!models.has(name)) models.set(name, entry);
      }
      // But it serves nothing now.
      if (snapshot.degraded) continue;
      for (const entry of snapshot.running) running.push({ ...entry, target: target.name });
    }
    const snapshots = this.targets.map((t) => t.inventory.snapshot);
    return {
      models: [...models.values()],
      running,
      degraded: snapshots.every((s) => s.degraded),
      updatedAt: Math.max(...snapshots.map((s) => s.updatedAt)),
    };
  }

  /** Polls every target now and then each on its own interval; resolves after each one's first poll. */
  async start(): Promise<void> {
    await Promise.all(this.targets.map((t) => t.inventory.start()));
  }

  stop(): void {
    for (const t of this.targets) t.inventory.stop();
  }

  /** Polls the target named now (absent: every target); resolves with the union after. */
  async refresh(target?: string): Promise<InventorySnapshot> {
    await Promise.all(
      this.targets.filter((t) => target === undefined || t.target.name === target).map((t) => t.inventory.refresh()),
    );
    return this.#snapshot;
  }

  /** Re-reads /api/ps of every target (a job just ended). */
  refreshRunning(): void {
    for (const t of this.targets) t.inventory.refreshRunning();
  }

  /** True when a target lists the model (a degraded one by its last list: the job waits for it). */
  has(model: string): boolean {
    return this.targets.some((t) => t.inventory.has(model));
  }

  /**
   * Is the model known anywhere, after one re-poll on a miss? 404 only when no target has it. Before any
   * target has answered once there is nothing to check against: the job is accepted and waits.
   */
  async knows(model: string): Promise<boolean> {
    if (this.targets.length === 1) return this.targets[0]!.inventory.knows(model);
    if (this.has(model)) return true;
    await this.refresh();
    return this.has(model) || this.targets.every((t) => t.inventory.snapshot.updatedAt === 0);
  }

  /** Model keys resident anywhere (one target: its /api/ps). */
  residentKeys(): string[] {
    return [...new Set(this.targets.flatMap((t) => t.inventory.residentKeys()))];
  }

  /**
   * Where a direct proxy for `model` goes: a target that answers and has it resident, else one that has
   * it installed, else the first that answers (which answers a missing model itself), else the first.
   * Among equals, `spread` (a counter) takes turns, so embeddings are spread over the targets.
   */
  pick(model: string | undefined, spread = 0): TargetView {
    const up = this.targets.filter((t) => !t.inventory.snapshot.degraded);
    if (model && this.targets.length > 1) {
      const wanted = normalizeModel(model);
      const resident = up.filter((t) => t.inventory.residentKeys().some((k) => k.split(" ")[0] === wanted));
      const installed = up.filter((t) => t.inventory.has(model));
      for (const choice of [resident, installed]) if (choice.length) return choice[spread % choice.length]!;
    }
    return up[0] ?? this.targets[0]!;
  }
}
