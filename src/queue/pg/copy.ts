// `foreman db copy`: a stopped foreman's SQLite queue into an empty PostgreSQL queue, column for column (the PG
// schema keeps SQLite's final columns with their meanings: migrations/001_queue.sql), in one PostgreSQL
// transaction. The SQLite file is read, never changed: its lock is held for the copy (so no foreman serves it
// meanwhile), and what its own next start would do to the jobs a stop left behind (JobStore.recoverInterruptedJobs)
// is done inside a SQLite transaction that is rolled back once PostgreSQL has committed the copy.
import type { SQL, TransactionSQL } from "bun";
import type { Database, Statement } from "bun:sqlite";
import { statSync } from "node:fs";
import { NewerSchemaError, openDatabase } from "../db";
import { DatabaseLockedError, type DatabaseLock, lockDatabase } from "../lock";
import { type JobRow, JobStore, RESTART_DROPPED_QUEUED } from "../store";
import { openPg } from "./db";
import { JOB_QUEUED_CHANNEL } from "./notify";

/** A copy refused or failed for a reason the user can act on: its message is the one line the CLI prints. */
export class CopyError extends Error {
  override name = "CopyError";
}

/** PostgreSQL's type of a copied column: each value goes in as a parameter cast to it. */
type PgType = "text" | "integer" | "bigint" | "float8" | "bytea";

interface TableSpec {
  name: CopiedTable;
  /** Every column, in both schemas, with its PostgreSQL type (SQLite's STRICT types map one to one). */
  columns: ReadonlyArray<readonly [string, PgType]>;
  /** PostgreSQL's columns that SQLite has not: left to their default (null). */
  pgOnly?: readonly string[];
  /** The primary key: the order rows are read and written in. */
  order: string;
}

/** The tables copied, in the order they are written (artifacts after the jobs they belong to). */
export const COPIED_TABLES = ["keys", "key_counters", "key_usage", "model_costs", "target_costs", "jobs", "artifacts"] as const;
export type CopiedTable = (typeof COPIED_TABLES)[number];

const TABLES: readonly TableSpec[] = [
  {
    name: "keys",
    columns: [
      ["id", "text"],
      ["name", "text"],
      ["role", "text"],
      ["secret_hash", "bytea"],
      ["hint", "text"],
      ["models", "text"],
      ["apis", "text"],
      ["max_priority", "integer"],
      ["max_jobs", "integer"],
      ["daily_tokens", "bigint"],
      ["created_at", "bigint"],
      ["rotated_at", "bigint"],
      ["revoked_at", "bigint"],
      ["weight", "float8"],
    ],
    order: "id",
  },
  {
    name: "key_counters",
    columns: [
      ["key_id", "text"],
      ["counter", "float8"],
      ["updated_at", "bigint"],
    ],
    order: "key_id",
  },
  {
    name: "key_usage",
    columns: [
      ["key_id", "text"],
      ["day", "text"],
      ["prompt_tokens", "bigint"],
      ["output_tokens", "bigint"],
      ["jobs", "integer"],
      ["gpu_ms", "bigint"],
    ],
    order: "key_id, day",
  },
  {
    name: "model_costs",
    columns: [
      ["model_key", "text"],
      ["load_ms", "float8"],
      ["run_ms", "float8"],
      ["total_ms", "float8"],
      ["output_tokens", "float8"],
      ["eval_ms", "float8"],
      ["jobs", "integer"],
      ["loads", "integer"],
      ["updated_at", "bigint"],
    ],
    order: "model_key",
  },
  {
    name: "target_costs",
    columns: [
      ["target", "text"],
      ["model_key", "text"],
      ["load_ms", "float8"],
      ["run_ms", "float8"],
      ["jobs", "integer"],
      ["loads", "integer"],
      ["updated_at", "bigint"],
    ],
    order: "target, model_key",
  },
  {
    name: "jobs",
    columns: [
      ["id", "text"],
      ["type", "text"],
      ["model", "text"],
      ["model_key", "text"],
      ["request", "text"],
      ["source", "text"],
      ["state", "text"],
      ["priority", "integer"],
      ["attempts", "integer"],
      ["max_attempts", "integer"],
      ["run_after", "bigint"],
      ["error", "text"],
      ["error_status", "integer"],
      ["created_at", "bigint"],
      ["started_at", "bigint"],
      ["finished_at", "bigint"],
      ["result", "text"],
      ["idempotency_key", "text"],
      ["webhook_url", "text"],
      ["webhook_secret", "text"],
      ["swapped", "integer"],
      ["prompt_tokens", "integer"],
      ["output_tokens", "integer"],
      ["load_ms", "float8"],
      ["eval_ms", "float8"],
      ["tokens_estimated", "integer"],
      ["key_id", "text"],
      ["target", "text"],
    ],
    // The node holding a client's connection: no client of the stopped foreman is left (their requests are canceled).
    pgOnly: ["waiter"],
    order: "id",
  },
  {
    name: "artifacts",
    columns: [
      ["job_id", "text"],
      ["name", "text"],
      ["content_type", "text"],
      ["data", "bytea"],
      ["created_at", "bigint"],
    ],
    order: "job_id, name",
  },
];

