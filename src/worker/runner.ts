import { IncompleteAnswerError } from "../adapters/adapter";
import { adapterFor } from "../adapters";
import {
  FRAMING_CONTENT_TYPES,
  type Framing,
  framingFor,
  lastRecord,
  recordChunks,
  splitRecords,
  tryJson,
} from "../adapters/framing";
import { asObject } from "../adapters/sse-json";
import { formatDuration } from "../duration";
import { ConnectionError, ConnectionRefusedError, HttpError, OllamaClient, fetchErrorText } from "../ollama/client";
import { isStorageError } from "../queue/storage-health";
import { type MaybePromise, after, isPromise } from "../queue/maybe-promise";
import type { RunnerStore } from "../queue/runner-store";
import { type ArtifactInput, CLIENT_CANCELED, type JobRow } from "../queue/store";
import type { Logger } from "../log";
import type { OllamaTarget } from "../config";
import { normalizeModel } from "../ollama/model-key";
import { isNobodyWaiting } from "../queue/job-states";
import { retryDelayMs } from "./backoff";
import { placementFor } from "./placement";
import type { FromWorker, UpstreamErrorKind, WorkerSettings } from "./protocol";

/** Why an upstream call was aborted; decides what happens to the job afterwards. */
type AbortCause = { kind: "canceled" } | { kind: "shutdown" } | { kind: "timeout"; message: string };

class AbortedByRunner extends Error {
  constructor(readonly why: AbortCause) {
    super(why.kind === "timeout" ? why.message : why.kind);
  }
}

/**
 * What the runners of one worker share: hang-ups whose cancel is on its way (any runner may have claimed
 * the job), and each other, for placement. One runner alone is foreman with one Ollama, as it always was.
 */
export class RunnerGroup {
  readonly gone = new Set<string>();
  /**
   * Attempts given back because a target went away under the job, by job id. Bounded by the number of
   * targets: a job that takes down every host it is sent to (or a network that drops every stream) then
   * spends its attempts like any connection error, rather than being handed round for ever.
   */
  readonly refunds = new Map<string, number>();
  readonly runners: JobRunner[] = [];
  /**
   * An async store's claim on its way, by whichever runner of the group: the next claim waits for its
   * answer (see {@link JobRunner.#claim}). Never set with a sync store, whose claims cannot overlap.
   */
  claiming: Promise<unknown> | undefined;
  /**
   * Cancels that came while {@link claiming} was on its way: the job may be the one it claimed, which
   * no runner holds yet. The claim's answer looks here before it is published.
   */
  canceledWhileClaiming = new Set<string>();

  /** Several targets: claims are limited to installed models and weigh the other targets. */
  get several(): boolean {
    return this.runners.length > 1;
  }

  /** Something changed for every runner (a job ended, a target came back): each looks for work. */
  wakeAll(): void {
    for (const runner of this.runners) runner.wake();
  }
}

/** A job claimed for the GPU: its row is loading, and cancel or shutdown abort it through the controller. */
interface Claimed {
  job: JobRow;
  controller: AbortController;
}

/** A job whose upstream request has left; {@link JobRunner.#runJob} reads its answer. */
interface Dispatch extends Claimed {
  /** Ollama's response (headers); rejects on a connection error or an error status. */
  response: Promise<Response>;
  /** When Ollama last sent something (epoch ms), for the stall check. */
  lastOutputAt: number;
  /** Clears the job's timeout and stall timers. */
  timers: Array<() => void>;
}

/** How often a write that failed for space (a full disk) is tried again. */
const STORAGE_RETRY_MS = 1000;

/**
 * After an answer this big (its records, their copy joined, its text, its parsed records: several times
 * its size in garbage) the worker collects at once, while the next job already runs: left to the
 * collector's own pace, six 37 MB answers in a row took the process from 70 to 700 MB.
 */
const COLLECT_AFTER_BYTES = 8 * 1024 * 1024;

/** How often an idle slot of several looks again when jobs wait that it may not take (see #idleMs). */
const IDLE_POLL_MS = 1000;

/** How often finished jobs past their TTL are pruned while the loop idles. */
const PRUNE_EVERY_MS = 60_000;
/**
 * How long a request sent after an aborted one waits. Aborting closes that connection, but Ollama (or a
 * fake) learns of it only when its event loop reads the close, and the next request on another socket
 * can be read first: for a moment it would serve two. Aborts are rare (a cancel, a hang-up, a timeout),
 * so the next job waits this long after one rather than race it (CI saw the fake count two in flight).
 */
const ABORT_SETTLE_MS = 50;

/**
 * The worker's loop: claims one job at a time, streams it from Ollama, relays each line, and records
 * the outcome. It owns the upstream fetch; it never answers HTTP. The loop never dies on a bad job.
 */
