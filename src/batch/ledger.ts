import type { Database } from "bun:sqlite";
import { errorBody } from "../adapters/error-shapes";
import type { JobRow } from "../queue/job-row";
import type { WebhookDeliveries } from "../webhook/deliveries";

/** What the end of a batch line records about its batch. */
interface LineOwner {
  batchId: string;
  customId: string;
  outputFileId: string;
  errorFileId: string;
  ending: "cancel" | "expire" | null;
  webhookUrl: string | null;
  webhookSecret: string | null;
}

/** The status a batch ends in once every line has ended, by why its unstarted lines were canceled. */
const FINAL_STATUS = { none: "completed", cancel: "cancelled", expire: "expired" } as const;

/**
 * The batch side of a job's end: writes the line's output (or error) line, counts it, and ends the
 * batch when it was the last one, all inside the transaction that ends the job (a JobEndHook, see src/tables.ts).
 * Both threads build one over their own connection.
 */
export class BatchLedger {
  readonly #ownerStmt;
  readonly #forgetStmt;
  readonly #appendStmt;
  readonly #growStmt;
  readonly #countStmt;
  readonly #finishStmt;
  readonly #deliveries: WebhookDeliveries;

  constructor(db: Database, deliveries: WebhookDeliveries) {
    this.#deliveries = deliveries;
    this.#ownerStmt = db.query<LineOwner, [string]>(
      `SELECT r.batch_id AS batchId, r.custom_id AS customId, b.output_file_id AS outputFileId,
         b.error_file_id AS errorFileId, b.ending, b.webhook_url AS webhookUrl, b.webhook_secret AS webhookSecret
       FROM batch_requests r JOIN batches b ON b.id = r.batch_id WHERE r.job_id = ?`,
    );
    this.#forgetStmt = db.query<null, [string]>(`DELETE FROM batch_requests WHERE job_id = ?`);
    // A client may have deleted the output file meanwhile: the line is then dropped, never the job's end.
    this.#appendStmt = db.query<null, [string, Uint8Array]>(
      `INSERT INTO file_chunks (file_id, data) SELECT ?1, ?2 WHERE EXISTS (SELECT 1 FROM files WHERE id = ?1)`,
    );
    this.#growStmt = db.query<null, [number, string]>(`UPDATE files SET bytes = bytes + ? WHERE id = ?`);
    this.#countStmt = db.query<{ done: number; total: number; status: string }, [number, number, number, string]>(
      `UPDATE batches SET completed = completed + ?1, failed = failed + ?2, canceled = canceled + ?3 WHERE id = ?4
       RETURNING completed + failed + canceled AS done, total, status`,
    );
    this.#finishStmt = db.query<null, [string, number, string]>(
      `UPDATE batches SET status = ?1, finalizing_at = coalesce(finalizing_at, ?2),
         completed_at = CASE WHEN ?1 = 'completed' THEN ?2 END,
         cancelled_at = CASE WHEN ?1 = 'cancelled' THEN ?2 END,
         expired_at = CASE WHEN ?1 = 'expired' THEN ?2 END
       WHERE id = ?3 AND status IN ('in_progress', 'cancelling')`,
    );
  }

  /** Records an ended job's line in its batch; a job of no batch is left alone. Call inside the job's ending transaction. */
  recordTx(job: JobRow, now: number): void {
    if (job.source !== "batch") return;
    const owner = this.#ownerStmt.get(job.id);
    // Already recorded: the row goes with the first end, so a line is never written twice.
    if (!owner) return;
    this.#forgetStmt.run(job.id);
    const line = batchLine(job, owner);
    const fileId = job.state === "done" ? owner.outputFileId : owner.errorFileId;
    const bytes = Buffer.from(`${JSON.stringify(line)}\n`);
    this.#appendStmt.run(fileId, bytes);
    this.#growStmt.run(bytes.length, fileId);
    const counts = this.#countStmt.get(
      job.state === "done" ? 1 : 0,
      job.state === "failed" ? 1 : 0,
      job.state === "canceled" ? 1 : 0,
      owner.batchId,
    )!;
    // A batch still validating is queued in slices and its total still grows: the last slice ends it if need be.
    const running = counts.status === "in_progress" || counts.status === "cancelling";
    if (running && counts.done >= counts.total) this.finishTx(owner.batchId, { ...owner, keyId: job.keyId }, now);
  }

  /** Ends a batch whose lines have all ended (completed, cancelled or expired) and queues its webhook. */
  finishTx(
    batchId: string,
    owner: Pick<LineOwner, "ending" | "webhookUrl" | "webhookSecret"> & { keyId?: string | null },
    now: number,
  ): void {
    const status = FINAL_STATUS[owner.ending ?? "none"];
    this.#finishStmt.run(status, now, batchId);
    this.queueWebhookTx(
      { id: batchId, webhookUrl: owner.webhookUrl, webhookSecret: owner.webhookSecret, keyId: owner.keyId },
      now,
    );
  }

  /** Queues the webhook of a batch that just ended, inside the transaction that ended it. */
  queueWebhookTx(
    batch: { id: string; webhookUrl: string | null; webhookSecret: string | null; keyId?: string | null },
    now: number,
  ): void {
    this.#deliveries.queueBatchTx(batch, now);
  }
}

/** A line of the output file (a done job) or the error file, as OpenAI writes them. */
function batchLine(job: JobRow, owner: LineOwner): unknown {
  const id = `batch_req_${job.id}`;
  if (job.state === "done") {
    const body = job.result === null ? null : (JSON.parse(job.result) as unknown);
    return { id, custom_id: owner.customId, response: { status_code: 200, request_id: job.id, body }, error: null };
  }
  if (job.state === "canceled") {
    return { id, custom_id: owner.customId, response: null, error: cancelError(owner.ending, job.error) };
  }
  const status = job.errorStatus ?? 500;
  return {
    id,
    custom_id: owner.customId,
    response: { status_code: status, request_id: job.id, body: errorBody("openai", status, job.error ?? "failed") },
    error: null,
  };
}

/** Why a line was canceled: its batch was cancelled or expired, or its job alone was canceled (DELETE /jobs/{id}). */
function cancelError(ending: LineOwner["ending"], reason: string | null): { code: string; message: string } {
  if (ending === "expire") {
    return { code: "batch_expired", message: "This request could not be executed before the completion window expired." };
  }
  if (ending === "cancel") {
    return { code: "batch_cancelled", message: "This request was not executed because the batch was cancelled." };
  }
  return { code: "request_cancelled", message: `This request was canceled: ${reason ?? "canceled"}.` };
}
