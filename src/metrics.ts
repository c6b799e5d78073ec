import { Counter, Gauge, Histogram, Registry } from "prom-client";
import pkg from "../package.json";
import { gpuMsOf } from "./keys/usage";
import { jobTimes, tokensPerSecond } from "./queue/job-view";
import { after, allOf } from "./queue/maybe-promise";
import type { QueueStore } from "./queue/queue-store";
import type { JobRow } from "./queue/store";
import type { UpstreamErrorKind } from "./worker/protocol";

/** How a webhook delivery attempt went: delivered, failed for good, or failed and retried later. */
export type WebhookOutcome = "delivered" | "retrying" | "failed";

/**
 * What the scrape-time gauges read: the same store queries GET /queue answers from, and the inventory. The
 * store is either engine's (QueueStore): JobStore on SQLite answers at once, PgQueueStore with Promises.
 */
export interface MetricsSources {
  store: Pick<QueueStore, "queuedCount" | "queuedCountByModel" | "runningJob" | "runningJobs">;
  inventory: { readonly snapshot: { readonly degraded: boolean } };
  /**
   * Several targets: each one's name and whether it answers. Then the per-job metrics, swaps and upstream
   * errors carry a `target` label (the target of the attempt) and foreman_target_up has a series per target;
   * with one target (absent) every series is as it always was.
   */
  targets?: () => Array<{ name: string; up: boolean }>;
  /** Whether the database cannot be written (a full disk); read at scrape time. */
  storage?: { readonly degraded: boolean };
}

/** Seconds a job waits for its turn: from a blink to an hour behind a long queue. */
const WAIT_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600];
/** Seconds one attempt runs, model load included. */
const RUN_BUCKETS = [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800];
/** Output tokens per second: CPU-only small rates up to a fast GPU. */
const RATE_BUCKETS = [1, 2, 5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 500];

/**
 * foreman's Prometheus metrics, in a registry of its own (not prom-client's global one). Queue gauges are
 * read at scrape time from the store, so they agree with GET /queue; job counters and histograms are fed
 * once per job end from its row ({@link jobEnded}).
 *
 * Either engine's store. On SQLite its answers are values, and every collect sets its gauge in the same
 * turn (nothing is awaited). On PostgreSQL they are Promises: a collect returns one, which prom-client 15
 * awaits (Gauge.get) before reading the gauge, so a scrape costs a query per read (the queued count, the
 * counts by model, the running jobs), run side by side; a gauge is reset and set only once all its reads are
 * in, so scrapes that overlap never show a half-set one. A read that fails fails the scrape (a 500), rather
 * than show a stale queue as current.
 *
 * With several nodes on one PostgreSQL queue, each node serves its own /metrics and the series mean:
 * - the queue gauges (foreman_queue_depth, foreman_queue_jobs) read the shared queue, so every node shows
 *   the same values (the whole cluster's queue and running jobs, whichever node runs them): take one node's,
 *   or max() across nodes, never sum();
 * - the job counters and histograms (jobs ended, wait and run time, swaps, tokens and rate, per key) count
 *   the jobs this node ended (its runners' ends, and the cancels made through it): each end is reported by the
 *   one node that made it, so sum() across nodes is the cluster's figure, as for any horizontally scaled
 *   service; so are the upstream errors and retries of this node's runners;
 * - foreman_ollama_up, foreman_target_up and foreman_degraded are this node's view: its polls of the
 *   targets, its writes.
 */
export class ForemanMetrics {
  readonly registry = new Registry();
  readonly #jobsEnded;
  readonly #waitSeconds;
  readonly #runSeconds;
  readonly #swaps;
  readonly #outputTokens;
  readonly #promptTokens;
  readonly #tokensPerSecond;
  readonly #keyJobs;
  readonly #keyTokens;
  readonly #keyGpuSeconds;
  /** A key's name by id, for the per-key series; composeForeman sets it. */
  keyName: (keyId: string) => string | null = () => null;
  readonly #upstreamErrors;
  readonly #retries;
  readonly #webhookDeliveries;

  /** Several targets: series carry a `target` label. */
  readonly #byTarget: boolean;

