import type { WaitingCaller } from "./fair-share";
import type { ModelCost } from "./model-costs";

/** A claim candidate: its id and the model it needs loaded (and, for the starvation guard's scan, its age). */
export type ClaimPick = { id: string; modelKey: string; createdAt?: number };

/**
 * What the claim's rules (claim-rules.ts: priorities, the starvation guard, drain-by-model, fair share,
 * placement) read of the queue, and nothing else. Every read is synchronous: the SQLite store answers each
 * with an index seek inside its IMMEDIATE claim transaction; a store on a server (PostgreSQL) answers from
 * a snapshot it read in one round trip, then marks the pick with a conditional UPDATE. So the rules are one
 * code on both engines. "Runnable" means queued with run_after <= now.
 */
export interface ClaimView {
  /** The highest priority with a queued job (runnable or not), or null when none is queued. */
  topPriority(): number | null;
  /** The highest priority below `priority` with a queued job, or null. */
  nextPriorityBelow(priority: number): number | null;
  /** The oldest (by id) runnable job at this priority. */
  oldest(priority: number, now: number): ClaimPick | undefined;
  /** The oldest (by id) runnable job of one model key at this priority. */
  oldestForModel(priority: number, modelKey: string, now: number): ClaimPick | undefined;
  /**
   * The starvation guard's pick: the oldest by (created_at, id) runnable job at this priority created
   * before `cutoff`, never a batch line; with createdAt set.
   */
  oldestOverdue(priority: number, cutoff: number, now: number): ClaimPick | undefined;
  /** As oldestOverdue, within one model key. */
  oldestOverdueForModel(priority: number, modelKey: string, cutoff: number, now: number): ClaimPick | undefined;
  /** The model keys with jobs queued at this priority (runnable or not) and how many. */
  groupsAt(priority: number): { modelKey: string; queued: number }[];
  /** Fair share applies: the setting is on and keys exist. */
  fairActive(): boolean;
  /**
   * Callers with jobs queued at this priority, least served first, then by key id (the anonymous
   * caller, null, as the empty key: first). Only callers with a counter; the order decides between
   * callers level behind the one served.
   */
  fairWaiting(priority: number): WaitingCaller[];
  /** The caller's oldest runnable job of one model key at one priority. */
  fairOldest(keyId: string | null, priority: number, modelKey: string, now: number): ClaimPick | undefined;
  /** What each model key has cost (the learned load and run times), for the cost-aware group choice. */
  costs(): Map<string, ModelCost>;
}
