import type { Database } from "bun:sqlite";
import { monotonicFactory } from "ulid";

const ulid = monotonicFactory();

/** Bytes per stored chunk of an upload. */
export const CHUNK_BYTES = 1024 * 1024;

/** About how many bytes one read of a file's rows brings. */
const PAGE_BYTES = 256 * 1024;

/** One row of `files`, camelCase. */
export interface FileRow {
  id: string;
  purpose: string;
  filename: string;
  bytes: number;
  status: "uploading" | "processed";
  createdAt: number;
  /** The API key it belongs to (its uploader's, or its batch's); null without one. */
  keyId: string | null;
}

const FILE_COLUMNS = `id, purpose, filename, bytes, status, created_at AS createdAt, key_id AS keyId`;

/** A new file id, as OpenAI spells them. */
export function newFileId(now = Date.now()): string {
  return `file-${ulid(now)}`;
}

/**
 * The `files` and `file_chunks` tables: an upload is written chunk by chunk as it streams in (its row
 * `uploading` until the last byte), a batch's output grows a line per row; either is read back in
 * chunk order, a page at a time, so no file is ever whole in memory.
 */
export class FileStore {
  readonly #db: Database;
  readonly #insertStmt;
  readonly #appendStmt;
  readonly #growStmt;
  readonly #processedStmt;
  readonly #getStmt;
  readonly #deleteStmt;
  readonly #pageStmt;
  readonly #staleStmt;
  readonly #storedStmt;

