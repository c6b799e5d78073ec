import { BadRequestError, ConflictError, NotFoundError } from "../errors";
import type { JobService } from "../job-service";
import type { Logger } from "../log";
import type { FileStore } from "./files";
import type { KeyRow } from "../keys/key-store";
import { OPEN_ADMIN, type Principal, keyPrincipal, modelAllowed, sees } from "../keys/principal";
import { type AdmittedLine, type BatchError, type BatchRow, type BatchStore } from "./store";
import { BATCH_ENDPOINTS, type BatchEndpoint, type ClassifiedLine, classifyLine } from "./validate";
import type { JobStore } from "../queue/store";

/** The only completion window OpenAI accepts. */
export const COMPLETION_WINDOW = "24h";
/** Most requests one batch may hold, OpenAI's limit. */
export const MAX_REQUESTS = 50_000;
/** Most entries a failed batch's `errors` lists. */
const MAX_ERRORS = 100;
/**
 * Lines queued per transaction while a batch is admitted; the HTTP thread serves requests between two.
 * (Measured: 50,000 lines in one transaction held it for about 2 s; a slice of 500 takes about 20 ms.)
 */
const ADMIT_SLICE_LINES = 500;
/** Longest wait between expiry checks (a newly created batch re-arms the timer sooner). */
const EXPIRY_CHECK_MS = 60_000;

/** What a client sends to POST /v1/batches, already type-checked. */
export interface BatchRequest {
  input_file_id: string;
  endpoint: string;
  completion_window: string;
  metadata?: Record<string, string> | null;
  webhook?: { url: string; secret?: string };
}

/** Batch settings from the config. */
export interface BatchSettings {
  /** FOREMAN_BATCH_PRIORITY: the priority of batch lines, default -1 (below interactive traffic, 0). */
  batchPriority: number;
  /** FOREMAN_BATCH_WINDOW: how long a batch may run before it expires, default 24h. */
  batchWindowMs: number;
  maxAttempts: number;
  /** FOREMAN_MAX_BODY: a line longer than this is malformed (as its body would be refused). */
  maxBodyBytes: number;
}

/**
 * OpenAI's Batch API over the queue: validates an input file line by line, queues each valid line as
 * a job (source "batch", below interactive priority), cancels and expires batches. Lines' results are
 * recorded by the worker as their jobs end (see BatchLedger); this class never scans them.
 */
export class BatchService {
  #expiryTimer: Timer | undefined;
  #running = false;
  readonly #validations = new Set<Promise<void>>();
  /** Called when a batch ended on this thread, so its webhook goes out now. */
  onBatchEnded: () => void = () => {};
  /** A key's row by id (a batch's lines are checked against its key's models); composeForeman sets it. */
  keyOf: (keyId: string) => KeyRow | null = () => null;

  constructor(
    readonly store: BatchStore,
    readonly files: FileStore,
    readonly jobs: JobService<JobStore>,
    readonly settings: BatchSettings,
    readonly log: Logger,
  ) {}

  /** Resumes what a restart interrupted (validations, cancels) and starts the expiry timer. */
  start(): void {
    this.#running = true;
    const stale = this.files.removeStaleUploads();
    if (stale) this.log.info("removed unfinished uploads", { count: stale });
    for (const batch of this.store.open()) {
      if (batch.status === "validating") this.#startValidation(batch.id);
      else if (batch.ending) this.#cancelQueued(batch);
    }
    this.#armExpiry();
  }

