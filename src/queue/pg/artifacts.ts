import type { SQL } from "bun";
import type { ArtifactInfo, ArtifactInput } from "../artifacts";

/** One statement's text and its parameters: a part of a write its caller folds with others into one round trip. */
export interface PgStatement {
  sql: string;
  params: unknown[];
}

/** substring's offset is an int4: one past any bytea (1 GB at most) reads nothing, as an offset past the end does. */
const MAX_OFFSET = 2 ** 31 - 2;

/**
 * The insert of a job's artifacts at its end (`now`, the database's clock), its parameters numbered from
 * `$from` on, for the transaction that ends the job to run with its other writes (PgJobStore). Text goes in
 * as its UTF-8 bytes; a name given twice keeps its last, and a name already stored is replaced (SQLite's
 * INSERT OR REPLACE). Null when there is nothing to store.
 */
export function artifactsInsert(jobId: string, artifacts: readonly ArtifactInput[], now: number, from = 1): PgStatement | null {
  // One row per name, the last given: an upsert may not touch one row twice.
  const byName = new Map(artifacts.map((artifact) => [artifact.name, artifact]));
  if (byName.size === 0) return null;
  const params: unknown[] = [jobId, now];
  const rows = [...byName.values()].map(({ name, contentType, data }) => {
    params.push(name, contentType, typeof data === "string" ? Buffer.from(data) : data);
    const at = from + params.length - 3;
    return `($${from}, $${at}, $${at + 1}, $${at + 2}::bytea, $${from + 1}::bigint)`;
  });
  return {
    sql: `INSERT INTO artifacts (job_id, name, content_type, data, created_at) VALUES ${rows.join(", ")}
      ON CONFLICT (job_id, name) DO UPDATE SET content_type = excluded.content_type, data = excluded.data,
        created_at = excluded.created_at`,
    params,
  };
}

/** A driver's Buffer as a plain Uint8Array over the same bytes (what bun:sqlite gives SQLite's readers). */
const bytes = (data: Uint8Array): Uint8Array => new Uint8Array(data.buffer, data.byteOffset, data.byteLength);

/**
 * The artifacts table's reads on PostgreSQL, ArtifactTable's (src/queue/artifacts.ts) made async: rows are
 * written by the transaction that ends their job (PgJobStore, {@link artifactsInsert}), deleted with it.
 */
export class PgArtifacts {
  readonly #sql: SQL;

  constructor(sql: SQL) {
    this.#sql = sql;
  }

  /** The job's artifacts by name (byte order), their sizes without their bytes; empty for none or no such job. */
  async list(jobId: string): Promise<ArtifactInfo[]> {
    // octet_length reads the size from the TOAST pointer: no artifact's bytes are fetched for a listing.
    const rows = await this.#sql.unsafe(
      `SELECT name, content_type AS "contentType", octet_length(data) AS size, created_at::float8 AS "createdAt"
       FROM artifacts WHERE job_id = $1 ORDER BY name`,
      [jobId],
    );
    return [...rows] as ArtifactInfo[];
  }

  /** The artifact's content type and bytes, or null when the job has none of that name. */
  async get(jobId: string, name: string): Promise<{ contentType: string; data: Uint8Array } | null> {
    const [row] = await this.#sql.unsafe(
      `SELECT content_type AS "contentType", data FROM artifacts WHERE job_id = $1 AND name = $2`,
      [jobId, name],
    );
    return row ? { contentType: row.contentType, data: bytes(row.data) } : null;
  }

  /** The artifact's size in bytes, or null when there is none. */
  async size(jobId: string, name: string): Promise<number | null> {
    const [row] = await this.#sql.unsafe(`SELECT octet_length(data) AS size FROM artifacts WHERE job_id = $1 AND name = $2`, [
      jobId,
      name,
    ]);
    return row ? row.size : null;
  }

  /**
   * `length` bytes of the artifact from byte `offset` (fewer at its end, none past it), or null when there is
   * none. substring runs in the database, so only the slice travels; the column is stored uncompressed
   * (migration 002), so only the chunks under the slice are read.
   */
  async slice(jobId: string, name: string, offset: number, length: number): Promise<Uint8Array | null> {
    const [row] = await this.#sql.unsafe(
      `SELECT substring(data FROM $3::int + 1 FOR $4::int) AS data FROM artifacts WHERE job_id = $1 AND name = $2`,
      [jobId, name, Math.min(MAX_OFFSET, Math.max(0, Math.floor(offset))), Math.min(MAX_OFFSET, Math.max(0, Math.floor(length)))],
    );
    return row ? bytes(row.data) : null;
  }
}
