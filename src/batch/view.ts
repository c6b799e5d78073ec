import type { BatchRow } from "./store";

const seconds = (ms: number | null) => (ms === null ? null : Math.floor(ms / 1000));

/** A batch as OpenAI's API shows it; an output or error file id appears once the file holds a line. */
export function batchObject(batch: BatchRow) {
  return {
    id: batch.id,
    object: "batch" as const,
    endpoint: batch.endpoint,
    errors: batch.errors === null ? null : (JSON.parse(batch.errors) as unknown),
    input_file_id: batch.inputFileId,
    completion_window: batch.completionWindow,
    status: batch.status,
    output_file_id: batch.completed > 0 ? batch.outputFileId : null,
    error_file_id: batch.failed + batch.canceled > 0 ? batch.errorFileId : null,
    created_at: seconds(batch.createdAt)!,
    in_progress_at: seconds(batch.inProgressAt),
    expires_at: seconds(batch.expiresAt),
    finalizing_at: seconds(batch.finalizingAt),
    completed_at: seconds(batch.completedAt),
    failed_at: seconds(batch.failedAt),
    expired_at: seconds(batch.expiredAt),
    cancelling_at: seconds(batch.cancellingAt),
    cancelled_at: seconds(batch.cancelledAt),
    request_counts: { total: batch.total, completed: batch.completed, failed: batch.failed },
    metadata: batch.metadata === null ? null : (JSON.parse(batch.metadata) as Record<string, string>),
  };
}

/** The Standard Webhooks body of an ended batch: `{type: "batch.<status>", timestamp, data}`, the same bytes every attempt. */
export function batchWebhookPayload(batch: BatchRow): string {
  const ended = batch.completedAt ?? batch.failedAt ?? batch.expiredAt ?? batch.cancelledAt ?? batch.createdAt;
  return JSON.stringify({ type: `batch.${batch.status}`, timestamp: new Date(ended).toISOString(), data: batchObject(batch) });
}