export class JobRunner {
  readonly #store: RunnerStore;
  readonly #ollama: OllamaClient;
  /** The Ollama host this runner claims for and sends to. */
  readonly target: OllamaTarget;
  readonly #group: RunnerGroup;
  readonly #settings: WorkerSettings;
  readonly #post: (message: FromWorker) => void;
  readonly #log: Logger;

  #residentKeys: string[] = [];
  /** Several targets: the models (normalized names) this target has installed; none before its first poll. */
  #installed = new Set<string>();
  #lastRunKey: string | undefined;
  #reachable = true;
  #stopping = false;
  /**
   * Jobs claimed here and not yet settled, by id, with their model key: per slot one, or for a moment two
   * (the next claimed ahead, the last being recorded). Their keys decide what a free slot may claim.
   */
  readonly #running = new Map<string, { controller: AbortController; modelKey: string }>();
  /** Each idle slot's wake-up. */
  readonly #wakers = new Set<() => void>();
  #lastPrune = 0;
  /** Set while a write fails for space: the loop holds the queue and the HTTP thread's /healthz says so. */
  #storageError: string | undefined;
  /** When shutdown's grace ends: a write still failing for space then is given up. */
  #stopDeadline = Infinity;
  /** Set after a big answer: collect once the job's frame is gone (see COLLECT_AFTER_BYTES). */
  #collect = false;
  /** When an upstream request in flight was last aborted (see ABORT_SETTLE_MS). */
  #abortedAt = 0;
  /** Jobs whose clients hung up, their cancel not yet here (see {@link clientGone}); shared by the group. */
  readonly #gone: Set<string>;
  /** How many wakes came (a job queued, an inventory, a job's end elsewhere): see {@link #nothingNew}. */
  #wakes = 0;
  /** {@link #wakes} when a claim ahead found the queue empty, until the loop looks (see {@link #nothingNew}). */
  #emptyAt: number | undefined;

  /**
   * A runner for `target` (default: the first configured), one of `group` (default: a group of its own).
   * Its target's slots are so many job loops of its own, which claim one model key at a time.
   */
  constructor(
    store: RunnerStore,
    settings: WorkerSettings,
    post: (message: FromWorker) => void,
    log: Logger,
    options: { target?: OllamaTarget; group?: RunnerGroup } = {},
  ) {
    this.#store = store;
    this.#settings = settings;
    this.#post = post;
    this.#log = log;
    this.target = options.target ?? settings.targets[0]!;
    this.#group = options.group ?? new RunnerGroup();
    this.#group.runners.push(this);
    this.#gone = this.#group.gone;
    this.#ollama = new OllamaClient({ baseUrl: this.target.url, token: this.target.token });
  }

