import { Database } from "bun:sqlite";
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import init from "./migrations/001_init.sql" with { type: "text" };
import openTypes from "./migrations/002_open_types.sql" with { type: "text" };
import jobStats from "./migrations/003_job_stats.sql" with { type: "text" };
import batches from "./migrations/004_batches.sql" with { type: "text" };
import modelCosts from "./migrations/005_model_costs.sql" with { type: "text" };
import queuedCounts from "./migrations/006_queued_counts.sql" with { type: "text" };
import batchAdmission from "./migrations/007_batch_admission.sql" with { type: "text" };
import tokensEstimated from "./migrations/008_tokens_estimated.sql" with { type: "text" };
import targets from "./migrations/009_targets.sql" with { type: "text" };
import keys from "./migrations/010_keys.sql" with { type: "text" };
import fairShare from "./migrations/011_fair_share.sql" with { type: "text" };
import keyGpu from "./migrations/012_key_gpu.sql" with { type: "text" };
import { PRIVATE_FOLDER_MODE, createPrivateFile } from "./private-files";
import { spinForWriteLock } from "./write-lock";

/** Forward migrations, applied in order; the count applied is kept in PRAGMA user_version. */
const MIGRATIONS: readonly string[] = [
  init,
  openTypes,
  jobStats,
  batches,
  modelCosts,
  queuedCounts,
  batchAdmission,
  tokensEstimated,
  targets,
  keys,
  fairShare,
  keyGpu,
];

/** The database was written by a newer foreman; this one must not touch it. */
export class NewerSchemaError extends Error {
  override name = "NewerSchemaError";
  constructor(
    readonly version: number,
    readonly supported: number,
  ) {
    super(`database schema version ${version} is newer than this foreman (${supported})`);
  }
}

/** Options for {@link openDatabase}. */
export interface OpenDatabaseOptions {
  /** "normal" survives a process crash (the default); "full" also survives power loss, at some write cost. */
  durability?: "normal" | "full";
}

/**
 * Opens (creating if needed) the SQLite file with foreman's pragmas and brings its schema up to date.
 * Each thread opens its own connection; WAL lets the HTTP thread read while the worker writes.
 */
export function openDatabase(path: string, options: OpenDatabaseOptions = {}): Database {
  if (path !== ":memory:") {
    mkdirSync(dirname(path), { recursive: true, mode: PRIVATE_FOLDER_MODE });
    createPrivateFile(path);
  }
  const db = new Database(path, { create: true, strict: true });
  // Before any pragma that writes (WAL mode changes the file header): a newer foreman's file stays untouched.
  try {
    refuseNewerSchema(db);
  } catch (error) {
    db.close();
    throw error;
  }
  // Bun's defaults differ from other drivers', so every pragma that matters is set here explicitly.
  db.run("PRAGMA journal_mode = WAL");
  db.run(`PRAGMA synchronous = ${options.durability === "full" ? "FULL" : "NORMAL"}`);
  db.run("PRAGMA busy_timeout = 5000");
  // SQLite would checkpoint inside whichever commit crosses 1000 WAL pages, and a checkpoint fsyncs:
  // milliseconds added to a claim or an enqueue. Checkpoints run from a timer instead (startCheckpoints).
  db.run("PRAGMA wal_autocheckpoint = 0");
  // A checkpoint that empties the WAL truncates it back to this size: a burst does not leave it large.
  db.run(`PRAGMA journal_size_limit = ${WAL_SIZE_LIMIT_BYTES}`);
  useIncrementalVacuum(db);
  spinForWriteLock(db);
  migrate(db);
  db.run("PRAGMA foreign_keys = ON");
  return db;
}

/** The WAL's size after a checkpoint has emptied it (journal_size_limit). */
const WAL_SIZE_LIMIT_BYTES = 16 * 1024 * 1024;

/**
 * Pages freed by pruning go back to the file system (JobStore.pruneFinishedJobs runs incremental_vacuum), so
 * the file returns to its size once finished jobs are gone. The mode must be set before the first table is
 * made; a database made without it is rebuilt once (VACUUM), which only an older foreman's file needs.
 */
function useIncrementalVacuum(db: Database): void {
  const INCREMENTAL = 2;
  if (db.query<{ auto_vacuum: number }, []>("PRAGMA auto_vacuum").get()!.auto_vacuum === INCREMENTAL) return;
  db.run("PRAGMA auto_vacuum = INCREMENTAL");
  const tables = db.query<{ n: number }, []>("SELECT count(*) AS n FROM sqlite_master").get()!.n;
  if (tables > 0) db.run("VACUUM");
}

/** WAL size past which the periodic checkpoint waits for readers and truncates the WAL. */
const WAL_BOUND_BYTES = 32 * 1024 * 1024;

/** WAL size past which the periodic checkpoint runs. */
const CHECKPOINT_WAL_BYTES = 4 * 1024 * 1024;

/**
 * Checkpoints the WAL every `intervalMs` once it has grown past 4 MiB, off the claim and enqueue
 * paths. PASSIVE: it never waits for, nor blocks, the other connection. Returns a stop function.
 */
export function startCheckpoints(db: Database, path: string, intervalMs = 1000): () => void {
  const timer = setInterval(() => {
    const size = Bun.file(`${path}-wal`).size;
    // Under steady traffic a PASSIVE checkpoint never finds a moment with no reader on the WAL, so the WAL is
    // never restarted and grows (840 MB after 7,000 jobs in `bun run soak`). Past the bound, TRUNCATE waits
    // for the readers (statements of a millisecond or less) and empties it.
    try {
      if (size > WAL_BOUND_BYTES) db.run("PRAGMA wal_checkpoint(TRUNCATE)");
      else if (size > CHECKPOINT_WAL_BYTES) db.run("PRAGMA wal_checkpoint(PASSIVE)");
    } catch {
      // A full disk (the database file cannot grow) or a busy lock: the WAL keeps the pages; the next tick tries again.
    }
  }, intervalMs);
  return () => clearInterval(timer);
}

function refuseNewerSchema(db: Database): void {
  const { user_version: version } = db.query<{ user_version: number }, []>("PRAGMA user_version").get()!;
  if (version > MIGRATIONS.length) throw new NewerSchemaError(version, MIGRATIONS.length);
}

/** Foreign keys stay off while migrating: rebuilding a table would otherwise cascade-delete its children. */
function migrate(db: Database): void {
  // IMMEDIATE so two threads opening a fresh file at once do not both run the same migration.
  db.transaction(() => {
    refuseNewerSchema(db);
    const { user_version: version } = db.query<{ user_version: number }, []>("PRAGMA user_version").get()!;
    for (let i = version; i < MIGRATIONS.length; i++) db.run(MIGRATIONS[i]!);
    if (version < MIGRATIONS.length) {
      const broken = db.query("PRAGMA foreign_key_check").all();
      if (broken.length) throw new Error(`migration left ${broken.length} broken foreign keys`);
    }
    db.run(`PRAGMA user_version = ${MIGRATIONS.length}`);
  }).immediate();
}
