import { IncompleteAnswerError } from "../adapters/adapter";
import { adapterFor } from "../adapters";
import { type Framing, framingFor, lastRecord, recordChunks, splitRecords } from "../adapters/framing";
import { formatDuration } from "../duration";
import { ConnectionError, ConnectionRefusedError, HttpError, OllamaClient } from "../ollama/client";
import type { ArtifactInput, JobRow, JobStore } from "../queue/store";
import type { Logger } from "../log";
import { retryDelayMs } from "./backoff";
import type { FromWorker, WorkerSettings } from "./protocol";

/** Why an upstream call was aborted; decides what happens to the job afterwards. */
type AbortCause = { kind: "canceled" } | { kind: "shutdown" } | { kind: "timeout"; message: string };

class AbortedByRunner extends Error {
  constructor(readonly why: AbortCause) {
    super(why.kind === "timeout" ? why.message : why.kind);
  }
}

/** How often finished jobs past their TTL are pruned while the loop idles. */
const PRUNE_EVERY_MS = 60_000;

/**
 * The worker's loop: claims one job at a time, streams it from Ollama, relays each line, and records
 * the outcome. It owns the upstream fetch; it never answers HTTP. The loop never dies on a bad job.
 */
export class JobRunner {
  readonly #store: JobStore;
  readonly #ollama: OllamaClient;
  readonly #settings: WorkerSettings;
  readonly #post: (message: FromWorker) => void;
  readonly #log: Logger;

  #residentKeys: string[] = [];
  #lastRunKey: string | undefined;
  #reachable = true;
  #stopping = false;
  #running: { job: JobRow; controller: AbortController } | undefined;
  #wake: (() => void) | undefined;
  #lastPrune = 0;

  constructor(store: JobStore, settings: WorkerSettings, post: (message: FromWorker) => void, log: Logger) {
    this.#store = store;
    this.#settings = settings;
    this.#post = post;
    this.#log = log;
    this.#ollama = new OllamaClient({ baseUrl: settings.ollamaUrl, token: settings.ollamaToken });
  }

  /** Runs until {@link shutdown} is called and the running job has settled. */
  async run(): Promise<void> {
    const { requeued, failed } = this.#store.recoverInterruptedJobs();
    if (requeued.length || failed.length) {
      this.#log.warn("recovered interrupted jobs", { requeued: requeued.length, failed: failed.length });
    }
    for (const job of failed) this.#post({ type: "ended", jobId: job.id });
    while (!this.#stopping) {
      try {
        this.#pruneIfDue();
        const job = this.#reachable ? this.#claim() : null;
        if (job) {
          await this.#runJob(job);
          continue;
        }
        await this.#sleep(this.#reachable ? this.#untilNextRunAfter() : PRUNE_EVERY_MS);
      } catch (error) {
        // A database error (disk full, a lock past busy_timeout) must not end the loop: log, pause, go on.
        this.#log.error("job loop error", { error });
        await this.#sleep(1000);
      }
    }
  }

  /** Something changed (a job was queued): look for work now. */
  wake(): void {
    this.#wake?.();
  }

  /** Updates what Ollama has loaded and whether it answers; recovery wakes the loop. */
  setInventory(residentKeys: string[], reachable: boolean): void {
    this.#residentKeys = residentKeys;
    this.#reachable = reachable;
    if (reachable) this.wake();
  }