  stop(): void {
    this.#running = false;
    clearTimeout(this.#expiryTimer);
  }

  /**
   * Checks a create request and records the batch (status validating), the principal's; validation goes on
   * in the background. A key must name its own input file, and not have used its daily tokens.
   */
  create(request: BatchRequest, principal: Principal = OPEN_ADMIN): BatchRow {
    if (!(request.endpoint in BATCH_ENDPOINTS)) {
      throw new BadRequestError(`endpoint must be one of ${Object.keys(BATCH_ENDPOINTS).join(", ")}`);
    }
    if (request.completion_window !== COMPLETION_WINDOW) {
      throw new BadRequestError(`completion_window must be "${COMPLETION_WINDOW}"`);
    }
    if (request.metadata && Object.keys(request.metadata).length > 16) {
      throw new BadRequestError("metadata may have at most 16 keys");
    }
    const file = this.files.get(request.input_file_id);
    if (!file || !sees(principal, file.keyId)) throw new NotFoundError(`No such File object: ${request.input_file_id}`);
    const key = principal.key;
    const now = Date.now();
    if (key)
      this.jobs.store.keyUsage.checkQuota({ keyId: key.id, name: key.name, dailyTokens: key.dailyTokens }, this.jobs.clock());
    const ceiling = key?.maxPriority ?? null;
    if (file.purpose !== "batch") throw new BadRequestError(`input_file_id must name a file uploaded with purpose "batch"`);
    const batch = this.store.create(
      {
        endpoint: request.endpoint,
        inputFileId: file.id,
        completionWindow: request.completion_window,
        metadata: request.metadata ?? null,
        priority: ceiling === null ? this.settings.batchPriority : Math.min(this.settings.batchPriority, ceiling),
        maxAttempts: this.settings.maxAttempts,
        expiresAt: now + this.settings.batchWindowMs,
        webhook: request.webhook,
        keyId: principal.keyId,
      },
      now,
    );
    this.#startValidation(batch.id);
    return batch;
  }

  /** Resolves once every validation under way has ended (tests, shutdown). */
  async settled(): Promise<void> {
    await Promise.all([...this.#validations]);
  }

  #startValidation(batchId: string): void {
    const validation = this.#validate(batchId).finally(() => this.#validations.delete(validation));
    this.#validations.add(validation);
  }

  /** Cancels a batch: unstarted lines are canceled, running ones finish; ends `cancelled`. 409 once it has ended. */
  cancel(id: string, principal: Principal = OPEN_ADMIN): BatchRow {
    const batch = this.store.get(id);
    if (!batch || !sees(principal, batch.keyId)) throw new NotFoundError(`No batch found with id '${id}'.`);
    if (batch.status === "validating") {
      const cancelled = this.store.cancelValidating(id);
      // Part of it queued already (it was being admitted): its queued lines are canceled as a running batch's.
      if (cancelled?.status === "cancelling") this.#cancelQueued(cancelled);
      else if (cancelled) this.onBatchEnded();
      if (cancelled) return this.store.get(id)!;
    }
    const marked = this.store.markEnding(id, "cancel");
    if (marked) {
      this.#cancelQueued(marked);
      return this.store.get(id)!;
    }
    const current = this.store.get(id)!;
    // Already on its way out (cancelled, or expiring: its unstarted lines are being dropped either way).
    if (current.status === "cancelling" || current.status === "cancelled" || current.ending) return current;
    throw new ConflictError(`Cannot cancel a batch with status ${current.status}.`);
  }

  /** Cancels the batch's lines not yet started; each ends in the error file (batch_cancelled or batch_expired). */
  #cancelQueued(batch: BatchRow): void {
    const reason =
      batch.ending === "expire"
        ? { error: "the batch's completion window expired", status: 499 }
        : { error: "the batch was cancelled", status: 499 };
    for (const jobId of this.store.queuedJobIds(batch.id)) this.jobs.cancel(jobId, reason);
    this.onBatchEnded();
  }

  #armExpiry(): void {
    if (!this.#running) return;
    clearTimeout(this.#expiryTimer);
    const next = this.store.nextExpiry();
    const delay = next === null ? EXPIRY_CHECK_MS : Math.max(0, Math.min(EXPIRY_CHECK_MS, next - Date.now()));
    this.#expiryTimer = setTimeout(() => this.#expire(), delay);
  }

  #expire(): void {
    try {
      for (const batch of this.store.expired()) {
        const marked = this.store.markEnding(batch.id, "expire");
        if (!marked) continue;
        this.log.info("batch expired", { batch: batch.id });
        this.#cancelQueued(marked);
      }
    } catch (error) {
      this.log.error("batch expiry check failed", { error });
    }
    this.#armExpiry();
  }

  /**
   * Reads the input file twice: once to find malformed lines (the batch fails with `errors`) and the
   * models it names, then, once the models are checked, again to queue its lines in slices of
   * ADMIT_SLICE_LINES, one transaction each, yielding to the event loop between two; after a restart the
   * queueing resumes after the line the last slice reached.
   */
  async #validate(batchId: string): Promise<void> {
    try {
      const batch = this.store.get(batchId);
      if (!batch || batch.status !== "validating") return;
      const endpoint = batch.endpoint as BatchEndpoint;
      const errors: BatchError[] = [];
      const seen = new Set<string>();
      const models = new Set<string>();
      let requests = 0;
      let lines = 0;
      for (const { number, text, tooLong } of this.files.lines(batch.inputFileId, this.settings.maxBodyBytes)) {
        // Let other requests in now and then while a big file is read.
        if (++lines % 2000 === 0) await Bun.sleep(0);
        const line: ClassifiedLine = tooLong
          ? {
              kind: "malformed",
              error: {
                code: "line_too_long",
                message: `This line is longer than FOREMAN_MAX_BODY (${this.settings.maxBodyBytes} bytes).`,
                param: null,
                line: number,
              },
            }
          : classifyLine(text, number, endpoint);
        if (line.kind === "blank") continue;
        if (line.kind === "malformed") {
          if (errors.length < MAX_ERRORS) errors.push(line.error);
          continue;
        }
        if (seen.has(line.customId)) {
          if (errors.length < MAX_ERRORS) {
            errors.push({
              code: "duplicate_custom_id",
              message:
                "The custom_id for this request is a duplicate of another request. The custom_id parameter must be unique for each individual request in a batch.",
              param: "custom_id",
              line: number,
            });
          }
          continue;
        }
        seen.add(line.customId);
        requests++;
        if (line.kind === "request") models.add(line.model);
      }
      if (requests > MAX_REQUESTS) {
        errors.push({
          code: "too_many_requests",
          message: `The input file has ${requests} requests; a batch may hold at most ${MAX_REQUESTS}.`,
          param: null,
          line: null,
        });
      }
      if (errors.length === 0 && requests === 0) {
        errors.push({ code: "empty_file", message: "The input file has no requests.", param: null, line: null });
      }
      if (errors.length) {
        if (this.store.fail(batchId, errors)) this.onBatchEnded();
        this.log.info("batch failed validation", { batch: batchId, errors: errors.length });
        return;
      }
      const unknown = new Set<string>();
      const ownerKey = batch.keyId === null ? null : (this.keyOf(batch.keyId) ?? null);
      const owner = ownerKey ? keyPrincipal(ownerKey) : OPEN_ADMIN;
      for (const model of models) {
        // While Ollama is unreachable its model list may be stale: such lines run and fail on their own if need be.
        const known = (await this.jobs.inventory.knows(model)) || this.jobs.inventory.snapshot.degraded;
        // A model outside the batch's key's scope is one it does not have, as on the interactive routes.
        if (!model || !known || !modelAllowed(owner, model)) unknown.add(model);
      }
      let slice: AdmittedLine[] = [];
      let through = batch.admittedThrough;
      for (const line of this.#admittedLines(batch.inputFileId, endpoint, unknown)) {
        if (line.number <= batch.admittedThrough) continue;
        slice.push(line);
        through = line.number;
        if (slice.length < ADMIT_SLICE_LINES) continue;
        if (!this.store.admitSlice(batchId, slice, through, false)) return;
        slice = [];
        this.jobs.link.wake();
        await Bun.sleep(0);
      }
      if (!this.store.admitSlice(batchId, slice, through, true)) return;
      this.jobs.link.wake();
      this.log.info("batch queued", { batch: batchId, requests });
      const row = this.store.get(batchId);
      if (row && row.status !== "in_progress") this.onBatchEnded();
      this.#armExpiry();
    } catch (error) {
      // Stopped under it (shutdown closes the database): the batch resumes after its last slice at the next start.
      if (!this.#running) return;
      this.log.error("batch validation failed", { batch: batchId, error });
      try {
        const message = error instanceof Error ? error.message : String(error);
        if (this.store.fail(batchId, [{ code: "internal_error", message, param: null, line: null }])) {
          // Slices queued before the failure are canceled, not left to run for a failed batch.
          for (const jobId of this.store.queuedJobIds(batchId)) this.jobs.cancel(jobId, { error: message, status: 500 });
          this.onBatchEnded();
        }
      } catch {
        // The database is closing (shutdown): the batch stays validating and is validated again at the next start.
      }
    }
  }

  *#admittedLines(fileId: string, endpoint: BatchEndpoint, unknown: ReadonlySet<string>): Generator<AdmittedLine> {
    for (const { number, text, tooLong } of this.files.lines(fileId, this.settings.maxBodyBytes)) {
      if (tooLong) continue;
      const line = classifyLine(text, number, endpoint);
      if (line.kind === "blank" || line.kind === "malformed") continue;
      if (line.kind === "refused") {
        yield { number, kind: "error", customId: line.customId, status: line.status, message: line.message };
      } else if (unknown.has(line.model)) {
        yield { number, kind: "error", customId: line.customId, status: 404, message: `model '${line.model}' not found` };
      } else {
        const { customId, type, model, modelKey, request } = line;
        yield { number, kind: "job", customId, type, model, modelKey, request };
      }
    }
  }
}
