// A full disk is an outage, not a crash: writes that fail for space answer 503 with Retry-After, /healthz
// says degraded with the reason, the worker holds the queue, and everything resumes once space returns.
import type { Database } from "bun:sqlite";

/**
 * Whether a database or file write failed for want of space or of a working disk: SQLite's SQLITE_FULL and
 * its I/O errors (an ENOSPC that reaches SQLite as a failed write, fsync or -shm growth), or a file
 * system's ENOSPC/EDQUOT. Such a failure passes once space returns; it is no bug of the request.
 */
export function isStorageError(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code !== "string") return false;
  return code === "SQLITE_FULL" || code.startsWith("SQLITE_IOERR") || code === "ENOSPC" || code === "EDQUOT";
}

/** What a client is told while storage is full, and how long to wait (seconds) before trying again. */
export const STORAGE_FULL_MESSAGE = "foreman cannot write its database (the disk is full); try again later";
export const STORAGE_RETRY_AFTER_SECONDS = 5;

/** What the dashboard and GET /queue say while storage is degraded: what it means for clients and the queue. */
export const STORAGE_DEGRADED_MESSAGE =
  "The database cannot be written (disk full?): new requests get 503 and the queue is held until space returns.";

/** How often, while degraded, the HTTP thread tries a write to see whether space has returned. */
const PROBE_MS = 1000;

/**
 * The HTTP thread's view of storage: degraded while its own last write failed for space (until a probe
 * write lands) or while the worker has a write it cannot make (the worker says when it lands).
 */
export class StorageHealth {
  #httpError: string | undefined;
  #workerError: string | undefined;
  #probe: ReturnType<typeof setInterval> | undefined;
  readonly #write: () => void;
  readonly #listeners = new Set<() => void>();

  /** `write` is the cheapest write that still needs room on disk (see {@link probeWrite}). */
  constructor(write: () => void) {
    this.#write = write;
  }

  /** The reason storage is degraded, or undefined while it is healthy. */
  get reason(): string | undefined {
    const error = this.#httpError ?? this.#workerError;
    return error === undefined ? undefined : `storage: cannot write the database (${error})`;
  }

  /** Whether storage is degraded now (see {@link reason}). */
  get degraded(): boolean {
    return this.reason !== undefined;
  }

  /** Calls `listener` whenever storage turns degraded or healthy (the dashboard's feed); returns its removal. */
  onChange(listener: () => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** A write on this thread failed for space: degraded until a probe write lands. */
  failed(error: unknown): void {
    this.#change(() => (this.#httpError = error instanceof Error ? error.message : String(error)));
    this.#probe ??= setInterval(() => this.#tryProbe(), PROBE_MS);
    (this.#probe as { unref?: () => void }).unref?.();
  }

  /** The worker's word: `error` while its pending write fails for space, undefined once it landed. */
  worker(error: string | undefined): void {
    this.#change(() => (this.#workerError = error));
  }

  /** Applies `update`, telling the listeners when it turned storage degraded or healthy. */
  #change(update: () => void): void {
    const was = this.degraded;
    update();
    if (this.degraded !== was) for (const listener of this.#listeners) listener();
  }

  #tryProbe(): void {
    try {
      this.#write();
    } catch (error) {
      if (isStorageError(error)) return;
    }
    this.#change(() => (this.#httpError = undefined));
    clearInterval(this.#probe);
    this.#probe = undefined;
  }

  stop(): void {
    clearInterval(this.#probe);
    this.#probe = undefined;
  }
}

/**
 * Rewrites the schema version with its own value: a one-page write that touches no row, so it lands only
 * if the WAL can grow by a frame.
 */
export function probeWrite(db: Database): () => void {
  return () => {
    const { user_version: version } = db.query<{ user_version: number }, []>("PRAGMA user_version").get()!;
    db.run(`PRAGMA user_version = ${version}`);
  };
}