  /**
   * Runs until {@link shutdown} is called and the running job has settled. Crash recovery comes first
   * (unless `recover` is false: one runner of a group recovers for all, before any claims), then
   * `onRecovered` (the worker says it is ready then: the HTTP side takes requests only once it is, so
   * recovery never touches a request of this process). Then one loop per slot.
   */
  async run(onRecovered: () => void = () => {}, { recover = true } = {}): Promise<void> {
    if (recover) await this.#recover();
    onRecovered();
    await Promise.all(Array.from({ length: this.target.slots }, () => this.#slot()));
  }

  /** What this runner holds, for the others' placement: resident keys, the key in flight, how much is left of it. */
  get state(): { reachable: boolean; residentKeys: readonly string[]; busyKey: string | undefined; inFlight: number } {
    const keys = [...this.#running.values()].map((r) => r.modelKey);
    return {
      reachable: this.#reachable && !this.#stopping,
      // The key in flight counts as resident from its claim: it is loading, or loaded, here.
      residentKeys: [...keys.slice(0, 1), ...(this.#lastRunKey ? [this.#lastRunKey] : []), ...this.#residentKeys],
      busyKey: keys[0],
      inFlight: keys.length,
    };
  }

  /** Whether this target has the model of `modelKey` installed (its last poll). */
  hasInstalled(modelKey: string): boolean {
    return this.#installed.has(normalizeModel(modelKey.split(" ")[0]!));
  }

  /** One slot's loop: claims a job when the slot is free, streams it, records it. */
  async #slot(): Promise<void> {
    // A job dispatched ahead is run even when stopping: shutdown aborts and re-queues it after the grace.
    let next: Dispatch | undefined;
    while (next || !this.#stopping) {
      try {
        if (next) {
          const dispatched = next;
          next = undefined;
          next = await this.#runJob(dispatched);
          if (this.#collect) {
            // Out of #runJob, whose answer is garbage now.
            this.#collect = false;
            Bun.gc(true);
          }
          continue;
        }
        this.#pruneIfDue();
        // A wake while an async store answers (the claim, nextRunAfter) finds no sleep to end: see below.
        const wakes = this.#wakes;
        let claimed = this.#reachable && !this.#nothingNew() ? this.#claim() : null;
        if (isPromise(claimed)) claimed = await claimed;
        // The claim wrote, or found nothing to write: either way no write is pending any more.
        if (this.#reachable) this.#storageWorks();
        if (claimed) {
          const sent = this.#send(claimed);
          next = isPromise(sent) ? await sent : sent;
          continue;
        }
        let idleMs = this.#reachable ? this.#idleMs() : PRUNE_EVERY_MS;
        if (isPromise(idleMs)) idleMs = await idleMs;
        // Its job may have been queued after the claim's read: look again rather than sleep past it.
        if (this.#wakes !== wakes) continue;
        await this.#sleep(idleMs);
      } catch (error) {
        // A database error (disk full, a lock past busy_timeout) must not end the loop: log, pause, go on.
        // A full disk holds the queue: a claim that fails leaves its job queued, no attempt spent.
        if (isStorageError(error)) this.#storageFails(error);
        else this.#log.error("job loop error", { error });
        await this.#sleep(isStorageError(error) ? STORAGE_RETRY_MS : 1000);
      }
    }
  }

  /**
   * Crash recovery. A full disk is waited out, as a job's end is (#untilWritten): the loop, which would
   * otherwise start on rows recovery has not settled, starts once it lands (or at shutdown, without it).
   */
  async #recover(): Promise<void> {
    try {
      const result = await this.#untilWritten("crash recovery", () => this.#store.recoverInterruptedJobs());
      if (!result) return;
      const { requeued, failed, canceled } = result;
      if (requeued.length || failed.length || canceled.length) {
        this.#log.warn("recovered interrupted jobs", {
          requeued: requeued.length,
          failed: failed.length,
          canceled_client_requests: canceled.length,
        });
      }
      for (const job of [...failed, ...canceled]) this.#post({ type: "ended", jobId: job.id });
    } catch (error) {
      // The loop still runs (new jobs are served); interrupted rows stay as they were until the next start.
      this.#log.error("crash recovery failed", { error });
    }
  }

  /** Something changed (a job was queued): look for work now. */
  wake(): void {
    this.#wakes++;
    for (const wake of [...this.#wakers]) wake();
  }

  /**
   * Whether the queue is known empty for this slot: a claim ahead at the last job's final record found
   * nothing, the job then ended well, and no wake came since (every queued job wakes the loop). Then
   * the loop sleeps without claiming again: that second empty claim, a write transaction, came at the
   * job's end, just as the HTTP thread queued the client's next request, and the two waited on each
   * other's lock. One slot of one target only: other slots' ends and keys change what may be claimed.
   */
  #nothingNew(): boolean {
    const emptyAt = this.#emptyAt;
    this.#emptyAt = undefined;
    return emptyAt === this.#wakes && this.target.slots === 1 && !this.#group.several;
  }

  /**
   * Updates what the target has loaded, whether it answers and (several targets) what it has installed;
   * recovery wakes the loop.
   */
  setInventory(residentKeys: string[], reachable: boolean, installed?: readonly string[]): void {
    this.#residentKeys = residentKeys;
    const back = reachable && !this.#reachable;
    this.#reachable = reachable;
    if (installed) this.#installed = new Set(installed.map(normalizeModel));
    if (reachable) this.wake();
    if (back) this.#log.info("target back in rotation", { target: this.target.name });
  }

  /**
   * The job was canceled in the database: abort its upstream call if it is running here. With an async
   * store it may be the job a claim on its way has just marked loading: that claim's answer sees it.
   */
  cancel(jobId: string): void {
    this.#gone.delete(jobId);
    if (this.#group.claiming) this.#group.canceledWhileClaiming.add(jobId);
    this.#running.get(jobId)?.controller.abort(new AbortedByRunner({ kind: "canceled" }));
  }

  /**
   * The job's waiting client hung up, and the HTTP thread will cancel it with the other hang-ups of
   * the moment: until then, a claim of it must not be sent (see {@link #send}).
   */
  clientGone(jobId: string): void {
    this.#gone.add(jobId);
  }

  /** Stops claiming; the running job may finish within graceMs, after which it is aborted and re-queued. */
  shutdown(graceMs: number): void {
    this.#stopping = true;
    this.#stopDeadline = Date.now() + graceMs;
    this.wake();
    for (const { controller } of this.#running.values()) {
      setTimeout(() => controller.abort(new AbortedByRunner({ kind: "shutdown" })), graceMs).unref?.();
    }
  }

  /**
   * Claims the next job for this target. `finishing` is the caller's own job at its final record (a claim
   * ahead): the other slots' jobs decide the key. With none in flight any key may come; with one key in
   * flight only that key (the claim says no when the ordering picks another: that key waits for them to
   * end); with two (one claimed ahead of a key change) nothing. The job claimed is registered (for
   * cancel, and as this target's key in flight) as the claim's answer lands.
   *
   * With an async store the claims of the group go one at a time: a claim waits for the one on its
   * way, and then reads the keys in flight and the other runners' state (placement) afresh, so it sees
   * what the claim before it took, as it would on SQLite, where a claim is one synchronous step. Left to
   * overlap, two slots of one target could claim two keys at once, and placement would weigh a target
   * idle whose claim is already on its way.
   */
  #claim(finishing?: string): MaybePromise<Claimed | null> {
    const pending = this.#group.claiming;
    if (pending) {
      // Shutdown may have begun meanwhile: then nothing more is claimed.
      const retry = () => (this.#stopping ? null : this.#claim(finishing));
      return pending.then(retry, retry);
    }
    const keys = new Set([...this.#running].filter(([id]) => id !== finishing).map(([, r]) => r.modelKey));
    if (keys.size > 1) return null;
    const residentKeys = this.#lastRunKey
      ? [this.#lastRunKey, ...this.#residentKeys.filter((k) => k !== this.#lastRunKey)]
      : this.#residentKeys;
    const several = this.#group.several;
    const answer = this.#store.claimNextJob({
      schedule: this.#settings.schedule,
      residentKeys,
      maxWaitMs: this.#settings.maxWaitMs,
      fairSlackLoads: this.#settings.fairSlackLoads,
      target: this.target.name,
      onlyKey: keys.size === 1 ? [...keys][0] : undefined,
      eligible: several ? (modelKey) => this.hasInstalled(modelKey) : undefined,
      placement: several ? this.#placement() : undefined,
    });
    if (!isPromise(answer)) return this.#claimed(answer, false);
    const group = this.#group;
    group.canceledWhileClaiming.clear();
    const claiming = answer
      .then((job) => this.#claimed(job, group.canceledWhileClaiming.has(job?.id ?? "")))
      .finally(() => {
        group.claiming = undefined;
        group.canceledWhileClaiming.clear();
      });
    group.claiming = claiming;
    return claiming;
  }

  /** Registers a job just claimed here; `canceled`: its cancel came before the claim's answer. */
  #claimed(job: JobRow | null, canceled: boolean): Claimed | null {
    if (!job) return null;
    const controller = new AbortController();
    if (canceled) controller.abort(new AbortedByRunner({ kind: "canceled" }));
    this.#running.set(job.id, { controller, modelKey: job.modelKey });
    return { job, controller };
  }

  /** Several targets: this target's learned costs, and the others' resident groups (see placement.ts). */
  #placement() {
    return placementFor(this, this.#group.runners, this.#store);
  }

  /**
   * How long an idle slot sleeps (a wake ends it sooner). With several targets or slots a job may be
   * runnable and yet not this slot's (another key in flight, a model not installed here, a group left to
   * another target): then it waits for a wake (a job's end anywhere, an enqueue, an inventory), polling
   * each IDLE_POLL_MS, rather than spinning on claims.
   */
  #idleMs(): MaybePromise<number> {
    return after(this.#store.nextRunAfter(), (next) => {
      const ms = next === null ? PRUNE_EVERY_MS : Math.max(0, Math.min(PRUNE_EVERY_MS, next - Date.now()));
      return ms === 0 && (this.#group.several || this.target.slots > 1) ? IDLE_POLL_MS : ms;
    });
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        this.#wakers.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      this.#wakers.add(wake);
    });
  }

  /** Prunes when due; an async store's prune goes on beside the loop (its failure is logged). */
  #pruneIfDue(): void {
    const now = Date.now();
    if (now - this.#lastPrune < PRUNE_EVERY_MS) return;
    this.#lastPrune = now;
    const pruned = this.#store.pruneFinishedJobs(now - this.#settings.jobTtlMs);
    const told = (count: number) => {
      if (count) this.#log.info("pruned finished jobs", { count });
    };
    if (isPromise(pruned)) pruned.then(told, (error) => this.#log.error("pruning finished jobs failed", { error }));
    else told(pruned);
  }

  /**
   * {@link #dispatch}, unless the job's client has hung up (its cancel on the way from the HTTP thread):
   * then it is canceled here, never sent, and undefined returned for the loop to claim again. A job
   * canceled already is dropped, and one claimed as shutdown began is given back: with a sync store
   * neither happens between a claim and its send, with an async one both may while the claim is answered.
   */
  #send(claimed: Claimed): MaybePromise<Dispatch | undefined> {
    const { job } = claimed;
    if (claimed.controller.signal.aborted) return this.#aborted(claimed);
    if (this.#stopping) return this.#giveBack(claimed);
    if (!this.#gone.has(job.id)) return this.#dispatch(claimed);
    this.#gone.delete(job.id);
    this.#running.delete(job.id);
    return after(this.#store.cancelJob(job.id, CLIENT_CANCELED), (canceled) => {
      if (canceled) this.#post({ type: "ended", jobId: job.id });
      this.#log.info("job canceled before it was sent", { job: job.id });
      return undefined;
    });
  }

  /**
   * A claimed job whose controller was aborted before it was sent: by a cancel (dropped), or by the
   * end of shutdown's grace (given back, as a job claimed at shutdown is).
   */
  #aborted(claimed: Claimed): MaybePromise<undefined> {
    const reason: unknown = claimed.controller.signal.reason;
    if (reason instanceof AbortedByRunner && reason.why.kind === "shutdown") return this.#giveBack(claimed);
    return this.#notSent(claimed);
  }

  /** A claimed job whose row was canceled since (the HTTP thread told its listeners): dropped, never sent. */
  #notSent(claimed: Claimed): undefined {
    this.#running.delete(claimed.job.id);
    this.#log.info("job canceled before it was sent", { job: claimed.job.id });
    return undefined;
  }

  /** A claimed job not sent because shutdown began: back to the queue, its attempt refunded. */
  #giveBack(claimed: Claimed): MaybePromise<undefined> {
    const { job } = claimed;
    this.#running.delete(job.id);
    return after(this.#store.requeueJob(job.id, Date.now(), "re-queued at shutdown", null, true), () => {
      this.#post({ type: "state", jobId: job.id, state: "queued" });
      return undefined;
    });
  }

