import type { Database } from "bun:sqlite";

/** One stored output of a job (result.json, stream.ndjson, …). */
export interface ArtifactInput {
  name: string;
  contentType: string;
  data: string | Uint8Array;
}

/** An artifact as listed, without its bytes. */
export interface ArtifactInfo {
  name: string;
  contentType: string;
  size: number;
  createdAt: number;
}

/** The `artifacts` table: its one owner. Rows are written inside the transaction that ends their job. */
export class ArtifactTable {
  readonly #insertStmt;
  readonly #listStmt;
  readonly #getStmt;
  readonly #sizeStmt;
  readonly #sliceStmt;

  constructor(db: Database) {
    this.#insertStmt = db.query<null, [string, string, string, Uint8Array, number]>(
      `INSERT OR REPLACE INTO artifacts (job_id, name, content_type, data, created_at) VALUES (?, ?, ?, ?, ?)`,
    );
    this.#listStmt = db.query<ArtifactInfo, [string]>(
      `SELECT name, content_type AS contentType, length(data) AS size, created_at AS createdAt
       FROM artifacts WHERE job_id = ? ORDER BY name`,
    );
    this.#getStmt = db.query<{ contentType: string; data: Uint8Array }, [string, string]>(
      `SELECT content_type AS contentType, data FROM artifacts WHERE job_id = ? AND name = ?`,
    );
    this.#sizeStmt = db.query<{ size: number }, [string, string]>(
      `SELECT length(data) AS size FROM artifacts WHERE job_id = ? AND name = ?`,
    );
    this.#sliceStmt = db.query<{ data: Uint8Array }, [string, string, number, number]>(
      `SELECT substr(data, ?3 + 1, ?4) AS data FROM artifacts WHERE job_id = ?1 AND name = ?2`,
    );
  }

  /** Stores a job's artifacts; call it inside the transaction that ends the job (like goqite's SendTx). */
  saveTx(jobId: string, artifacts: readonly ArtifactInput[], now: number): void {
    for (const { name, contentType, data } of artifacts) {
      // The column is a STRICT BLOB: text goes in as its UTF-8 bytes.
      this.#insertStmt.run(jobId, name, contentType, typeof data === "string" ? Buffer.from(data) : data, now);
    }
  }

  list(jobId: string): ArtifactInfo[] {
    return this.#listStmt.all(jobId);
  }

  get(jobId: string, name: string): { contentType: string; data: Uint8Array } | null {
    return this.#getStmt.get(jobId, name);
  }

  /** The artifact's size in bytes, or null when there is none. */
  size(jobId: string, name: string): number | null {
    return this.#sizeStmt.get(jobId, name)?.size ?? null;
  }

  /**
   * `length` bytes of the artifact from byte `offset` (fewer at its end), or null when there is none.
   * SQLite reads the whole value for each slice, but only the slice stays in memory.
   */
  slice(jobId: string, name: string, offset: number, length: number): Uint8Array | null {
    const data = this.#sliceStmt.get(jobId, name, offset, length)?.data;
    return data === undefined ? null : new Uint8Array(data);
  }
}