  constructor(db: Database) {
    this.#db = db;
    this.#insertStmt = db.query<FileRow, [string, string, string, string, number, string | null]>(
      `INSERT INTO files (id, purpose, filename, bytes, status, created_at, key_id) VALUES (?, ?, ?, 0, ?, ?, ?)
       RETURNING ${FILE_COLUMNS}`,
    );
    this.#appendStmt = db.query<null, [string, Uint8Array]>(`INSERT INTO file_chunks (file_id, data) VALUES (?, ?)`);
    this.#growStmt = db.query<null, [number, string]>(`UPDATE files SET bytes = bytes + ? WHERE id = ?`);
    this.#processedStmt = db.query<FileRow, [string, string]>(
      `UPDATE files SET status = 'processed', purpose = ? WHERE id = ? RETURNING ${FILE_COLUMNS}`,
    );
    this.#getStmt = db.query<FileRow, [string]>(`SELECT ${FILE_COLUMNS} FROM files WHERE id = ? AND status = 'processed'`);
    this.#deleteStmt = db.query<null, [string]>(`DELETE FROM files WHERE id = ?`);
    this.#pageStmt = db.query<{ id: number; data: Uint8Array }, [string, number, number]>(
      `SELECT id, data FROM file_chunks WHERE file_id = ? AND id > ? ORDER BY id LIMIT ?`,
    );
    this.#staleStmt = db.query<null, []>(`DELETE FROM files WHERE status = 'uploading'`);
    this.#storedStmt = db.query<{ n: number }, []>(`SELECT coalesce(sum(bytes), 0) AS n FROM files`);
  }

  /** Starts an upload: the row exists but is not listed until {@link finishUpload}. */
  beginUpload(purpose: string, filename: string, keyId: string | null = null, now = Date.now()): FileRow {
    return this.#insertStmt.get(newFileId(now), purpose, filename, "uploading", now, keyId)!;
  }

  /** Appends bytes to an upload (one small transaction, so the worker's writes are never held up long). */
  append(id: string, data: Uint8Array): void {
    this.#db.transaction(() => this.appendTx(id, data)).immediate();
  }

  /** Appends bytes to a file inside the caller's transaction. */
  appendTx(id: string, data: Uint8Array): void {
    this.#appendStmt.run(id, data);
    this.#growStmt.run(data.length, id);
  }

  /** Ends an upload: the file is listed from now on, with its purpose (a form may send it after the file). */
  finishUpload(id: string, purpose: string): FileRow {
    return this.#processedStmt.get(purpose, id)!;
  }

  /** Creates a file that is listed at once (a batch's output or error file); call inside the caller's transaction. */
  createTx(id: string, purpose: string, filename: string, now: number, keyId: string | null = null): FileRow {
    return this.#insertStmt.get(id, purpose, filename, "processed", now, keyId)!;
  }

  /** A listed file, or null. */
  get(id: string): FileRow | null {
    return this.#getStmt.get(id);
  }

  /** Files newest first, `limit` after the id `after`, optionally of one purpose; `order` "asc" reverses. */
  list(options: { purpose?: string; after?: string; limit: number; order: "asc" | "desc"; keyId?: string }): FileRow[] {
    const where = ["status = 'processed'"];
    const params: (string | number)[] = [];
    if (options.keyId !== undefined) (where.push("key_id = ?"), params.push(options.keyId));
    if (options.purpose) (where.push("purpose = ?"), params.push(options.purpose));
    if (options.after) (where.push(options.order === "asc" ? "id > ?" : "id < ?"), params.push(options.after));
    params.push(options.limit);
    const order = options.order === "asc" ? "ASC" : "DESC";
    return this.#db
      .query<FileRow, (string | number)[]>(
        `SELECT ${FILE_COLUMNS} FROM files WHERE ${where.join(" AND ")} ORDER BY id ${order} LIMIT ?`,
      )
      .all(...params);
  }

  /** Deletes a file and its bytes; false when there was none. */
  delete(id: string): boolean {
    return this.#deleteStmt.run(id).changes > 0;
  }

  /** Bytes of every file stored: uploads (unfinished ones too) and batches' output and error files. */
  storedBytes(): number {
    return this.#storedStmt.get()!.n;
  }

  /** Drops uploads a crash or a broken connection left unfinished. */
  removeStaleUploads(): number {
    return this.#staleStmt.run().changes;
  }

  /**
   * The file's bytes, chunk by chunk in order, read a page of rows at a time: a few rows of an upload
   * (1 MiB each), more of an output file (a line each), so a page stays near PAGE_BYTES.
   */
  *chunks(id: string): Generator<Uint8Array> {
    let last = 0;
    let rows = 4;
    for (;;) {
      const page = this.#pageStmt.all(id, last, rows);
      let bytes = 0;
      for (const row of page) {
        bytes += row.data.length;
        yield row.data;
      }
      if (page.length < rows) return;
      last = page[page.length - 1]!.id;
      if (bytes < PAGE_BYTES / 2) rows = Math.min(rows * 2, 4096);
    }
  }

  /**
   * The file's lines (without their line ends), 1-numbered, decoded as UTF-8; a last line without "\n"
   * counts. A line longer than `maxLineChars` is not kept whole: it comes as `tooLong` with no text.
   */
  *lines(id: string, maxLineChars = Infinity): Generator<{ number: number; text: string; tooLong?: true }> {
    const decoder = new TextDecoder();
    let pending = "";
    let skipping = false;
    let number = 0;
    const line = (text: string) => ({ number: ++number, text: text.endsWith("\r") ? text.slice(0, -1) : text });
    for (const chunk of this.chunks(id)) {
      const text = decoder.decode(chunk, { stream: true });
      let start = 0;
      for (let end = text.indexOf("\n"); end >= 0; end = text.indexOf("\n", start)) {
        if (skipping) yield { number: ++number, text: "", tooLong: true };
        else yield line(pending + text.slice(start, end));
        pending = "";
        skipping = false;
        start = end + 1;
      }
      if (!skipping) pending += text.slice(start);
      if (pending.length > maxLineChars) ((skipping = true), (pending = ""));
    }
    if (!skipping) pending += decoder.decode();
    if (skipping) yield { number: ++number, text: "", tooLong: true };
    else if (pending !== "") yield line(pending);
  }

  /** The file's bytes as a stream (for /content), read from the database as the client takes them. */
  stream(id: string): ReadableStream<Uint8Array> {
    const chunks = this.chunks(id);
    return new ReadableStream({
      pull(controller) {
        const next = chunks.next();
        if (next.done) controller.close();
        else controller.enqueue(next.value);
      },
      cancel() {
        chunks.return(undefined);
      },
    });
  }
}

/** A file as OpenAI's API shows it. */
export function fileObject(file: FileRow) {
  return {
    id: file.id,
    object: "file" as const,
    bytes: file.bytes,
    created_at: Math.floor(file.createdAt / 1000),
    filename: file.filename,
    purpose: file.purpose,
    status: "processed" as const,
    expires_at: null,
    status_details: null,
  };
}
