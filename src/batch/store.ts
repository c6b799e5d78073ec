import type { Database } from "bun:sqlite";
import { monotonicFactory } from "ulid";
import { errorBody } from "../adapters/error-shapes";
import type { JobType } from "../adapters";
import type { FairShare } from "../queue/fair-share";
import type { BatchLedger } from "./ledger";
import type { FileStore } from "./files";
import { newFileId } from "./files";

const ulid = monotonicFactory();

/** A batch's status, as OpenAI names them. */
export type BatchStatus =
  "validating" | "failed" | "in_progress" | "finalizing" | "completed" | "expired" | "cancelling" | "cancelled";

/** One row of `batches`, camelCase; times are epoch ms. */
export interface BatchRow {
  id: string;
  endpoint: string;
  inputFileId: string;
  completionWindow: string;
  status: BatchStatus;
  metadata: string | null;
  errors: string | null;
  outputFileId: string;
  errorFileId: string;
  total: number;
  completed: number;
  failed: number;
  canceled: number;
  priority: number;
  maxAttempts: number;
  ending: "cancel" | "expire" | null;
  webhookUrl: string | null;
  webhookSecret: string | null;
  createdAt: number;
  inProgressAt: number | null;
  expiresAt: number;
  finalizingAt: number | null;
  completedAt: number | null;
  failedAt: number | null;
  expiredAt: number | null;
  cancellingAt: number | null;
  cancelledAt: number | null;
  /** The input line number the admission has queued through (see {@link BatchStore.admitSlice}). */
  admittedThrough: number;
  /** The API key that made it (its lines and files are the key's too); null without one. */
  keyId: string | null;
}

const BATCH_COLUMNS = `id, endpoint, input_file_id AS inputFileId, completion_window AS completionWindow, status, metadata,
  errors, output_file_id AS outputFileId, error_file_id AS errorFileId, total, completed, failed, canceled, priority,
  max_attempts AS maxAttempts, ending, webhook_url AS webhookUrl, webhook_secret AS webhookSecret, created_at AS createdAt,
  in_progress_at AS inProgressAt, expires_at AS expiresAt, finalizing_at AS finalizingAt, completed_at AS completedAt,
  failed_at AS failedAt, expired_at AS expiredAt, cancelling_at AS cancellingAt, cancelled_at AS cancelledAt,
  admitted_through AS admittedThrough, key_id AS keyId`;

/** What a new batch needs. */
export interface NewBatch {
  endpoint: string;
  inputFileId: string;
  completionWindow: string;
  metadata: Record<string, string> | null;
  priority: number;
  maxAttempts: number;
  expiresAt: number;
  webhook?: { url: string; secret?: string };
  keyId?: string | null;
}

/** A validated line (`number`: its line in the input file): a job to queue, or a per-line failure for the error file. */
export type AdmittedLine = { number: number } & (
  | { kind: "job"; customId: string; type: JobType; model: string; modelKey: string; request: string }
  | { kind: "error"; customId: string; status: number; message: string }
);

/** The `batches` and `batch_requests` tables, as the HTTP thread uses them. */
export class BatchStore {
  readonly #db: Database;
  readonly #files: FileStore;
  readonly #ledger: BatchLedger;
  readonly #insertStmt;
  readonly #getStmt;
  readonly #insertJobStmt;
  readonly #insertRequestStmt;
  readonly #startStmt;
  readonly #sliceStmt;
  readonly #cancelAdmittingStmt;
  readonly #failStmt;
  readonly #cancelValidatingStmt;
  readonly #endingStmt;
  readonly #queuedJobsStmt;
  readonly #openStmt;
  readonly #nextExpiryStmt;
  readonly #expiredStmt;
  readonly #usingStmt;

  /** Lifts the batch's key's counter when its lines are its first to wait (as JobStore's enqueue does). */
  readonly #fair: FairShare | undefined;

