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
}
