import { type JobType, adapterFor } from "./adapters";
import type { RequestFacts } from "./adapters/adapter";
import type { Config } from "./config";
import { BadRequestError, NotFoundError } from "./errors";
import { type WaitingClient, respondToClient } from "./job-response";
import { watchJob } from "./job-watch";
import type { Logger } from "./log";
import { StorageHealth, isStorageError } from "./queue/storage-health";
import type { TargetInventory } from "./ollama/targets";
import { type JobSource, isTerminal } from "./queue/job-states";
import { type JobView, type WebhookView, toJobView } from "./queue/job-view";
import { type ModelCost, type TargetCost, expectedCosts, targetCosts } from "./queue/model-costs";
import {
  type PlanLane,
  type QueuePlan,
  estimatedStart,
  lanePosition,
  overdueRun,
  planQueue,
  plannedGroup,
} from "./queue/start-estimate";
import { type MaybePromise, after, allOf, isPromise } from "./queue/maybe-promise";
import type { QueueStore } from "./queue/queue-store";
import { CLIENT_CANCELED, type JobRow, type NewJob, type QueueGroup } from "./queue/store";
import type { DeliveryStatus } from "./webhook/deliveries";
import type { JobLink } from "./worker/job-events";
import { OPEN_ADMIN, type Principal, modelAllowed } from "./keys/principal";

/** Priorities accepted from clients: integers in this range (inclusive). */
export const PRIORITY_RANGE = { min: -1000, max: 1000 } as const;

/** Hang-ups this close together (ms) are one batch of cancels (see JobService.hungUp). */
const HANG_UP_QUIET_MS = 50;
/** The longest a hang-up waits for the rest of its batch (ms) before its job is canceled. */
const HANG_UP_BATCH_MS = 2000;
/** Jobs of a batch of hang-ups canceled per transaction, one per turn of the event loop. */
const HANG_UP_CHUNK = 500;

/** How often (ms) hang-ups whose cancel failed for space are tried again (see JobService.#cancelInTurns). */
const HANG_UP_RETRY_MS = 1000;

/** Why a waiting client's job is canceled at shutdown: it is told to come back (503, Retry-After). */
export const SHUTTING_DOWN = { error: "foreman is shutting down; send the request again shortly", status: 503 } as const;

/** Everything about a new job that the caller decides. */
export interface SubmitOptions {
  source: JobSource;
  priority?: number;
  idempotencyKey?: string;
  webhook?: { url: string; secret?: string };
  /** Who asks (see src/keys/principal.ts); without it, nobody's in particular (FOREMAN_TOKEN, an open foreman). */
  principal?: Principal;
}

/**
 * The jobs as the HTTP thread sees them: validates and queues generation requests in any API's
 * format, cancels, renders jobs for the API and answers the clients that wait on them.
 *
 * Over either engine's {@link QueueStore}: what it reads comes back as the value (SQLite) or a Promise
 * (PostgreSQL), and so do this class's answers that read it (maybe-promise.ts); on SQLite they stay
 * synchronous, as the hot path and the per-turn plan expect.
 */
export class JobService<Store extends QueueStore = QueueStore> {
  /** Clients holding a connection for their job's answer, by job id; shutdown answers each of them. */
  readonly clients = new Set<string>();
  /** Set at shutdown: from then on {@link releaseWaitingClients} ends the jobs of waiting clients, not their disconnects. */
  shuttingDown = false;
  /** Called after a new job is queued (the dashboard's live feed listens). */
  onQueued: (job: JobRow) => void = () => {};
  /** Whether writes fail for space; composeForeman gives it the database's probe write. */
  storage = new StorageHealth(() => {});
  /** The time a key's limits are checked at (its daily quota's day): Date.now, or a test's own clock. */
  clock: () => number = Date.now;
  /** A key's name by id (job views name who asked); composeForeman sets it. */
  keyName: (keyId: string) => string | null = () => null;
  /**
   * A watch began on a job already running (an SSE watch, a client whose job was claimed before it looked):
   * with several nodes, the node running it may be another, whose records are to be relayed here.
   */
  onWatchRunning: ((jobId: string) => void) | undefined;