  /**
   * Puts a claimed job on the GPU: its timers start and its upstream request leaves now; the caller
   * reads the answer with {@link #runJob}. A request that cannot even be built rejects `response`.
   */
  #dispatch({ job, controller }: Claimed): Dispatch {
    const abortWith = (cause: AbortCause) => controller.abort(new AbortedByRunner(cause));
    const { jobTimeoutMs, stallTimeoutMs } = this.#settings;
    const dispatch: Dispatch = { job, controller, response: undefined!, lastOutputAt: Date.now(), timers: [] };
    // 0 turns either limit off.
    if (jobTimeoutMs > 0) {
      const timer = setTimeout(
        () => abortWith({ kind: "timeout", message: `job timed out after ${formatDuration(jobTimeoutMs)}` }),
        jobTimeoutMs,
      );
      dispatch.timers.push(() => clearTimeout(timer));
    }
    try {
      const adapter = adapterFor(job.type);
      let body = JSON.parse(job.request) as Record<string, unknown>;
      // A client waiting on its answer gets what it asked Ollama for, byte for byte: the row's request is
      // already that body's JSON, sent as it is (not stringified again). A job API job always streams:
      // its watchers see the pieces, and the final answer is assembled as its API would.
      if (job.source === "jobs") body = adapter.streamingBody(body);
      const payload = job.source === "jobs" ? JSON.stringify(body) : job.request;
      // Silence is only a stall when Ollama streams; a non-streaming answer is silent until it is whole,
      // so only the job timeout bounds it. The check reads a timestamp rather than re-arming a timer per chunk.
      if (adapter.streams(body) && stallTimeoutMs > 0) {
        const check = setInterval(
          () => {
            if (Date.now() - dispatch.lastOutputAt > stallTimeoutMs) {
              abortWith({ kind: "timeout", message: `no output from ollama for ${formatDuration(stallTimeoutMs)}` });
            }
          },
          Math.max(10, Math.min(1000, stallTimeoutMs / 10)),
        );
        dispatch.timers.push(() => clearInterval(check));
      }
      const send = () => this.#ollama.request("POST", adapter.upstreamPath, payload, controller.signal);
      const settle = this.#abortedAt + ABORT_SETTLE_MS - Date.now();
      dispatch.response = settle > 0 ? Bun.sleep(settle).then(send) : send();
    } catch (error) {
      dispatch.response = Promise.reject(error);
    }
    // Told after the request has left: the GPU need not wait for the message.
    this.#post({ type: "state", jobId: job.id, state: "loading" });
    this.#log.debug("job claimed", { job: job.id, model: job.modelKey, attempt: job.attempts, target: this.target.name });
    // Awaited by #runJob as soon as the previous job's bookkeeping is done; this only keeps a rejection
    // that lands before then from counting as unhandled.
    dispatch.response.catch(() => {});
    return dispatch;
  }

  /**
   * Streams a dispatched job's answer, relaying each record, and records its outcome. The next job is
   * claimed as soon as Ollama's final record arrives and sent once the body has ended (Ollama is idle
   * again), both *before* this job's bookkeeping (result assembly, artifacts, webhook row), so the GPU
   * waits on neither SQLite nor a claim; that next job is returned for the loop to run.
   * Never throws once a next job is claimed.
   */
  async #runJob(dispatch: Dispatch): Promise<Dispatch | undefined> {
    const { job, controller } = dispatch;
    const chunks: Uint8Array[] = [];
    let framing: Framing = "whole";
    // A claim ahead (at the final record); an async store's answer may still be on its way.
    let claimed: MaybePromise<Claimed | undefined>;
    let next: Dispatch | undefined;
    try {
      const adapter = adapterFor(job.type);
      const response = await dispatch.response;
      this.#lastRunKey = job.modelKey;
      const contentType = response.headers.get("content-type") ?? "application/json";
      framing = framingFor(contentType);
      let size = 0;
      let firstOutputAt = Date.now();
      for await (const bytes of readChunks(response.body!, framing, controller.signal)) {
        dispatch.lastOutputAt = Date.now();
        const first = chunks.length === 0;
        if (first) firstOutputAt = dispatch.lastOutputAt;
        // Bounded memory: past FOREMAN_MAX_RESULT the answer is neither kept nor stored (the relayed part is).
        size += bytes.byteLength;
        if (size > this.#settings.maxResultBytes) {
          throw new HttpError(413, `the answer exceeded FOREMAN_MAX_RESULT (${this.#settings.maxResultBytes} bytes)`);
        }
        chunks.push(bytes);
        // Relay first, record after: the database write need not delay the client's first token. The
        // first record says the job is working (one message, not a state and then a chunk).
        this.#post(first ? { type: "chunk", jobId: job.id, bytes, contentType } : { type: "chunk", jobId: job.id, bytes });
        const last = lastRecord(bytes, framing);
        const error = adapter.recordError(last, framing);
        if (error !== undefined) throw new HttpError(500, error);
        // Generation is over; only the body's end is still on its way. Claim now, send at that end.
        const final = !claimed && adapter.isFinal(last, framing);
        // An answer whole in its first read (any non-streaming one) goes from loading to done in the end's
        // write, moments away: a `working` write in between would only cost a transaction per request.
        // A stream's is written once the records already read have been relayed (its write only moves
        // a `loading` row: an end written first stays).
        if (first && !final) setImmediate(() => this.#markWorking(job.id));
        if (final) claimed = this.#claimAhead(job.id);
      }
      if (controller.signal.aborted) throw controller.signal.reason;
      // The body has ended, so Ollama serves nothing now: the next job goes out before this one's
      // bookkeeping. A crash in between leaves both rows running; recovery re-queues both, as it would
      // either alone (this one's client was relayed its answer but the job API has not yet said done).
      let ahead = claimed ?? this.#claimAhead(job.id);
      if (isPromise(ahead)) ahead = await ahead;
      const sent = this.#dispatchClaimed(ahead);
      next = isPromise(sent) ? await sent : sent;
      claimed = undefined; // handed over: sent, or given back at shutdown
      const answer = Buffer.concat(chunks);
      const records = splitRecords(answer.toString("utf8"), framing);
      const resultText = adapter.assemble(records, framing);
      const artifacts: ArtifactInput[] = [{ name: "result.json", contentType: "application/json", data: resultText }];
      if (framing !== "whole") artifacts.push(streamArtifact(answer, framing));
      let usage = adapter.usage(asObject(tryJson(resultText)) ?? {});
      // A stream not asked for its usage (most OpenAI clients) is counted instead, its bytes untouched:
      // one output record per token, timed from the first record to the last as seen here.
      if (usage.outputTokens === null && framing !== "whole" && adapter.countOutputRecords) {
        const evalMs = dispatch.lastOutputAt - firstOutputAt;
        usage = {
          ...usage,
          outputTokens: adapter.countOutputRecords(records),
          evalMs: evalMs > 0 ? evalMs : null,
          estimated: true,
        };
      }
      // The client may already hold its whole answer (the relay sends before this write): the end is
      // written once, however long the disk stays full, so the job is never left running to be re-run.
      this.#group.refunds.delete(job.id);
      if (await this.#untilWritten("a job's end", () => this.#store.finishJob(job.id, resultText, artifacts, usage))) {
        this.#post({ type: "ended", jobId: job.id });
      }
      if (answer.byteLength >= COLLECT_AFTER_BYTES) this.#collect = true;
    } catch (error) {
      // A claim ahead on its way is answered first: its outcome is part of what follows.
      if (isPromise(claimed)) claimed = await claimed;
      // A failed attempt may go back to the queue: the loop claims again.
      this.#emptyAt = undefined;
      const cause = controller.signal.aborted ? controller.signal.reason : error;
      if (controller.signal.aborted) this.#abortedAt = Date.now();
      const relayed = chunks.length ? streamArtifact(Buffer.concat(chunks), framing) : undefined;
      try {
        const settled = cause instanceof IncompleteAnswerError ? new ConnectionError(cause.message) : cause;
        await this.#untilWritten("a job's end", () => this.#settle(job, settled, relayed));
      } catch (settleError) {
        if (!claimed && !next) throw settleError;
        // A next job is already claimed (or on the GPU) and must run; this row stays running until recovery.
        this.#log.error("job loop error", { error: settleError });
      }
      // Claimed at the final record, but the body then failed: this attempt is settled, so it goes now.
      if (claimed) {
        const sent = this.#dispatchClaimed(claimed);
        next = isPromise(sent) ? await sent : sent;
      }
    } finally {
      for (const clear of dispatch.timers) clear();
      this.#running.delete(job.id);
      this.#gone.delete(job.id);
      // A slot freed: this target's idle slots may now change key, and the other targets' placement changed.
      if (this.target.slots > 1 || this.#group.several) this.#group.wakeAll();
    }
    if (next) this.#pruneIfDue();
    return next;
  }

  /**
   * The next job, claimed and registered for cancel (not yet sent), unless the loop is stopping or
   * Ollama is down. Never rejects. An async store's answer comes while the body is still read.
   */
  #claimAhead(finishing: string): MaybePromise<Claimed | undefined> {
    if (this.#stopping || !this.#reachable) return undefined;
    // The wakes before the claim's read: one that comes while an async claim is on its way may be a
    // job the claim did not see, so the queue is not known empty after it.
    const wakes = this.#wakes;
    const found = (claimed: Claimed | null) => {
      this.#emptyAt = claimed ? undefined : wakes;
      return claimed ?? undefined;
    };
    const failed = (error: unknown) => {
      // The loop's own claim will try again (and pause on a database error) once this job is recorded.
      this.#log.error("job loop error", { error });
      return undefined;
    };
    try {
      const claimed = this.#claim(finishing);
      return isPromise(claimed) ? claimed.then(found, failed) : found(claimed);
    } catch (error) {
      return failed(error);
    }
  }

  /**
   * Sends a job claimed ahead, or gives it back to the queue when shutdown began in between. It was
   * claimed at the last answer's final record, a while ago: one look at its row first (an indexed read
   * of one column), since a client that hung up since then has canceled it in the database before its
   * cancel message can reach this thread.
   */
  #dispatchClaimed(claimed: Claimed | undefined): MaybePromise<Dispatch | undefined> {
    if (!claimed) return undefined;
    if (claimed.controller.signal.aborted) return this.#aborted(claimed);
    return after(this.#stillClaimed(claimed.job.id), (still) => (still === false ? this.#notSent(claimed) : this.#send(claimed)));
  }

  /**
   * Marks the job working; a full disk does not stop its answer (its end, written later, needs no
   * `working`), nor does another failure (logged: the row stays loading until its end).
   */
  #markWorking(jobId: string): void {
    const failed = (error: unknown) => {
      if (isStorageError(error)) this.#storageFails(error);
      else this.#log.error("job loop error", { error });
    };
    try {
      const marked = this.#store.markWorking(jobId);
      if (isPromise(marked)) marked.catch(failed);
    } catch (error) {
      failed(error);
    }
  }

  /**
   * Runs a write that must land (a job's end): while it fails for space it is tried again every second,
   * and the loop, awaiting it, claims nothing. Other errors are thrown. At shutdown it is given up when the
   * grace period ends (undefined): the row stays running, and the next start's recovery decides its fate.
   */
  async #untilWritten<T>(what: string, write: () => MaybePromise<T>): Promise<T | undefined> {
    for (;;) {
      try {
        const written = write();
        const result = isPromise(written) ? await written : written;
        this.#storageWorks();
        return result;
      } catch (error) {
        if (!isStorageError(error)) throw error;
        this.#storageFails(error);
        if (this.#stopping && Date.now() >= this.#stopDeadline) {
          this.#log.error(`gave up writing ${what} at shutdown: the disk is still full`, { error });
          return undefined;
        }
        await Bun.sleep(STORAGE_RETRY_MS);
      }
    }
  }

  /** A write failed for space: said once per outage, in the log and to the HTTP thread. */
  #storageFails(error: unknown): void {
    const message = error instanceof Error ? error.message : String(error);
    if (this.#storageError === undefined) {
      this.#log.error("the database cannot be written (disk full?): holding the queue until space returns", { error });
    }
    if (this.#storageError !== message) this.#post({ type: "storage", error: message });
    this.#storageError = message;
  }

  /** A write landed (or none was pending) after one failed for space: the queue resumes. */
  #storageWorks(): void {
    if (this.#storageError === undefined) return;
    this.#storageError = undefined;
    this.#log.info("the database can be written again: the queue resumes");
    this.#post({ type: "storage" });
  }

  /** Whether the row is still as the claim left it (loading); undefined when the database cannot say. */
  #stillClaimed(id: string): MaybePromise<boolean | undefined> {
    // A database error: send it, as before this look.
    try {
      const state = this.#store.jobState(id);
      return isPromise(state)
        ? state.then(
            (s) => s === "loading",
            () => undefined,
          )
        : state === "loading";
    } catch {
      return undefined;
    }
  }

  /** Decides a failed attempt's fate: canceled, re-queued (with backoff) or failed. */
  #settle(job: JobRow, error: unknown, relayed: ArtifactInput | undefined): MaybePromise<void> {
    if (error instanceof AbortedByRunner && error.why.kind === "canceled") {
      this.#log.info("job canceled while running", { job: job.id });
      return; // The HTTP thread marked it canceled and told its listeners.
    }
    if (error instanceof AbortedByRunner && error.why.kind === "shutdown") {
      return after(this.#store.requeueJob(job.id, Date.now(), "re-queued at shutdown", null, true), () => {
        this.#post({ type: "state", jobId: job.id, state: "queued" });
      });
    }
    const message = error instanceof Error ? error.message : String(error);
    const kind = upstreamErrorKind(error);
    if (error instanceof ConnectionRefusedError) {
      // Ollama is down, and the request never reached it: an outage, not this job's attempt. Hold the
      // queue (no claims until the inventory sees Ollama again) and give the attempt back.
      this.#reachable = false;
      this.#post({ type: "unreachable", target: this.target.name });
      return after(this.#store.requeueJob(job.id, Date.now(), message, 502, true), () => {
        this.#post({ type: "attempt-failed", jobId: job.id, kind: "refused", retry: true, target: this.target.name });
        this.#post({ type: "state", jobId: job.id, state: "queued" });
      });
    }
    const timedOut = error instanceof AbortedByRunner;
    const unreachable = error instanceof ConnectionError;
    const busy = error instanceof HttpError && error.status === 503;
    const status = error instanceof HttpError ? error.status : unreachable ? 502 : timedOut ? 504 : 500;
    if (unreachable) {
      this.#reachable = false;
      this.#post({ type: "unreachable", target: this.target.name });
    }
    const refunds = this.#group.refunds.get(job.id) ?? 0;
    const refund = refunds < this.#group.runners.length;
    if (unreachable && this.#group.several && refund && (!relayed || isNobodyWaiting(job.source))) {
      this.#group.refunds.set(job.id, refunds + 1);
      // Several targets: the host went away under the job, which is no fault of the job's. It goes back
      // with its attempt refunded, at once, for a target that answers (this one claims nothing until its
      // inventory sees it again).
      return after(this.#store.requeueJob(job.id, Date.now(), message, status, true), () => {
        this.#log.warn("target lost a running job: re-queued for another", {
          job: job.id,
          target: this.target.name,
          error: message,
        });
        this.#post({ type: "attempt-failed", jobId: job.id, kind: "connection", retry: true, target: this.target.name });
        this.#post({ type: "state", jobId: job.id, state: "queued" });
        this.#group.wakeAll();
      });
    }
    // A client that already received tokens cannot be given a second answer; a job API or batch job can.
    const retryable = (unreachable || busy || timedOut) && (!relayed || job.source === "jobs" || job.source === "batch");
    if (retryable && job.attempts < job.maxAttempts) {
      const delay = retryDelayMs(job.attempts);
      return after(this.#store.requeueJob(job.id, Date.now() + delay, message, status), () => {
        this.#log.warn("job attempt failed, retrying", { job: job.id, attempt: job.attempts, delay_ms: delay, error: message });
        if (kind) this.#post({ type: "attempt-failed", jobId: job.id, kind, retry: true, target: this.target.name });
        this.#post({ type: "state", jobId: job.id, state: "queued" });
      });
    }
    // Written before anything is told: a write that fails for space runs this again (#untilWritten).
    this.#group.refunds.delete(job.id);
    return after(this.#store.failJob(job.id, message, status, relayed ? [relayed] : []), (failed) => {
      if (kind) this.#post({ type: "attempt-failed", jobId: job.id, kind, retry: false, target: this.target.name });
      if (failed) {
        this.#log.warn("job failed", { job: job.id, status, error: message });
        this.#post({ type: "ended", jobId: job.id });
      }
    });
  }
}

