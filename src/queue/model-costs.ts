import type { Database } from "bun:sqlite";
import type { JobRow } from "./job-row";

/** What running one model key has cost, learned from its finished jobs (rolling averages, ms). */
export interface ModelCost {
  modelKey: string;
  /** Expected load time when the model is not resident; null until a swap was measured. */
  loadMs: number | null;
  /** Expected run time of one job with the model already loaded; null until one was measured. */
  runMs: number | null;
  /** A job's start to finish, its load included when it had one. */
  totalMs: number | null;
  outputTokens: number | null;
  /** Ollama's eval_duration (native APIs only). */
  evalMs: number | null;
  /** Finished jobs learned from, and how many of them gave a load time. */
  jobs: number;
  loads: number;
  updatedAt: number;
}

/** Weight of the newest sample in each rolling average: about the last ten jobs count. */
export const COST_ALPHA = 0.2;

const COLUMNS = `model_key AS modelKey, load_ms AS loadMs, run_ms AS runMs, total_ms AS totalMs,
  output_tokens AS outputTokens, eval_ms AS evalMs, jobs, loads, updated_at AS updatedAt`;

/** The rolling average after one more sample; the first sample is taken as it is. */
export const ewma = (old: number | null, sample: number | null) =>
  sample === null ? old : old === null ? sample : old + COST_ALPHA * (sample - old);

/**
 * The model_costs table: learned in the transaction that ends a job done (see JobStore.finishJob),
 * read by the claim's group choice and by the start estimates. One row per model key, so reading
 * all of it is O(model keys).
 */
export class ModelCosts {
  /**
   * Learn per target too (several targets; the worker sets it). With one target its costs are the key's
   * costs: the second row would be the first's copy, written at every job's end for nothing.
   */
  perTarget = false;
  readonly #getStmt;
  readonly #allStmt;
  readonly #upsertStmt;
  readonly #targetGetStmt;
  readonly #targetAllStmt;
  readonly #targetUpsertStmt;

  constructor(db: Database) {
    this.#getStmt = db.query<ModelCost, [string]>(`SELECT ${COLUMNS} FROM model_costs WHERE model_key = ?`);
    this.#allStmt = db.query<ModelCost, []>(`SELECT ${COLUMNS} FROM model_costs ORDER BY model_key`);
    this.#upsertStmt = db.query<null, Record<string, string | number | null>>(
      `INSERT INTO model_costs (model_key, load_ms, run_ms, total_ms, output_tokens, eval_ms, jobs, loads, updated_at)
       VALUES ($modelKey, $loadMs, $runMs, $totalMs, $outputTokens, $evalMs, $jobs, $loads, $updatedAt)
       ON CONFLICT (model_key) DO UPDATE SET load_ms = excluded.load_ms, run_ms = excluded.run_ms,
         total_ms = excluded.total_ms, output_tokens = excluded.output_tokens, eval_ms = excluded.eval_ms,
         jobs = excluded.jobs, loads = excluded.loads, updated_at = excluded.updated_at`,
    );
    const targetColumns = `model_key AS modelKey, load_ms AS loadMs, run_ms AS runMs, jobs, loads, updated_at AS updatedAt`;
    this.#targetGetStmt = db.query<TargetCost, [string, string]>(
      `SELECT ${targetColumns} FROM target_costs WHERE target = ? AND model_key = ?`,
    );
    this.#targetAllStmt = db.query<TargetCost, [string]>(`SELECT ${targetColumns} FROM target_costs WHERE target = ?`);
    this.#targetUpsertStmt = db.query<null, Record<string, string | number | null>>(
      `INSERT INTO target_costs (target, model_key, load_ms, run_ms, jobs, loads, updated_at)
       VALUES ($target, $modelKey, $loadMs, $runMs, $jobs, $loads, $updatedAt)
       ON CONFLICT (target, model_key) DO UPDATE SET load_ms = excluded.load_ms, run_ms = excluded.run_ms,
         jobs = excluded.jobs, loads = excluded.loads, updated_at = excluded.updated_at`,
    );
  }

  /** What each model key has cost on one target (rows only for keys it has run). */
  forTarget(target: string): Map<string, TargetCost> {
    return new Map(this.#targetAllStmt.all(target).map((cost) => [cost.modelKey, cost]));
  }

  get(modelKey: string): ModelCost | null {
    return this.#getStmt.get(modelKey);
  }

  /** Every model key's costs, by key. */
  all(): Map<string, ModelCost> {
    return new Map(this.#allStmt.all().map((cost) => [cost.modelKey, cost]));
  }

  /**
   * Folds a job that ended done into its model key's averages; call inside the transaction that ends it.
   * Its run time is started_at → finished_at. A swapped job's load is Ollama's load_duration where the
   * API reports it (the native ones); elsewhere (OpenAI, Anthropic) it is the run time minus the
   * expected warm run time, and that job teaches nothing about the warm run time.
   */
  learnTx(job: JobRow): void {
    if (job.state !== "done" || job.startedAt === null || job.finishedAt === null) return;
    const totalMs = Math.max(0, job.finishedAt - job.startedAt);
    const old = this.get(job.modelKey);
    const { loadSample, runSample } = samplesOf(job, totalMs, old?.runMs ?? null);
    if (this.perTarget && job.target !== null) this.#learnOnTarget(job, job.target, totalMs);
    this.#upsertStmt.run({
      modelKey: job.modelKey,
      loadMs: ewma(old?.loadMs ?? null, loadSample),
      runMs: ewma(old?.runMs ?? null, runSample),
      totalMs: ewma(old?.totalMs ?? null, totalMs),
      outputTokens: ewma(old?.outputTokens ?? null, job.outputTokens),
      evalMs: ewma(old?.evalMs ?? null, job.evalMs),
      jobs: (old?.jobs ?? 0) + 1,
      loads: (old?.loads ?? 0) + (loadSample === null ? 0 : 1),
      updatedAt: job.finishedAt,
    });
  }

  /**
   * The same samples, kept per target: a slot shared with others runs longer, and a big card loads
   * faster, so what a job took here is measured here (a run with other slots in flight counts as it was).
   */
  #learnOnTarget(job: JobRow, target: string, totalMs: number): void {
    const old = this.#targetGetStmt.get(target, job.modelKey);
    const { loadSample, runSample } = samplesOf(job, totalMs, old?.runMs ?? null);
    this.#targetUpsertStmt.run({
      target,
      modelKey: job.modelKey,
      loadMs: ewma(old?.loadMs ?? null, loadSample),
      runMs: ewma(old?.runMs ?? null, runSample),
      jobs: (old?.jobs ?? 0) + 1,
      loads: (old?.loads ?? 0) + (loadSample === null ? 0 : 1),
      updatedAt: job.finishedAt!,
    });
  }
}