  constructor(
    readonly store: Store,
    /** Where each job's webhook delivery stands, for its view. */
    readonly deliveries: { status(jobId: string): MaybePromise<DeliveryStatus | null> },
    readonly link: JobLink,
    readonly inventory: TargetInventory,
    readonly config: Pick<Config, "maxAttempts" | "maxQueue" | "schedule"> & Partial<Pick<Config, "maxWaitMs">>,
    readonly log: Logger,
  ) {}

  /**
   * Validates a request in its API's format as Ollama would (400 on a wrong field, 404 on an unknown
   * model), then queues it. Returns the job, whether it is new (false: idempotency key repeated) and
   * what the adapter read of the request.
   */
  async submit(
    type: JobType,
    body: unknown,
    options: SubmitOptions,
  ): Promise<{ job: JobRow; created: boolean; facts: RequestFacts }> {
    const facts = adapterFor(type).describe(body);
    const principal = options.principal ?? OPEN_ADMIN;
    // A model outside the key's scope is answered as one Ollama lacks: the scope leaks no model list.
    if (!facts.model || !modelAllowed(principal, facts.model) || !(await this.inventory.knows(facts.model)))
      throw new NotFoundError(`model '${facts.model}' not found`);
    const key = principal.key;
    const ceiling = key?.maxPriority ?? null;
    const result = await this.#enqueue({
      type,
      model: facts.model,
      modelKey: facts.modelKey,
      request: JSON.stringify(body),
      source: options.source,
      priority: ceiling === null ? options.priority : Math.min(options.priority ?? 0, ceiling),
      maxAttempts: this.config.maxAttempts,
      // Idempotency keys are each key's own: another key's repeat of one is a new job, not a look at theirs.
      idempotencyKey:
        options.idempotencyKey === undefined || key === null ? options.idempotencyKey : `${key.id}:${options.idempotencyKey}`,
      webhook: options.webhook,
      owner: key
        ? { keyId: key.id, name: key.name, maxJobs: key.maxJobs, dailyTokens: key.dailyTokens, at: this.clock() }
        : undefined,
    });
    if (result.created) this.onQueued(result.job);
    return { ...result, facts };
  }

  #pending: Array<{
    job: NewJob;
    resolve: (result: { job: JobRow; created: boolean }) => void;
    reject: (error: unknown) => void;
  }> = [];

  /**
   * Queues a job together with every other one submitted in the same turn of the event loop: one
   * transaction for all (a group commit), one wake for the worker. Under concurrent submissions this
   * is what keeps the HTTP thread from taking the write lock once per request.
   */
  #enqueue(job: NewJob): Promise<{ job: JobRow; created: boolean }> {
    return new Promise((resolve, reject) => {
      this.#pending.push({ job, resolve, reject });
      if (this.#pending.length === 1) setImmediate(() => this.#flush());
    });
  }

  #flush(): void {
    const batch = this.#pending;
    this.#pending = [];
    const fail = (error: unknown) => {
      for (const entry of batch) entry.reject(error);
    };
    const settle = (outcomes: Array<{ job: JobRow; created: boolean } | Error>) => {
      if (outcomes.some((outcome) => !(outcome instanceof Error) && outcome.created)) this.link.wake();
      outcomes.forEach((outcome, i) => (outcome instanceof Error ? batch[i]!.reject(outcome) : batch[i]!.resolve(outcome)));
    };
    try {
      const outcomes = this.store.enqueueMany(
        batch.map((entry) => entry.job),
        this.config.maxQueue,
      );
      if (isPromise(outcomes)) outcomes.then(settle, fail);
      else settle(outcomes);
    } catch (error) {
      fail(error);
    }
  }

  /**
   * Cancels a queued or running job (a running one has its upstream call aborted); null when there is
   * no such job that can still be canceled. `reason` is stored on the row: its error and status.
   */
  cancel(id: string, reason: { error: string; status: number } = CLIENT_CANCELED): MaybePromise<JobRow | null> {
    return after(this.store.cancelJob(id, reason), (job) => {
      if (!job) return null;
      this.link.cancel(id);
      this.link.jobEnded(id);
      return job;
    });
  }

  /** Jobs whose clients hung up, canceled together by {@link #flushHangUps}. */
  #hungUp = new Set<string>();
  /** When the first and the last of {@link #hungUp} came (epoch ms). */
  #hungUpFirst = 0;
  #hungUpLast = 0;

  /**
   * A waiting client hung up: its job is canceled with every other hang-up of the same moment, in one
   * transaction (a group commit, as {@link #enqueue} does for submissions). Thousands of clients that
   * go at once reach this thread over many turns of the event loop, so the batch closes once
   * {@link HANG_UP_QUIET_MS} pass without a new hang-up (or {@link HANG_UP_BATCH_MS} after its first):
   * the running job's cancel commits with the others', and the worker, freed, finds none of theirs
   * left to claim. One transaction per cancel took seconds for 5,000, and the worker claimed and sent
   * hundreds of them meanwhile.
   */
  hungUp(id: string): void {
    const now = Date.now();
    if (this.#hungUp.size === 0) {
      this.#hungUpFirst = now;
      setTimeout(() => this.#flushHangUps(), HANG_UP_QUIET_MS);
    }
    this.#hungUpLast = now;
    this.#hungUp.add(id);
    this.link.clientGone(id);
  }

  #flushHangUps(): void {
    const now = Date.now();
    const quietAt = this.#hungUpLast + HANG_UP_QUIET_MS;
    if (now < quietAt && now - this.#hungUpFirst < HANG_UP_BATCH_MS) {
      setTimeout(() => this.#flushHangUps(), quietAt - now);
      return;
    }
    const ids = [...this.#hungUp];
    this.#hungUp.clear();
    this.#cancelInTurns(ids, []);
  }

  /**
   * Cancels a batch of hang-ups {@link HANG_UP_CHUNK} jobs per turn, so that other requests are answered
   * in between (5,000 in one transaction held GET /queue for 200 ms). The worker is told last: the
   * running job's abort frees it to claim, and every job of the batch must be canceled by then (it
   * already knows them gone, and would cancel one itself rather than send it).
   */
  #cancelInTurns(ids: string[], canceled: JobRow[]): void {
    const chunk = ids.splice(0, HANG_UP_CHUNK);
    const failed = (error: unknown): JobRow[] => {
      if (!isStorageError(error)) this.log.error("could not cancel jobs", { jobs: chunk.length, error });
      else this.#cancelLater(chunk, error);
      return [];
    };
    const next = (rows: JobRow[]) => {
      for (const job of rows) this.link.jobEnded(job.id);
      canceled.push(...rows);
      if (ids.length > 0) setImmediate(() => this.#cancelInTurns(ids, canceled));
      else for (const job of canceled) this.link.cancel(job.id);
    };
    let rows: MaybePromise<JobRow[]> = [];
    try {
      rows = chunk.length === 0 ? [] : this.store.cancelJobs(chunk, CLIENT_CANCELED);
    } catch (error) {
      rows = failed(error);
    }
    if (isPromise(rows)) rows.catch(failed).then(next);
    else next(rows);
  }

  /** Hang-ups whose cancel failed for space, tried again every {@link HANG_UP_RETRY_MS} until it lands. */
  #cancelPending = new Set<string>();
  #cancelRetry: ReturnType<typeof setTimeout> | undefined;

  /**
   * A full disk must not let a hung-up client's job run later for nobody: its cancel is kept and tried
   * again until it lands, as the worker does with a job's end. Meanwhile the worker, told at the hang-up
   * (clientGone), holds the queue while it cannot write, and cancels the job itself if it claims it first.
   */
  #cancelLater(ids: readonly string[], error: unknown): void {
    if (this.#cancelPending.size === 0)
      this.log.warn("could not cancel jobs (disk full?): trying again", { jobs: ids.length, error });
    this.storage.failed(error);
    for (const id of ids) this.#cancelPending.add(id);
    this.#cancelRetry ??= setTimeout(() => {
      this.#cancelRetry = undefined;
      const retry = [...this.#cancelPending];
      this.#cancelPending.clear();
      this.#cancelInTurns(retry, []);
    }, HANG_UP_RETRY_MS);
    this.#cancelRetry.unref?.();
  }

  /**
   * {@link cancel} for many jobs in one transaction; the ones that could still be canceled. A database
   * error is logged (the clients are gone; nothing is left to answer) and the jobs stay as they were.
   */
  cancelMany(ids: readonly string[], reason: { error: string; status: number }): MaybePromise<JobRow[]> {
    return after(this.#cancelRows(ids, reason), (canceled) => {
      for (const job of canceled) this.link.cancel(job.id);
      for (const job of canceled) this.link.jobEnded(job.id);
      return canceled;
    });
  }

  #cancelRows(ids: readonly string[], reason: { error: string; status: number }): MaybePromise<JobRow[]> {
    if (ids.length === 0) return [];
    const failed = (error: unknown): JobRow[] => {
      this.log.error("could not cancel jobs", { jobs: ids.length, error });
      return [];
    };
    try {
      const rows = this.store.cancelJobs(ids, reason);
      return isPromise(rows) ? rows.catch(failed) : rows;
    } catch (error) {
      return failed(error);
    }
  }

  /** Watches one job: its state, streamed records and end, keeping up to `maxBacklogBytes` unread (see {@link watchJob}). */
  watch(id: string, maxBacklogBytes?: number) {
    return watchJob(
      this.link,
      (jobId) => this.store.getJob(jobId),
      id,
      (jobId) =>
        after(this.store.getJobHead(jobId), (job) => {
          if (job && this.onWatchRunning && (job.state === "loading" || job.state === "working")) this.onWatchRunning(jobId);
          return job;
        }),
      maxBacklogBytes,
    );
  }

  /** Answers a client that waits on its job, in the job's API format (see {@link respondToClient}). */
  respond(job: JobRow, streaming: boolean, client: WaitingClient): Promise<Response> {
    return respondToClient(this, job, streaming, client);
  }

  /**
   * At shutdown, ends the jobs of clients still holding a connection, so each gets a 503 to retry
   * rather than a dropped connection, and no job runs later for nobody. `queuedOnly` spares the
   * running job, which gets the grace period first. Job API jobs are not touched: they stay queued.
   */
  releaseWaitingClients(queuedOnly: boolean): MaybePromise<void> {
    const ids = [...this.clients];
    const heads = queuedOnly ? allOf(ids.map((id) => this.store.getJobHead(id))) : [];
    return after(heads, (rows) => {
      const chosen = queuedOnly ? ids.filter((_, i) => rows[i]?.state === "queued") : ids;
      return after(this.cancelMany(chosen, SHUTTING_DOWN), () => {});
    });
  }

  /**
   * The API shape of a job, with its queue position and, while queued, its estimated start (both from
   * `plan`, made here unless given: a list makes one for its page) and its webhook delivery state.
   */
  view(job: JobRow, plan?: QueuePlan): MaybePromise<JobView> {
    const key = job.keyId === null ? null : this.keyName(job.keyId);
    if (job.state !== "queued")
      return after(this.webhookView(job), (webhook) => toJobView(job, { queuePosition: null, webhook, key }));
    return after(plan ?? this.queuePlan(), (plan) =>
      after(this.queuePlace(job, plan), ({ position, estimatedStartAt }) =>
        after(this.webhookView(job), (webhook) => toJobView(job, { queuePosition: position, webhook, estimatedStartAt, key })),
      ),
    );
  }

  /**
   * A queued job's place in the order the scheduler will run the queue as it stands (1 runs next), and
   * its expected start: the jobs of the groups planned before its group (planQueue: priority, the loaded
   * model, the schedule's group choice) plus its rank in its own group, so positions and estimates agree.
   * A job past FOREMAN_MAX_WAIT (not a batch line) is in its priority's starvation-guard run instead, ahead
   * of the drain order, by age across model keys, as the claim takes it; the other jobs of its group move up.
   * Under fifo, priority and age alone.
   */
  queuePlace(job: JobRow, plan: QueuePlan): MaybePromise<{ position: number | null; estimatedStartAt: number | null }> {
    const group = plannedGroup(job, plan);
    if (!group || this.config.schedule === "fifo") {
      return after(this.store.queuePosition(job), (position) => ({ position, estimatedStartAt: estimatedStart(job, plan) }));
    }
    const run = overdueRun(job, plan);
    if (run) {
      return after(this.store.overdueRank(job), (overdueRank) => {
        const rank = Math.min(overdueRank, run.count - 1);
        const position = lanePosition(job, plan, rank) ?? run.ahead + rank + 1;
        return { position, estimatedStartAt: estimatedStart(job, plan, rank) };
      });
    }
    const counts = allOf([
      this.store.rankInGroup(job, group.queued),
      this.store.overdueAheadInGroup(job, plan.overdueBefore ?? Number.NEGATIVE_INFINITY, group.overdue),
    ]);
    return after(counts, ([inGroup, overdueAhead]) => {
      const rank = Math.max(0, inGroup! - overdueAhead!);
      const position = lanePosition(job, plan, rank) ?? group.ahead + rank + 1;
      return { position, estimatedStartAt: estimatedStart(job, plan, rank) };
    });
  }

  #turnPlan: MaybePromise<QueuePlan> | undefined;

  /**
   * The scheduler's expected order over model groups now: O(model keys), whatever the queue's depth.
   * Shared by everything answered in one turn of the event loop: the submissions of one group commit
   * are answered together, and a plan each cost them a third of their throughput at 100,000 queued.
   */
  queuePlan(): MaybePromise<QueuePlan> {
    if (this.#turnPlan) return this.#turnPlan;
    const plan = this.#plan(Date.now());
    this.#turnPlan = plan;
    setImmediate(() => (this.#turnPlan = undefined));
    return plan;
  }

  #plan(now: number): MaybePromise<QueuePlan> {
    const { schedule, maxWaitMs } = this.config;
    const overdueBefore = schedule === "fifo" || maxWaitMs === undefined ? undefined : now - maxWaitMs;
    const { store } = this;
    const { several } = this.inventory;
    // Read together (one round trip each, in parallel, on a server), then planned from what was read.
    const reads = allOf<unknown>([
      store.queueGroups(overdueBefore),
      store.costs.all(),
      store.runningJob(),
      several ? store.runningJobs() : [],
      allOf(several ? this.inventory.targets.map(({ target }) => store.costs.forTarget(target.name)) : []),
    ]);
    return after(reads, (values) => {
      const [groups, costs, running, runningAll, targetCostsRead] = values as [
        QueueGroup[],
        Map<string, ModelCost>,
        JobRow | null,
        JobRow[],
        Map<string, TargetCost>[],
      ];
      return planQueue({
        groups,
        overdueBefore,
        costs,
        running,
        residentKeys: this.inventory.residentKeys(),
        schedule: this.config.schedule,
        now,
        lanes: several ? this.#lanes(runningAll, costs, targetCostsRead) : undefined,
      });
    });
  }

  /** Several targets: each one's lane for the plan (what it has, holds and runs, its own learned costs). */
  #lanes(running: readonly JobRow[], costs: Map<string, ModelCost>, perTarget: readonly Map<string, TargetCost>[]): PlanLane[] {
    const anywhere = expectedCosts(costs);
    return this.inventory.targets.map(({ target, inventory }, i) => {
      const { degraded } = inventory.snapshot;
      return {
        name: target.name,
        slots: target.slots,
        reachable: !degraded,
        installed: (modelKey: string) => inventory.has(modelKey.split(" ")[0]!),
        residentKeys: degraded ? [] : inventory.residentKeys(),
        running: running.filter((job) => job.target === target.name),
        cost: targetCosts(perTarget[i]!, anywhere),
      };
    });
  }

  /** A job's webhook as its view shows it: a job that has not ended has no delivery yet, so none is read. */
  webhookView(job: JobRow): MaybePromise<WebhookView | null> {
    if (!job.webhookUrl) return null;
    const url = job.webhookUrl;
    return after(isTerminal(job.state) ? this.deliveries.status(job.id) : null, (delivery) => ({
      url,
      state: delivery?.state ?? "pending",
      attempts: delivery?.attempts ?? 0,
      last_status: delivery?.lastStatus ?? null,
      last_error: delivery?.lastError ?? null,
    }));
  }
}

/** Reads `X-Foreman-Priority`: absent is 0; anything but an integer in range is a 400. */
export function parsePriorityHeader(value: string | null): number {
  const text = value?.trim() ?? "";
  if (text === "") return 0;
  const n = Number(text);
  if (!/^[-+]?\d+$/.test(text) || n < PRIORITY_RANGE.min || n > PRIORITY_RANGE.max) {
    throw new BadRequestError(`X-Foreman-Priority must be an integer from ${PRIORITY_RANGE.min} to ${PRIORITY_RANGE.max}`);
  }
  return n;
}
