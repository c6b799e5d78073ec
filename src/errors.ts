import { STORAGE_FULL_MESSAGE, STORAGE_RETRY_AFTER_SECONDS } from "./queue/storage-health";

/**
 * An error that becomes an HTTP answer with `status`, in the shape of the API whose route it came to
 * (Ollama's `{"error": message}`, OpenAI's, Anthropic's). Subclasses name the common cases; one
 * onError hook in app.ts turns them into responses.
 */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

export class BadRequestError extends ApiError {
  constructor(message: string) {
    super(400, message);
  }
}

export class NotFoundError extends ApiError {
  constructor(message: string) {
    super(404, message);
  }
}

export class ConflictError extends ApiError {
  constructor(message: string) {
    super(409, message);
  }
}

/** Ollama's own queue-full answer, two spaces after "again." included, so clients that match on it keep working. */
export class QueueFullError extends ApiError {
  constructor(retryAfterSeconds: number) {
    super(503, "server busy, please try again.  maximum pending requests exceeded", {
      "retry-after": String(retryAfterSeconds),
    });
  }
}

/** A write failed for space (src/queue/storage-health.ts): an outage the client waits out, not a 500. */
export class StorageFullError extends ApiError {
  constructor() {
    super(503, STORAGE_FULL_MESSAGE, { "retry-after": String(STORAGE_RETRY_AFTER_SECONDS) });
  }
}