/**
 * What one finished job teaches (see ModelCosts.learnTx), overall or on its target alike: a swapped job
 * its load (Ollama's load_duration, else its time minus the warm run time known so far, `knownRunMs`)
 * and, when the load was reported, its run; a warm job its run. Null where it teaches nothing.
 */
export function samplesOf(
  job: JobRow,
  totalMs: number,
  knownRunMs: number | null,
): { loadSample: number | null; runSample: number | null } {
  if (job.swapped === 1) {
    if (job.loadMs !== null) return { loadSample: job.loadMs, runSample: Math.max(0, totalMs - job.loadMs) };
    return { loadSample: knownRunMs === null ? null : Math.max(0, totalMs - knownRunMs), runSample: null };
  }
  // Warm: Ollama still reports a small load_duration (its scheduler's bookkeeping), part of no load.
  return { loadSample: null, runSample: Math.max(0, totalMs - (job.loadMs ?? 0)) };
}

/** What one model key has cost on one target (see ModelCosts.forTarget). */
export interface TargetCost {
  modelKey: string;
  loadMs: number | null;
  runMs: number | null;
  jobs: number;
  loads: number;
  updatedAt: number;
}

/** A model key's expected load and per-job run time (ms), learned or assumed. */
export interface ExpectedCost {
  loadMs: number;
  runMs: number;
}

/**
 * Expected costs for any model key: its learned averages; for a key not yet measured, the mean over
 * the keys that were (a new model is assumed typical), or 0 ms load and 1 s per job when none was.
 */
export function expectedCosts(costs: Map<string, ModelCost>): (modelKey: string) => ExpectedCost {
  const mean = (values: number[], fallback: number) =>
    values.length ? values.reduce((a, b) => a + b, 0) / values.length : fallback;
  const known = [...costs.values()];
  const defaultLoad = mean(
    known.flatMap((c) => (c.loadMs === null ? [] : [c.loadMs])),
    0,
  );
  const defaultRun = mean(
    known.flatMap((c) => (c.runMs === null ? [] : [c.runMs])),
    1000,
  );
  return (modelKey) => {
    const cost = costs.get(modelKey);
    return { loadMs: cost?.loadMs ?? defaultLoad, runMs: cost?.runMs ?? defaultRun };
  };
}

/**
 * Expected costs of a model key on one target: what it learned there, else what the key costs anywhere
 * (`fallback`, see {@link expectedCosts}), so a target new to a key is assumed typical for it.
 */
export function targetCosts(
  learned: Map<string, TargetCost>,
  fallback: (modelKey: string) => ExpectedCost,
): (modelKey: string) => ExpectedCost {
  return (modelKey) => {
    const here = learned.get(modelKey);
    const anywhere = fallback(modelKey);
    return { loadMs: here?.loadMs ?? anywhere.loadMs, runMs: here?.runMs ?? anywhere.runMs };
  };
}

/** A model key's queued jobs at one priority, as the group choice weighs them. */
export interface WaitingGroup {
  modelKey: string;
  /** Jobs waiting in the group. */
  queued: number;
  /** Its oldest job's id (ULID, so by age): the tie-break. */
  oldestId: string;
}

/**
 * Orders groups by Smith's rule: weighted waiting work over expected cost, highest first,
 * `queued / (load + queued × run)` (load 0 for a resident model); ties go to the oldest job.
 * Every job compared shares one priority (higher priorities are served strictly first), so each job
 * weighs 1: the rule favours many cheap jobs behind a short load over a few behind a long one.
 */
export function rankGroups<G extends WaitingGroup>(
  groups: readonly G[],
  cost: (modelKey: string) => ExpectedCost,
  residentKeys: readonly string[],
): G[] {
  const score = (g: WaitingGroup) => {
    const { loadMs, runMs } = cost(g.modelKey);
    const work = (residentKeys.includes(g.modelKey) ? 0 : loadMs) + g.queued * runMs;
    return work > 0 ? g.queued / work : Number.POSITIVE_INFINITY;
  };
  const scored = groups.map((g) => ({ g, s: score(g) }));
  // Scores within a part in a million are a tie: the oldest job goes first, as drain-oldest would.
  scored.sort((a, b) =>
    Math.abs(a.s - b.s) <= 1e-6 * Math.max(a.s, b.s) || a.s === b.s ? (a.g.oldestId < b.g.oldestId ? -1 : 1) : b.s - a.s,
  );
  return scored.map((x) => x.g);
}