  /** The job was canceled in the database: abort its upstream call if it is the one running. */
  cancel(jobId: string): void {
    if (this.#running?.job.id === jobId) this.#running.controller.abort(new AbortedByRunner({ kind: "canceled" }));
  }

  /** Stops claiming; the running job may finish within graceMs, after which it is aborted and re-queued. */
  shutdown(graceMs: number): void {
    this.#stopping = true;
    this.wake();
    const running = this.#running;
    if (running) {
      setTimeout(() => running.controller.abort(new AbortedByRunner({ kind: "shutdown" })), graceMs).unref?.();
    }
  }

  #claim(): JobRow | null {
    const residentKeys = this.#lastRunKey
      ? [this.#lastRunKey, ...this.#residentKeys.filter((k) => k !== this.#lastRunKey)]
      : this.#residentKeys;
    return this.#store.claimNextJob({ schedule: this.#settings.schedule, residentKeys, maxWaitMs: this.#settings.maxWaitMs });
  }

  #untilNextRunAfter(): number {
    const next = this.#store.nextRunAfter();
    return next === null ? PRUNE_EVERY_MS : Math.max(0, Math.min(PRUNE_EVERY_MS, next - Date.now()));
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.#wake = () => {
        this.#wake = undefined;
        done();
      };
    });
  }

  #pruneIfDue(): void {
    const now = Date.now();
    if (now - this.#lastPrune < PRUNE_EVERY_MS) return;
    this.#lastPrune = now;
    const pruned = this.#store.pruneFinishedJobs(now - this.#settings.jobTtlMs);
    if (pruned) this.#log.info("pruned finished jobs", { count: pruned });
  }

  async #runJob(job: JobRow): Promise<void> {
    const controller = new AbortController();
    this.#running = { job, controller };
    this.#post({ type: "state", jobId: job.id, state: "loading" });
    this.#log.debug("job claimed", { job: job.id, model: job.modelKey, attempt: job.attempts });

    const abortWith = (cause: AbortCause) => controller.abort(new AbortedByRunner(cause));
    const { jobTimeoutMs, stallTimeoutMs } = this.#settings;
    // 0 turns either limit off.
    const jobTimer =
      jobTimeoutMs > 0
        ? setTimeout(
            () => abortWith({ kind: "timeout", message: `job timed out after ${formatDuration(jobTimeoutMs)}` }),
            jobTimeoutMs,
          )
        : undefined;
    let stallCheck: Timer | undefined;
    let lastOutputAt = Date.now();

    const chunks: Uint8Array[] = [];
    let framing: Framing = "whole";
    try {
      const adapter = adapterFor(job.type);
      let body = JSON.parse(job.request) as Record<string, unknown>;
      // A client waiting on its answer gets what it asked Ollama for, byte for byte. A job API job always
      // streams: its watchers see the pieces, and the final answer is assembled as its API would.
      if (job.source === "jobs") body = adapter.streamingBody(body);
      const streamed = adapter.describe(body).stream;
      // Silence is only a stall when Ollama streams; a non-streaming answer is silent until it is whole,
      // so only the job timeout bounds it. The check reads a timestamp rather than re-arming a timer per chunk.
      if (streamed && stallTimeoutMs > 0) {
        stallCheck = setInterval(
          () => {
            if (Date.now() - lastOutputAt > stallTimeoutMs) {
              abortWith({ kind: "timeout", message: `no output from ollama for ${formatDuration(stallTimeoutMs)}` });
            }
          },
          Math.max(10, Math.min(1000, stallTimeoutMs / 10)),
        );
      }
      const response = await this.#ollama.request("POST", adapter.upstreamPath, JSON.stringify(body), controller.signal);
      this.#lastRunKey = job.modelKey;
      const contentType = response.headers.get("content-type") ?? "application/json";
      framing = framingFor(contentType);
      let size = 0;
      for await (const bytes of readChunks(response.body!, framing, controller.signal)) {
        lastOutputAt = Date.now();
        const first = chunks.length === 0;
        // Bounded memory: past FOREMAN_MAX_RESULT the answer is neither kept nor stored (the relayed part is).
        size += bytes.byteLength;
        if (size > this.#settings.maxResultBytes) {
          throw new HttpError(413, `the answer exceeded FOREMAN_MAX_RESULT (${this.#settings.maxResultBytes} bytes)`);
        }
        chunks.push(bytes);
        // Relay first, record after: the database write need not delay the client's first token.
        if (first) this.#post({ type: "state", jobId: job.id, state: "working", contentType });
        this.#post({ type: "chunk", jobId: job.id, bytes });
        if (first) this.#store.markWorking(job.id);
        const error = adapter.recordError(lastRecord(bytes, framing), framing);
        if (error !== undefined) throw new HttpError(500, error);
      }
      if (controller.signal.aborted) throw controller.signal.reason;
      const answer = Buffer.concat(chunks);
      const resultText = adapter.assemble(splitRecords(answer.toString("utf8"), framing), framing);
      const artifacts: ArtifactInput[] = [{ name: "result.json", contentType: "application/json", data: resultText }];
      if (framing !== "whole") artifacts.push(streamArtifact(answer, framing));
      if (this.#store.finishJob(job.id, resultText, artifacts)) this.#post({ type: "ended", jobId: job.id });
    } catch (error) {
      const cause = controller.signal.aborted ? controller.signal.reason : error;
      const relayed = chunks.length ? streamArtifact(Buffer.concat(chunks), framing) : undefined;
      this.#settle(job, cause instanceof IncompleteAnswerError ? new ConnectionError(cause.message) : cause, relayed);
    } finally {
      clearTimeout(jobTimer);
      clearInterval(stallCheck);
      this.#running = undefined;
    }
  }

  /** Decides a failed attempt's fate: canceled, re-queued (with backoff) or failed. */
  #settle(job: JobRow, error: unknown, relayed: ArtifactInput | undefined): void {
    if (error instanceof AbortedByRunner && error.why.kind === "canceled") {
      this.#log.info("job canceled while running", { job: job.id });
      return; // The HTTP thread marked it canceled and told its listeners.
    }
    if (error instanceof AbortedByRunner && error.why.kind === "shutdown") {
      this.#store.requeueJob(job.id, Date.now(), "re-queued at shutdown", null, true);
      this.#post({ type: "state", jobId: job.id, state: "queued" });
      return;
    }
    const message = error instanceof Error ? error.message : String(error);
    if (error instanceof ConnectionRefusedError) {
      // Ollama is down, and the request never reached it: an outage, not this job's attempt. Hold the
      // queue (no claims until the inventory sees Ollama again) and give the attempt back.
      this.#reachable = false;
      this.#post({ type: "unreachable" });
      this.#store.requeueJob(job.id, Date.now(), message, 502, true);
      this.#post({ type: "state", jobId: job.id, state: "queued" });
      return;
    }
    const timedOut = error instanceof AbortedByRunner;
    const unreachable = error instanceof ConnectionError;
    const busy = error instanceof HttpError && error.status === 503;
    const status = error instanceof HttpError ? error.status : unreachable ? 502 : timedOut ? 504 : 500;
    if (unreachable) {
      this.#reachable = false;
      this.#post({ type: "unreachable" });
    }
    // A client that already received tokens cannot be given a second answer; a job API job can.
    const retryable = (unreachable || busy || timedOut) && (!relayed || job.source === "jobs");
    if (retryable && job.attempts < job.maxAttempts) {
      const delay = retryDelayMs(job.attempts);
      this.#store.requeueJob(job.id, Date.now() + delay, message, status);
      this.#log.warn("job attempt failed, retrying", { job: job.id, attempt: job.attempts, delay_ms: delay, error: message });
      this.#post({ type: "state", jobId: job.id, state: "queued" });
      return;
    }
    if (this.#store.failJob(job.id, message, status, relayed ? [relayed] : [])) {
      this.#log.warn("job failed", { job: job.id, status, error: message });
      this.#post({ type: "ended", jobId: job.id });
    }
  }
}

/** The records relayed, exactly: stream.ndjson, or stream.sse for Server-Sent Events. */
function streamArtifact(bytes: Uint8Array, framing: Framing): ArtifactInput {
  return framing === "sse"
    ? { name: "stream.sse", contentType: "text/event-stream", data: bytes }
    : { name: "stream.ndjson", contentType: "application/x-ndjson", data: bytes };
}

/** Ollama's records by network read; a body that breaks off (not by our abort) is a connection error, worth a retry. */
async function* readChunks(body: ReadableStream<Uint8Array>, framing: Framing, signal: AbortSignal): AsyncGenerator<Uint8Array> {
  try {
    yield* recordChunks(body, framing);
  } catch (error) {
    if (signal.aborted) throw signal.reason;
    throw new ConnectionError(`connection to ollama lost mid-response: ${(error as Error).message}`);
  }
}
