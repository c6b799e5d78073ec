import { SQL } from "bun";
import { NewerSchemaError } from "../db";
import { PG_MIGRATIONS } from "./migrations";

export { NewerSchemaError } from "../db";

/** Options for {@link openPg}. */
export interface OpenPgOptions {
  /** Connections in the pool (Bun.SQL's `max`); a runner's claims and ends and the HTTP side's reads share it. */
  poolSize?: number;
  /** The migrations to apply (tests give a longer list to play a newer foreman); PG_MIGRATIONS by default. */
  migrations?: readonly string[];
}

/**
 * The advisory lock every node's migration takes (an arbitrary constant, "foreman" in ASCII): two nodes
 * starting together on a fresh database apply each migration once, the second waiting for the first.
 */
const MIGRATION_LOCK = 0x666f72656d616e;

/**
 * Connects to the PostgreSQL database at `url` and brings its schema up to date before returning the
 * client. Throws {@link NewerSchemaError}, touching nothing, when a newer foreman migrated it.
 */
export async function openPg(url: string, options: OpenPgOptions = {}): Promise<SQL> {
  const sql = new SQL(url, { max: options.poolSize ?? 10 });
  try {
    await migratePg(sql, options.migrations ?? PG_MIGRATIONS);
  } catch (error) {
    await sql.close();
    throw error;
  }
  return sql;
}

/**
 * Applies the migrations the database lacks, each in its own transaction with the version it reaches,
 * under a transaction-scoped advisory lock: a node that dies midway leaves the last whole version, and
 * no two nodes run one migration. The version is read again under the lock, so a node that waited
 * applies nothing another has.
 */
export async function migratePg(sql: SQL, migrations: readonly string[] = PG_MIGRATIONS): Promise<number> {
  for (;;) {
    const version = await sql.begin(async (tx) => {
      await tx`SELECT pg_advisory_xact_lock(${MIGRATION_LOCK}::bigint)`;
      await tx`CREATE TABLE IF NOT EXISTS schema_migrations (version int PRIMARY KEY, applied_at timestamptz NOT NULL)`;
      const [{ version }] = await tx`SELECT coalesce(max(version), 0)::int AS version FROM schema_migrations`;
      if (version > migrations.length) throw new NewerSchemaError(version, migrations.length);
      if (version === migrations.length) return version as number;
      // No parameters: the simple protocol, which runs a file of several statements (and $$ bodies) as it is.
      await tx.unsafe(migrations[version]!);
      await tx`INSERT INTO schema_migrations (version, applied_at) VALUES (${version + 1}, now())`;
      return -1;
    });
    if (version >= 0) return version;
  }
}