/** The kind of an upstream failure, for metrics; undefined for a failure of foreman's own (not Ollama's). */
function upstreamErrorKind(error: unknown): UpstreamErrorKind | undefined {
  if (error instanceof ConnectionRefusedError) return "refused";
  if (error instanceof ConnectionError) return "connection";
  if (error instanceof AbortedByRunner) return "timeout";
  if (error instanceof HttpError) return error.status < 500 ? "http_4xx" : "http_5xx";
  return undefined;
}

/** The records relayed, exactly: stream.ndjson, or stream.sse for Server-Sent Events. */
function streamArtifact(bytes: Uint8Array, framing: Framing): ArtifactInput {
  return framing === "sse"
    ? { name: "stream.sse", contentType: FRAMING_CONTENT_TYPES.sse, data: bytes }
    : { name: "stream.ndjson", contentType: FRAMING_CONTENT_TYPES.ndjson, data: bytes };
}

/** Ollama's records by network read; a body that breaks off (not by our abort) is a connection error, worth a retry. */
async function* readChunks(body: ReadableStream<Uint8Array>, framing: Framing, signal: AbortSignal): AsyncGenerator<Uint8Array> {
  try {
    yield* recordChunks(body, framing);
  } catch (error) {
    if (signal.aborted) throw signal.reason;
    throw new ConnectionError(`connection to ollama lost mid-response: ${fetchErrorText(error)}`);
  }
}