/** Why a batch line still to run is canceled in the copy (--skip-batches): its batch is not copied. */
export const BATCH_NOT_COPIED = {
  error: "its batch stayed in the SQLite file: foreman db copy --skip-batches did not copy it to PostgreSQL",
  status: 499,
} as const;

/** Rows per INSERT: a page of jobs is 28,000 parameters, under PostgreSQL's 65,535. */
const PAGE_ROWS = 1000;
/** Bytes of text and blobs per INSERT: a page of large answers or artifacts is cut short at this. */
const PAGE_BYTES = 8 * 1024 * 1024;
/** How long the copy waits for PostgreSQL's queue tables (a node's transaction, another copy) before giving up. */
const LOCK_TIMEOUT = "10s";

export interface CopyOptions {
  sqlitePath: string;
  pgUrl: string;
  /** Copy although batches are still active: their lines still to run are canceled in the copy. */
  skipBatches?: boolean;
  /** Copy although webhooks are still to be delivered: they never are; jobs with one run without calling it. */
  skipWebhooks?: boolean;
  /** The instant (epoch ms) the recovery ends and re-queues jobs at; by default PostgreSQL's clock, the queue's. */
  now?: number;
  /** Rows and bytes per INSERT (tests make them small, to cross page ends). */
  pageRows?: number;
  pageBytes?: number;
}

export interface CopyReport {
  /** Rows written per table. */
  rows: Record<CopiedTable, number>;
  artifactBytes: number;
  /** What the restart recovery did to the jobs the stopped foreman left running or queued. */
  recovery: {
    /** Job API and batch jobs that were running: back in the queue (their attempt counted). */
    requeued: number;
    /** Of those, the ones that had used every attempt: failed, as a restart fails them. */
    failed: number;
    /** Client requests (ollama, openai, anthropic) that were running: canceled, their connection gone. */
    canceledRunning: number;
    /** Client requests still queued: canceled likewise. */
    canceledQueued: number;
  };
  /** Batch lines still to run, canceled because their batch was not copied (--skip-batches). */
  batchLinesCanceled: number;
  /** Jobs queued on PostgreSQL once the copy committed. */
  queued: number;
  /** What stays in the SQLite file only, PostgreSQL having no tables for it yet. */
  leftInSqlite: {
    batches: number;
    activeBatches: number;
    files: number;
    fileBytes: number;
    webhookDeliveries: number;
    pendingDeliveries: number;
    /** Jobs with a webhook still to run, which will run without calling it (--skip-webhooks). */
    webhookJobs: number;
  };
  ms: number;
}

/** The URL with its password hidden, for messages. */
export function redactUrl(url: string): string {
  const parsed = URL.parse(url);
  if (!parsed) return url.replace(/(\/\/[^/@:]*:)[^/@]*@/, "$1***@");
  if (parsed.password) parsed.password = "***";
  return parsed.href;
}