  constructor({ store, inventory, storage, targets }: MetricsSources) {
    const registers = [this.registry];
    this.#byTarget = targets !== undefined;
    // With several targets, the series that belong to one attempt say where it ran.
    const withTarget = <L extends string>(names: readonly L[]): Array<L | "target"> =>
      targets ? [...names, "target"] : [...names];
    if (targets) {
      new Gauge({
        name: "foreman_target_up",
        help: "1 while the Ollama target answers foreman's polls, 0 while it is unreachable (degraded alone)",
        labelNames: ["target"] as const,
        registers,
        collect() {
          for (const { name, up } of targets()) this.set({ target: name }, up ? 1 : 0);
        },
      });
    }
    new Gauge({
      name: "foreman_queue_depth",
      help: "Jobs queued (waiting to run), as GET /queue's depth",
      registers,
      collect() {
        return after(store.queuedCount(), (n) => this.set(n));
      },
    });
    new Gauge({
      name: "foreman_queue_jobs",
      help: "Jobs not ended, by model and state (queued as GET /queue's by_model; loading or working: the running job)",
      labelNames: ["model", "state"] as const,
      registers,
      collect() {
        const byModel = store.queuedCountByModel();
        // Several targets (and slots): every running job; one: the oldest-started (GET /queue's `running`).
        const running = targets ? store.runningJobs() : after(store.runningJob(), (job) => (job ? [job] : []));
        return after(allOf<unknown>([byModel, running]), (reads) => {
          const [queued, runningJobs] = reads as [{ model: string; n: number }[], JobRow[]];
          // Reset first: a model whose jobs all ran must drop out rather than keep its last count. Reset and
          // set in one turn, once both reads are in: an overlapping scrape never reads it half set.
          this.reset();
          for (const { model, n } of queued) this.set({ model, state: "queued" }, n);
          // Counted per model and state (one running job: its series at 1).
          const counts = new Map<string, { model: string; state: string; n: number }>();
          for (const job of runningJobs) {
            const key = `${job.model}\t${job.state}`;
            const entry = counts.get(key) ?? { model: job.model, state: job.state, n: 0 };
            entry.n++;
            counts.set(key, entry);
          }
          for (const { model, state, n } of counts.values()) this.set({ model, state }, n);
        });
      },
    });
    new Gauge({
      name: "foreman_ollama_up",
      help: "1 while Ollama answers foreman's polls, 0 while it is unreachable (degraded)",
      registers,
      collect() {
        this.set(inventory.snapshot.degraded ? 0 : 1);
      },
    });
    new Gauge({
      name: "foreman_degraded",
      help: "1 while foreman is degraded for this reason (ollama: unreachable; storage: the database cannot be written), else 0",
      labelNames: ["reason"] as const,
      registers,
      collect() {
        this.set({ reason: "ollama" }, inventory.snapshot.degraded ? 1 : 0);
        this.set({ reason: "storage" }, storage?.degraded ? 1 : 0);
      },
    });
    new Gauge({
      name: "foreman_build_info",
      help: "foreman's version; always 1",
      labelNames: ["version"] as const,
      registers,
    }).set({ version: pkg.version }, 1);
    this.#jobsEnded = new Counter({
      name: "foreman_jobs_ended_total",
      help: "Jobs that ended, by type, model, outcome (done, failed, canceled) and source (ollama, openai, anthropic, jobs)",
      labelNames: withTarget(["type", "model", "outcome", "source"] as const),
      registers,
    });
    this.#waitSeconds = new Histogram({
      name: "foreman_job_wait_seconds",
      help: "How long ended jobs waited to start (their last start), by model",
      labelNames: ["model"] as const,
      buckets: WAIT_BUCKETS,
      registers,
    });
    this.#runSeconds = new Histogram({
      name: "foreman_job_run_seconds",
      help: "How long ended jobs' last attempt ran, model load included, by model",
      labelNames: withTarget(["model"] as const),
      buckets: RUN_BUCKETS,
      registers,
    });
    this.#swaps = new Counter({
      name: "foreman_model_swaps_total",
      help: "Ended jobs whose model was not loaded when they started (a model swap), by the model loaded",
      labelNames: withTarget(["model"] as const),
      registers,
    });
    this.#outputTokens = new Counter({
      name: "foreman_tokens_generated_total",
      help: "Output tokens of ended jobs, by model: as their API's usage reported them (Ollama's eval_count), or counted from the stream where an OpenAI stream carried no usage (tokens_estimated)",
      labelNames: ["model"] as const,
      registers,
    });
    this.#promptTokens = new Counter({
      name: "foreman_prompt_tokens_total",
      help: "Prompt tokens of ended jobs, as their API's usage reported them (Ollama's prompt_eval_count), by model",
      labelNames: ["model"] as const,
      registers,
    });
    this.#tokensPerSecond = new Histogram({
      name: "foreman_tokens_per_second",
      help: "Generation speed of ended jobs: eval_count over eval_duration where Ollama reports them, else over run time",
      labelNames: ["model"] as const,
      buckets: RATE_BUCKETS,
      registers,
    });
    // Per API key: series of their own (names only, never secrets; keys are few), so the series above stay as
    // they were for deployments without keys.
    this.#keyJobs = new Counter({
      name: "foreman_key_jobs_ended_total",
      help: "Jobs of each API key that ended, by key name and outcome (done, failed, canceled)",
      labelNames: ["key", "outcome"] as const,
      registers,
    });
    this.#keyTokens = new Counter({
      name: "foreman_key_tokens_total",
      help: "Tokens of each API key's ended jobs (what its daily quota counts), by key name and kind (prompt, output)",
      labelNames: ["key", "kind"] as const,
      registers,
    });
    this.#keyGpuSeconds = new Counter({
      name: "foreman_key_gpu_seconds_total",
      help: "GPU time of each API key's ended jobs that ran (start to end, the load too when it caused the swap), by key name",
      labelNames: ["key"] as const,
      registers,
    });
    this.#upstreamErrors = new Counter({
      name: "foreman_upstream_errors_total",
      help: "Failed attempts at Ollama by kind: refused, connection (lost), timeout, http_4xx, http_5xx",
      labelNames: withTarget(["kind"] as const),
      registers,
    });
    this.#retries = new Counter({
      name: "foreman_job_retries_total",
      help: "Job attempts that failed and went back to the queue to be tried again",
      registers,
    });
    this.#webhookDeliveries = new Counter({
      name: "foreman_webhook_deliveries_total",
      help: "Webhook delivery attempts by outcome: delivered, retrying (failed, tried again later), failed (for good)",
      labelNames: ["outcome"] as const,
      registers,
    });
    // Pre-set label sets whose absence would read as "no data" rather than zero.
    for (const kind of ["refused", "connection", "timeout", "http_4xx", "http_5xx"] as const) {
      if (!targets) this.#upstreamErrors.inc({ kind }, 0);
      else for (const { name } of targets()) this.#upstreamErrors.inc({ kind, target: name }, 0);
    }
    for (const outcome of ["delivered", "retrying", "failed"] as const) this.#webhookDeliveries.inc({ outcome }, 0);
    processMetrics(registers);
  }

  /** Counts one ended job from its row: outcome, wait and run time, swap, tokens and speed. */
  jobEnded(job: JobRow, now = Date.now()): void {
    const model = job.model;
    // A job canceled before any claim ran nowhere: its target is "".
    const at = this.#byTarget ? { target: job.target ?? "" } : {};
    this.#jobsEnded.inc({ type: job.type, model, outcome: job.state, source: job.source, ...at });
    const { waitMs, runMs } = jobTimes(job, now);
    this.#waitSeconds.observe({ model }, waitMs / 1000);
    if (runMs !== null) this.#runSeconds.observe({ model, ...at }, runMs / 1000);
    if (job.swapped === 1) this.#swaps.inc({ model, ...at });
    if (job.outputTokens !== null) this.#outputTokens.inc({ model }, job.outputTokens);
    if (job.promptTokens !== null) this.#promptTokens.inc({ model }, job.promptTokens);
    const rate = job.state === "done" ? tokensPerSecond(job, runMs) : null;
    if (rate !== null) this.#tokensPerSecond.observe({ model }, rate);
    const key = job.keyId === null ? null : this.keyName(job.keyId);
    if (key === null) return;
    this.#keyJobs.inc({ key, outcome: job.state });
    if (job.promptTokens !== null) this.#keyTokens.inc({ key, kind: "prompt" }, job.promptTokens);
    if (job.outputTokens !== null) this.#keyTokens.inc({ key, kind: "output" }, job.outputTokens);
    // The same span key_usage's gpu_ms charges, so the two add up alike.
    const gpuMs = gpuMsOf(job);
    if (gpuMs !== null) this.#keyGpuSeconds.inc({ key }, gpuMs / 1000);
  }

  /** Counts a failed attempt at Ollama, and a retry when the job goes back to the queue. */
  attemptFailed(kind: UpstreamErrorKind, retry: boolean, target?: string): void {
    this.#upstreamErrors.inc(this.#byTarget ? { kind, target: target ?? "" } : { kind });
    if (retry) this.#retries.inc();
  }

  /** Counts one webhook delivery attempt. */
  webhookDelivery(outcome: WebhookOutcome): void {
    this.#webhookDeliveries.inc({ outcome });
  }

  /** The Prometheus text exposition of every metric. */
  text(): Promise<string> {
    return this.registry.metrics();
  }
}

/**
 * The standard process_* metrics, read from Bun's process API. prom-client's collectDefaultMetrics is not
 * used: under Bun several of its Node-specific gauges (event loop lag, heap spaces) report made-up values.
 */
function processMetrics(registers: Registry[]): void {
  new Gauge({
    name: "process_start_time_seconds",
    help: "Start time of the process since the Unix epoch in seconds",
    registers,
  }).set(Math.round((Date.now() - process.uptime() * 1000) / 1000));
  new Counter({
    name: "process_cpu_seconds_total",
    help: "Total user and system CPU time spent in seconds",
    registers,
    collect() {
      const { user, system } = process.cpuUsage();
      this.reset();
      this.inc((user + system) / 1e6);
    },
  });
  new Gauge({
    name: "process_resident_memory_bytes",
    help: "Resident memory size in bytes",
    registers,
    collect() {
      this.set(process.memoryUsage.rss());
    },
  });
}