  constructor(db: Database, files: FileStore, ledger: BatchLedger, fair?: FairShare) {
    this.#db = db;
    this.#fair = fair;
    this.#files = files;
    this.#ledger = ledger;
    this.#insertStmt = db.query<BatchRow, Record<string, string | number | null>>(
      `INSERT INTO batches (id, endpoint, input_file_id, completion_window, status, metadata, output_file_id, error_file_id,
         priority, max_attempts, webhook_url, webhook_secret, created_at, expires_at, key_id)
       VALUES ($id, $endpoint, $inputFileId, $completionWindow, 'validating', $metadata, $outputFileId, $errorFileId,
         $priority, $maxAttempts, $webhookUrl, $webhookSecret, $now, $expiresAt, $keyId)
       RETURNING ${BATCH_COLUMNS}`,
    );
    this.#getStmt = db.query<BatchRow, [string]>(`SELECT ${BATCH_COLUMNS} FROM batches WHERE id = ?`);
    this.#insertJobStmt = db.query<null, [string, string, string, string, string, number, number, number, string | null]>(
      `INSERT INTO jobs (id, type, model, model_key, request, source, state, priority, attempts, max_attempts, run_after,
         created_at, key_id) VALUES (?1, ?2, ?3, ?4, ?5, 'batch', 'queued', ?6, 0, ?7, ?8, ?8, ?9)`,
    );
    this.#insertRequestStmt = db.query<null, [string, string, string]>(
      `INSERT INTO batch_requests (job_id, batch_id, custom_id) VALUES (?, ?, ?)`,
    );
    this.#sliceStmt = db.query<{ done: number; total: number }, [number, number, number, string]>(
      `UPDATE batches SET total = total + ?1, failed = failed + ?2, admitted_through = ?3 WHERE id = ?4
       RETURNING completed + failed + canceled AS done, total`,
    );
    this.#startStmt = db.query<null, [number, string]>(
      `UPDATE batches SET status = 'in_progress', in_progress_at = ?1 WHERE id = ?2`,
    );
    this.#cancelAdmittingStmt = db.query<BatchRow, [number, string]>(
      `UPDATE batches SET status = 'cancelling', ending = 'cancel', cancelling_at = ?1
       WHERE id = ?2 AND status = 'validating' RETURNING ${BATCH_COLUMNS}`,
    );
    this.#failStmt = db.query<BatchRow, [number, string, string]>(
      `UPDATE batches SET status = 'failed', failed_at = ?1, errors = ?2 WHERE id = ?3 AND status = 'validating'
       RETURNING ${BATCH_COLUMNS}`,
    );
    this.#cancelValidatingStmt = db.query<BatchRow, [number, string]>(
      `UPDATE batches SET status = 'cancelled', ending = 'cancel', cancelling_at = ?1, cancelled_at = ?1
       WHERE id = ?2 AND status = 'validating' RETURNING ${BATCH_COLUMNS}`,
    );
    this.#endingStmt = db.query<BatchRow, [string, number, string]>(
      `UPDATE batches SET ending = ?1,
         status = CASE WHEN ?1 = 'cancel' THEN 'cancelling' ELSE status END,
         cancelling_at = CASE WHEN ?1 = 'cancel' THEN ?2 ELSE cancelling_at END
       WHERE id = ?3 AND status = 'in_progress' AND ending IS NULL RETURNING ${BATCH_COLUMNS}`,
    );
    this.#queuedJobsStmt = db.query<{ id: string }, [string]>(
      `SELECT r.job_id AS id FROM batch_requests r JOIN jobs j ON j.id = r.job_id
       WHERE r.batch_id = ? AND j.state = 'queued' ORDER BY r.job_id`,
    );
    this.#openStmt = db.query<BatchRow, []>(
      `SELECT ${BATCH_COLUMNS} FROM batches WHERE status IN ('validating', 'in_progress', 'cancelling') ORDER BY id`,
    );
    this.#nextExpiryStmt = db.query<{ t: number | null }, []>(
      `SELECT min(expires_at) AS t FROM batches WHERE status = 'in_progress' AND ending IS NULL`,
    );
    this.#usingStmt = db.query<{ id: string; status: BatchStatus }, [string]>(
      `SELECT id, status FROM batches WHERE status IN ('validating', 'in_progress', 'finalizing', 'cancelling')
         AND ?1 IN (input_file_id, output_file_id, error_file_id) ORDER BY id LIMIT 1`,
    );
    this.#expiredStmt = db.query<BatchRow, [number]>(
      `SELECT ${BATCH_COLUMNS} FROM batches WHERE status = 'in_progress' AND ending IS NULL AND expires_at <= ?`,
    );
  }

  /** Records a new batch, status validating. */
  create(batch: NewBatch, now = Date.now()): BatchRow {
    return this.#insertStmt.get({
      id: `batch_${ulid(now)}`,
      endpoint: batch.endpoint,
      inputFileId: batch.inputFileId,
      completionWindow: batch.completionWindow,
      metadata: batch.metadata ? JSON.stringify(batch.metadata) : null,
      outputFileId: newFileId(now),
      errorFileId: newFileId(now),
      priority: batch.priority,
      maxAttempts: batch.maxAttempts,
      webhookUrl: batch.webhook?.url ?? null,
      webhookSecret: batch.webhook?.secret ?? null,
      now,
      expiresAt: batch.expiresAt,
      keyId: batch.keyId ?? null,
    })!;
  }

  get(id: string): BatchRow | null {
    return this.#getStmt.get(id);
  }

  /** Batches newest first, `limit` of them after the id `after`. */
  list(options: { after?: string; limit: number; keyId?: string }): BatchRow[] {
    const where: string[] = [];
    const params: (string | number)[] = [];
    if (options.after) (where.push("id < ?"), params.push(options.after));
    if (options.keyId !== undefined) (where.push("key_id = ?"), params.push(options.keyId));
    params.push(options.limit);
    return this.#db
      .query<BatchRow, (string | number)[]>(
        `SELECT ${BATCH_COLUMNS} FROM batches ${where.length ? `WHERE ${where.join(" AND ")}` : ""} ORDER BY id DESC LIMIT ?`,
      )
      .all(...params);
  }

  /**
   * Queues one slice of a validated batch's lines in one transaction: a job per valid line, an error line per
   * failed one, the counts, and `through` (the input line the slice reached), so a restart resumes after it
   * and never queues a line twice. The first slice makes the output and error files; the `last` one sets the
   * batch in_progress (ending it at once if every line has ended already). Lines queued while the batch is
   * still validating may run meanwhile: the ledger counts them, and leaves ending the batch to the last slice.
   * False when the batch is no longer validating (cancelled meanwhile): nothing is queued.
   */
  admitSlice(batchId: string, lines: readonly AdmittedLine[], through: number, last: boolean, now = Date.now()): boolean {
    return this.#db
      .transaction(() => {
        const batch = this.#getStmt.get(batchId);
        if (!batch || batch.status !== "validating") return false;
        if (!this.#files.get(batch.outputFileId)) {
          this.#files.createTx(batch.outputFileId, "batch_output", `${batch.id}_output.jsonl`, now, batch.keyId);
          this.#files.createTx(batch.errorFileId, "batch_output", `${batch.id}_error.jsonl`, now, batch.keyId);
        }
        let failed = 0;
        for (const line of lines) {
          if (line.number <= batch.admittedThrough) continue;
          if (line.kind === "error") {
            failed++;
            const body = errorBody("openai", line.status, line.message);
            const record = {
              id: `batch_req_${ulid(now)}`,
              custom_id: line.customId,
              response: { status_code: line.status, request_id: null, body },
              error: null,
            };
            this.#files.appendTx(batch.errorFileId, Buffer.from(`${JSON.stringify(record)}\n`));
            continue;
          }
          const jobId = ulid(now);
          this.#fair?.liftTx(batch.keyId, now);
          this.#insertJobStmt.run(
            jobId,
            line.type,
            line.model,
            line.modelKey,
            line.request,
            batch.priority,
            batch.maxAttempts,
            now,
            batch.keyId,
          );
          this.#insertRequestStmt.run(jobId, batch.id, line.customId);
        }
        const admitted = lines.filter((line) => line.number > batch.admittedThrough).length;
        const counts = this.#sliceStmt.get(admitted, failed, Math.max(through, batch.admittedThrough), batch.id)!;
        if (last) {
          this.#startStmt.run(now, batch.id);
          if (counts.done >= counts.total) this.#ledger.finishTx(batch.id, batch, now);
        }
        return true;
      })
      .immediate();
  }

  /** Ends a validating batch failed, with OpenAI's `errors` list; queues its webhook. */
  fail(batchId: string, errors: BatchError[], now = Date.now()): BatchRow | null {
    return this.#db
      .transaction(() => {
        const row = this.#failStmt.get(now, JSON.stringify({ object: "list", data: errors }), batchId);
        if (row) this.#ledger.queueWebhookTx(row, now);
        return row;
      })
      .immediate();
  }

  /**
   * Cancels a batch still validating. With nothing queued yet it ends cancelled at once; once slices are
   * queued it goes cancelling like a running batch (the caller cancels its queued lines), and ends here
   * if its queued lines have all ended already.
   */
  cancelValidating(batchId: string, now = Date.now()): BatchRow | null {
    return this.#db
      .transaction(() => {
        const current = this.#getStmt.get(batchId);
        if (current && current.admittedThrough > 0) {
          const row = this.#cancelAdmittingStmt.get(now, batchId);
          if (row && row.completed + row.failed + row.canceled >= row.total) this.#ledger.finishTx(row.id, row, now);
          return row;
        }
        const row = this.#cancelValidatingStmt.get(now, batchId);
        if (row) this.#ledger.queueWebhookTx(row, now);
        return row;
      })
      .immediate();
  }

  /** Marks why a running batch's unstarted lines are to be canceled (cancel: status cancelling); null if it is not running. */
  markEnding(batchId: string, ending: "cancel" | "expire", now = Date.now()): BatchRow | null {
    return this.#endingStmt.get(ending, now, batchId);
  }

  /** The batch's lines still queued (not started), by job id. */
  queuedJobIds(batchId: string): string[] {
    return this.#queuedJobsStmt.all(batchId).map((row) => row.id);
  }

  /** Batches not yet ended, oldest first. */
  open(): BatchRow[] {
    return this.#openStmt.all();
  }

  /** When the next running batch expires (epoch ms); null when none runs. */
  nextExpiry(): number | null {
    return this.#nextExpiryStmt.get()!.t;
  }

  /** A batch not yet ended that reads or writes the file (its input, output or error file), or null. */
  openBatchUsing(fileId: string): { id: string; status: BatchStatus } | null {
    return this.#usingStmt.get(fileId);
  }

  /** Running batches whose window has passed. */
  expired(now = Date.now()): BatchRow[] {
    return this.#expiredStmt.all(now);
  }
}

/** One entry of a failed batch's `errors`, as OpenAI reports a malformed input file. */
export interface BatchError {
  code: string;
  message: string;
  param: string | null;
  line: number | null;
}