/**
 * Copies the SQLite queue at `sqlitePath` into the empty PostgreSQL queue at `pgUrl`. Refuses (CopyError) when
 * the file is missing (nothing is created), a foreman serves it, batches or webhooks would be lost without the
 * matching skip option, or PostgreSQL's queue is not empty. Everything is written in one PostgreSQL transaction:
 * a copy that fails leaves its tables as they were (migrated, as any node would leave them).
 */
export async function copySqliteToPg(options: CopyOptions): Promise<CopyReport> {
  const started = performance.now();
  const { sqlitePath } = options;
  const stat = statSync(sqlitePath, { throwIfNoEntry: false });
  if (!stat) throw new CopyError(`no such file: ${sqlitePath} (the SQLite database to copy; nothing was created)`);
  if (!stat.isFile()) throw new CopyError(`${sqlitePath} is not a file (the SQLite database to copy)`);

  let lock: DatabaseLock;
  try {
    lock = lockDatabase(sqlitePath);
  } catch (error) {
    if (error instanceof DatabaseLockedError) {
      throw new CopyError(`${error.message}: stop it first, so the copy sees the queue at rest`);
    }
    throw new CopyError(`cannot lock ${sqlitePath} (its lock file, ${sqlitePath}.lock): ${messageOf(error)}`);
  }
  let db: Database | undefined;
  let sql: SQL | undefined;
  try {
    db = openSqlite(sqlitePath);
    checkColumns("SQLite", sqliteColumns(db));
    const left = leftBehind(db);
    refuseLosses(sqlitePath, left, options);
    sql = await connectPg(options.pgUrl);
    const report = await copyInto(sql, db, left, options);
    return { ...report, ms: Math.round(performance.now() - started) };
  } finally {
    await sql?.close().catch(() => {});
    db?.close();
    lock.release();
  }
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function openSqlite(path: string): Database {
  try {
    // openDatabase brings an older foreman's file to the current schema, as its next start would.
    return openDatabase(path);
  } catch (error) {
    if (error instanceof NewerSchemaError) {
      throw new CopyError(
        `${path} has schema version ${error.version}, newer than this foreman's ${error.supported}: copy it with a newer foreman`,
      );
    }
    if ((error as { code?: unknown }).code === "SQLITE_NOTADB") throw new CopyError(`${path} is not a SQLite database`);
    throw new CopyError(`cannot open ${path}: ${messageOf(error)}`);
  }
}

async function connectPg(url: string): Promise<SQL> {
  try {
    return await openPg(url, { poolSize: 1 });
  } catch (error) {
    const shown = redactUrl(url);
    if (error instanceof NewerSchemaError) {
      throw new CopyError(
        `the PostgreSQL database at ${shown} has schema version ${error.version}, newer than this foreman's ${error.supported}: copy with a newer foreman`,
      );
    }
    const code = String((error as { code?: unknown }).code ?? "");
    if (code === "ERR_POSTGRES_CONNECTION_REFUSED" || code === "ERR_POSTGRES_CONNECTION_CLOSED") {
      throw new CopyError(`cannot reach PostgreSQL at ${shown}: ${messageOf(error)} (is it running, and the URL right?)`);
    }
    if (code === "ERR_INVALID_URL") throw new CopyError(`not a valid PostgreSQL URL: ${shown}`);
    throw new CopyError(`cannot open the PostgreSQL queue at ${shown}: ${messageOf(error)}`);
  }
}

/** Each table's columns, as the schema in hand has them. */
type Columns = Map<string, Set<string>>;

function sqliteColumns(db: Database): Columns {
  const columns: Columns = new Map();
  for (const table of COPIED_TABLES) {
    const rows = db.query<{ name: string }, []>(`SELECT name FROM pragma_table_info('${table}')`).all();
    columns.set(table, new Set(rows.map((row) => row.name)));
  }
  return columns;
}

async function pgColumns(tx: SQL): Promise<Columns> {
  const rows = await tx.unsafe(
    `SELECT table_name AS "table", column_name AS "column" FROM information_schema.columns
     WHERE table_schema = current_schema() AND table_name = ANY($1::text[])`,
    [tx.array([...COPIED_TABLES], "TEXT")],
  );
  const columns: Columns = new Map(COPIED_TABLES.map((table) => [table, new Set<string>()]));
  for (const row of rows) columns.get(row.table)?.add(row.column);
  return columns;
}

/**
 * The copy names every column: a column one engine's migration adds that this list lacks would be dropped, so
 * the schema in hand must have exactly the listed ones (PostgreSQL also its pgOnly ones).
 */
function checkColumns(engine: "SQLite" | "PostgreSQL", columns: Columns): void {
  for (const spec of TABLES) {
    const expected = new Set([...spec.columns.map(([name]) => name), ...(engine === "PostgreSQL" ? (spec.pgOnly ?? []) : [])]);
    const found = columns.get(spec.name) ?? new Set<string>();
    const missing = [...expected].filter((name) => !found.has(name));
    const unknown = [...found].filter((name) => !expected.has(name));
    if (missing.length || unknown.length) {
      const parts = [
        missing.length ? `lacks ${missing.join(", ")}` : "",
        unknown.length ? `has ${unknown.join(", ")}, which this foreman's copy does not know` : "",
      ].filter(Boolean);
      throw new CopyError(`${engine}'s ${spec.name} table ${parts.join(" and ")}: copy with a foreman of the same version`);
    }
  }
}

interface LeftBehind {
  batches: number;
  activeBatches: number;
  activeBatchIds: string[];
  /** Batch lines queued or running. */
  activeLines: number;
  files: number;
  fileBytes: number;
  webhookDeliveries: number;
  pendingDeliveries: number;
  /** Jobs with a webhook, queued or running (a running one is re-queued, or fails and is owed its webhook). */
  webhookJobs: number;
}

/** What PostgreSQL has no tables for yet, counted before anything changes. */
function leftBehind(db: Database): LeftBehind {
  const one = <T>(text: string) => db.query<T, []>(text).get()!;
  const batches = one<{ n: number; active: number }>(
    `SELECT count(*) AS n, count(*) FILTER (WHERE status IN ('validating', 'in_progress', 'finalizing', 'cancelling')) AS active
     FROM batches`,
  );
  const activeBatchIds = db
    .query<{ id: string }, []>(
      `SELECT id FROM batches WHERE status IN ('validating', 'in_progress', 'finalizing', 'cancelling') ORDER BY id LIMIT 3`,
    )
    .all()
    .map((row) => row.id);
  const files = one<{ n: number; bytes: number }>(`SELECT count(*) AS n, coalesce(sum(bytes), 0) AS bytes FROM files`);
  const deliveries = one<{ n: number; pending: number }>(
    `SELECT count(*) AS n, count(*) FILTER (WHERE state = 'pending') AS pending FROM webhook_deliveries`,
  );
  const jobs = one<{ lines: number; webhooks: number }>(
    `SELECT count(*) FILTER (WHERE source = 'batch') AS lines, count(*) FILTER (WHERE webhook_url IS NOT NULL) AS webhooks
     FROM jobs WHERE state IN ('queued', 'loading', 'working')`,
  );
  return {
    batches: batches.n,
    activeBatches: batches.active,
    activeBatchIds,
    activeLines: jobs.lines,
    files: files.n,
    fileBytes: files.bytes,
    webhookDeliveries: deliveries.n,
    pendingDeliveries: deliveries.pending,
    webhookJobs: jobs.webhooks,
  };
}

const plural = (n: number, one: string, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

/**
 * PostgreSQL does not run batches nor deliver webhooks yet: a copy would lose active batches (their lines would
 * run for no output file) and owed webhooks without a word. Refused unless the matching skip option says so.
 */
function refuseLosses(path: string, left: LeftBehind, options: CopyOptions): void {
  const reasons: string[] = [];
  if (!options.skipBatches && (left.activeBatches > 0 || left.activeLines > 0)) {
    const ids = left.activeBatchIds.join(", ") + (left.activeBatches > left.activeBatchIds.length ? ", …" : "");
    const batches = left.activeBatches > 0 ? `${plural(left.activeBatches, "active batch", "active batches")} (${ids})` : "";
    const lines = left.activeLines > 0 ? `${plural(left.activeLines, "batch line")} still to run` : "";
    reasons.push(
      `${path} has ${[batches, lines].filter(Boolean).join(" with ")}, and PostgreSQL does not run batches yet: let them finish (or cancel them) on SQLite first, or give --skip-batches to cancel those lines in the copy (the batches stay in the SQLite file)`,
    );
  }
  if (!options.skipWebhooks && (left.pendingDeliveries > 0 || left.webhookJobs > 0)) {
    const owed = [
      left.pendingDeliveries > 0 ? `${plural(left.pendingDeliveries, "webhook")} not yet delivered` : "",
      left.webhookJobs > 0 ? `${plural(left.webhookJobs, "job")} with a webhook still to run` : "",
    ].filter(Boolean);
    reasons.push(
      `${path} has ${owed.join(" and ")}, and PostgreSQL does not deliver webhooks yet: let them finish on SQLite first, or give --skip-webhooks to copy without them (the jobs still run; nobody is called)`,
    );
  }
  if (reasons.length) throw new CopyError(`${reasons.join(". ")}.`);
}

async function copyInto(sql: SQL, db: Database, left: LeftBehind, options: CopyOptions): Promise<Omit<CopyReport, "ms">> {
  return sql.begin(async (tx) => {
    checkColumns("PostgreSQL", await pgColumns(tx));
    await lockEmptyQueue(tx, options.pgUrl);
    const [{ now: pgNow }] = await tx.unsafe(`SELECT ((extract(epoch from clock_timestamp()) * 1000)::bigint)::float8 AS now`);
    const now: number = options.now ?? pgNow;
    // What the stopped foreman's next start would do, and the skipped batches' cancels, in a SQLite transaction
    // that is read from and then rolled back: the file stays as it was, the copy gets the recovered queue.
    db.run("BEGIN IMMEDIATE");
    try {
      const store = new JobStore(db);
      // A bare JobStore: the end hooks of src/tables.ts write webhook deliveries and batch progress, which are not copied.
      const recovered = store.recoverInterruptedJobs(now);
      const batchLinesCanceled = options.skipBatches ? cancelBatchLines(db, store, now) : 0;
      const rows = {} as Record<CopiedTable, number>;
      let artifactBytes = 0;
      const counting = await countQueuedAtEnd(tx);
      for (const spec of TABLES) {
        const copied = await copyTable(tx, db, spec, options.pageRows ?? PAGE_ROWS, options.pageBytes ?? PAGE_BYTES);
        rows[spec.name] = copied.rows;
        if (spec.name === "artifacts") artifactBytes = copied.bytes;
      }
      if (counting) await countQueued(tx);
      await verify(tx, db, rows);
      const [{ queued }] = await tx.unsafe(`SELECT coalesce(sum(n), 0)::float8 AS queued FROM queued_counts`);
      // Nodes already running on this database learn on commit that there is work (they re-read the queue).
      if (queued > 0) await tx.unsafe(`SELECT pg_notify($1, '')`, [JOB_QUEUED_CHANNEL]);
      const canceledQueued = recovered.canceled.filter((job: JobRow) => job.error === RESTART_DROPPED_QUEUED.error).length;
      return {
        rows,
        artifactBytes,
        recovery: {
          requeued: recovered.requeued.length,
          failed: recovered.failed.length,
          canceledRunning: recovered.canceled.length - canceledQueued,
          canceledQueued,
        },
        batchLinesCanceled,
        queued,
        leftInSqlite: {
          batches: left.batches,
          activeBatches: left.activeBatches,
          files: left.files,
          fileBytes: left.fileBytes,
          webhookDeliveries: left.webhookDeliveries,
          pendingDeliveries: left.pendingDeliveries,
          webhookJobs: options.skipWebhooks ? activeWebhookJobs(db) : 0,
        },
      };
    } finally {
      db.run("ROLLBACK");
    }
  });
}

/**
 * Takes PostgreSQL's queue tables for the transaction (reads go on; no node writes until the copy commits) and
 * refuses a queue that holds anything: a copy fills an empty queue, it never merges two.
 */
async function lockEmptyQueue(tx: SQL, url: string): Promise<void> {
  try {
    await tx.unsafe(`SET LOCAL lock_timeout = '${LOCK_TIMEOUT}'`);
    await tx.unsafe(`LOCK TABLE ${COPIED_TABLES.join(", ")} IN EXCLUSIVE MODE`);
  } catch (error) {
    if ((error as { errno?: unknown }).errno === "55P03" || /lock timeout/i.test(messageOf(error))) {
      throw new CopyError(
        `PostgreSQL's queue tables at ${redactUrl(url)} stayed locked for ${LOCK_TIMEOUT}: is another copy, or a busy foreman node, using them?`,
      );
    }
    throw error;
  }
  const [counts] = await tx.unsafe(
    `SELECT ${COPIED_TABLES.map((table) => `(SELECT count(*) FROM ${table})::float8 AS ${table}`).join(", ")}`,
  );
  // Jobs first: they are what a queue holds; the other tables are named by their rows.
  const held = ["jobs", ...COPIED_TABLES.filter((table) => table !== "jobs")].filter((table) => counts[table] > 0);
  if (held.length === 0) return;
  const what = held.map((table) => (table === "jobs" ? plural(counts.jobs, "job") : plural(counts[table], `${table} row`)));
  throw new CopyError(
    `the PostgreSQL queue at ${redactUrl(url)} is not empty (${what.join(", ")}): a copy fills an empty queue and never merges two; copy into a new database (createdb), or drop this one and create it again`,
  );
}

/**
 * queued_counts' insert trigger adds 1 to a group's row per queued job inserted: within one transaction each
 * add leaves a version of that row the next must step over (none can be pruned before the commit), so a copy
 * of 45,000 queued jobs spent 30 s in it, growing with the square of a group's size. So the trigger is set
 * aside for the copy's transaction (taken back in it: the commit, or a rollback, leaves it enabled) and the
 * counts are written once from the jobs (countQueued). Setting it aside needs the tables' owner (the role
 * the nodes migrate with); another role's copy keeps the trigger: slower, the same counts. False then.
 */
async function countQueuedAtEnd(tx: TransactionSQL): Promise<boolean> {
  try {
    await tx.savepoint((sp) => sp.unsafe(`ALTER TABLE jobs DISABLE TRIGGER jobs_queued_insert`));
    return true;
  } catch {
    return false;
  }
}

/** The trigger back, and queued_counts as it would have kept them (rows left at 0 by pruned jobs are set). */
async function countQueued(tx: SQL): Promise<void> {
  await tx.unsafe(`ALTER TABLE jobs ENABLE TRIGGER jobs_queued_insert`);
  await tx.unsafe(
    `INSERT INTO queued_counts AS c (model_key, model, priority, batch, key_id, n)
     SELECT model_key, model, priority, (source = 'batch')::integer, coalesce(key_id, ''), count(*)
     FROM jobs WHERE state = 'queued' GROUP BY 1, 2, 3, 4, 5
     ON CONFLICT (model_key, priority, model, batch, key_id) DO UPDATE SET n = excluded.n`,
  );
}

/** Cancels the batch lines still to run (their batches are not copied), as JobStore.cancelJobs would, a page at a time. */
function cancelBatchLines(db: Database, store: JobStore, now: number): number {
  const page = db.query<{ id: string }, []>(
    `SELECT id FROM jobs WHERE source = 'batch' AND state IN ('queued', 'loading', 'working') ORDER BY id LIMIT 1000`,
  );
  let canceled = 0;
  for (;;) {
    const ids = page.all().map((row) => row.id);
    if (ids.length === 0) return canceled;
    canceled += store.cancelJobs(ids, BATCH_NOT_COPIED, now).length;
  }
}

function activeWebhookJobs(db: Database): number {
  return db
    .query<{ n: number }, []>(
      `SELECT count(*) AS n FROM jobs WHERE webhook_url IS NOT NULL AND state IN ('queued', 'loading', 'working')`,
    )
    .get()!.n;
}

/** Streams one table from SQLite into PostgreSQL: multi-row INSERTs of `pageRows` rows, or fewer past `pageBytes`. */
async function copyTable(
  tx: SQL,
  db: Database,
  spec: TableSpec,
  pageRows: number,
  pageBytes: number,
): Promise<{ rows: number; bytes: number }> {
  const names = spec.columns.map(([name]) => name);
  const casts = spec.columns.map(([, type]) => type);
  const sized = spec.columns.flatMap(([, type], i) => (type === "text" || type === "bytea" ? [i] : []));
  // Prepared apart (db.query caches by text): the statement steps one row at a time while the pages are written.
  const select: Statement<Record<string, unknown>, []> = db.prepare(
    `SELECT ${names.join(", ")} FROM ${spec.name} ORDER BY ${spec.order}`,
  );
  let page: unknown[][] = [];
  let pageSize = 0;
  let rows = 0;
  let bytes = 0;
  const flush = async () => {
    if (page.length === 0) return;
    const params: unknown[] = [];
    const values = page.map((row) => `(${row.map((value, i) => `$${params.push(value)}::${casts[i]}`).join(", ")})`);
    try {
      await tx.unsafe(`INSERT INTO ${spec.name} (${names.join(", ")}) VALUES ${values.join(", ")}`, params);
    } catch (error) {
      const first = page[0]!.slice(0, spec.order.split(",").length).join(", ");
      throw new CopyError(`copying ${spec.name} (the page from ${first}): ${messageOf(error)}`);
    }
    rows += page.length;
    page = [];
    pageSize = 0;
  };
  try {
    for (const row of select.iterate()) {
      const values = names.map((name) => row[name] ?? null);
      for (const i of sized) {
        const value = values[i];
        const size = typeof value === "string" ? Buffer.byteLength(value) : value instanceof Uint8Array ? value.byteLength : 0;
        pageSize += size;
        if (spec.name === "artifacts" && names[i] === "data") bytes += size;
      }
      page.push(values);
      if (page.length >= pageRows || pageSize >= pageBytes) await flush();
    }
    await flush();
  } finally {
    select.finalize();
  }
  return { rows, bytes };
}

/**
 * Before the commit: every table holds as many rows as SQLite's (after the recovery), and queued_counts, which
 * PostgreSQL's triggers kept row by row through the INSERTs, holds what the queued jobs add up to.
 */
async function verify(tx: SQL, db: Database, rows: Record<CopiedTable, number>): Promise<void> {
  for (const table of COPIED_TABLES) {
    const lite = db.query<{ n: number }, []>(`SELECT count(*) AS n FROM ${table}`).get()!.n;
    const [{ n }] = await tx.unsafe(`SELECT count(*)::float8 AS n FROM ${table}`);
    if (lite !== rows[table] || n !== rows[table]) {
      throw new CopyError(`copying ${table}: SQLite has ${lite} rows, ${rows[table]} were written, PostgreSQL has ${n}`);
    }
  }
  const [{ wrong }] = await tx.unsafe(
    `SELECT count(*)::int AS wrong FROM (
       SELECT model_key, model, priority, batch, key_id, n FROM queued_counts WHERE n <> 0
       EXCEPT ALL
       SELECT model_key, model, priority, (source = 'batch')::integer, coalesce(key_id, ''), count(*)::integer
       FROM jobs WHERE state = 'queued' GROUP BY 1, 2, 3, 4, 5
     ) d`,
  );
  const [{ missing }] = await tx.unsafe(
    `SELECT count(*)::int AS missing FROM (
       SELECT model_key, model, priority, (source = 'batch')::integer, coalesce(key_id, ''), count(*)::integer
       FROM jobs WHERE state = 'queued' GROUP BY 1, 2, 3, 4, 5
       EXCEPT ALL
       SELECT model_key, model, priority, batch, key_id, n FROM queued_counts WHERE n <> 0
     ) d`,
  );
  if (wrong > 0 || missing > 0) throw new CopyError("queued_counts disagrees with the copied jobs (are its triggers missing?)");
}
