// `foreman db copy`: a SQLite queue filled through the real stores (jobs in every state, artifacts, learned costs,
// API keys and their usage) copied into a real throwaway PostgreSQL cluster, then read back through the PG stores
// and compared with what SQLite's own stores answer after the restart recovery the copy mirrors: parity, not
// hard-coded values. Then the refusals, a copy that fails midway, and the compiled binary.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { SQL } from "bun";
import { Database } from "bun:sqlite";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { BatchStore } from "../../src/batch/store";
import { summary, warnings } from "../../src/cli/db-command";
import { FileStore } from "../../src/batch/files";
import { KeyStore } from "../../src/keys/key-store";
import type { KeyAdmission } from "../../src/keys/usage";
import { openDatabase } from "../../src/queue/db";
import { lockDatabase } from "../../src/queue/lock";
import { BATCH_NOT_COPIED, COPIED_TABLES, CopyError, copySqliteToPg } from "../../src/queue/pg/copy";
import { openPg } from "../../src/queue/pg/db";
import { PgJobStore } from "../../src/queue/pg/job-store";
import { PgQueueStore } from "../../src/queue/pg/queue-store";
import { type ClaimPolicy, JobStore, type NewJob } from "../../src/queue/store";
import { openJobTables } from "../../src/tables";
import { freePort, runForeman, tempDir } from "../harness";
import { type PgCluster, pgBinDir, startPgCluster } from "../pg-cluster";

const HOUR = 3_600_000;
const MINUTE = 60_000;

let cluster: PgCluster;
let dir: ReturnType<typeof tempDir>;
let databases = 0;
const clients: SQL[] = [];

/** A fresh, empty PostgreSQL database on the cluster. */
async function freshPg(): Promise<string> {
  const name = `copy${++databases}`;
  await cluster.createDatabase(name);
  return cluster.urlFor(name);
}

async function pgClient(url: string): Promise<SQL> {
  const sql = await openPg(url, { poolSize: 2 });
  clients.push(sql);
  return sql;
}

let files = 0;
const sqlitePath = () => join(dir.path, `queue${++files}.db`);

const policy = (target: string): ClaimPolicy => ({ schedule: "fifo", residentKeys: [], maxWaitMs: HOUR, target });

const job = (extra: Partial<NewJob> = {}): NewJob => ({
  type: "chat",
  model: "llama3.2",
  modelKey: "llama3.2:latest",
  request: JSON.stringify({ model: "llama3.2", messages: [{ role: "user", content: "hello" }] }),
  source: "jobs",
  maxAttempts: 3,
  ...extra,
});

/**
 * A SQLite queue as a foreman that stopped leaves it, made through the real stores: jobs done (with artifacts,
 * one larger than a copy page, usage and learned costs on two targets), failed and canceled; queued ones of two
 * models, priorities and callers, one backing off, one with an idempotency key; running ones of the job API (one
 * on its last attempt) and of clients; queued client requests; three API keys (one rotated, one revoked).
 */
function fillQueue(path: string, base: number): { jobs: number } {
  const db = openDatabase(path);
  const { store } = openJobTables(db);
  store.costs.perTarget = true;
  const keys = new KeyStore(db);
  const alice = keys.create("alice", "client", { maxJobs: 50, dailyTokens: 1_000_000, weight: 2, models: ["llama*"] }, base);
  const bob = keys.create("bob", "admin", {}, base + 1);
  keys.rotate("bob", base + 2);
  keys.create("carol", "client", { apis: ["ollama", "jobs"] }, base + 3);
  keys.revoke("carol", base + 4);
  const owner = (key: typeof alice.key): KeyAdmission => ({
    keyId: key.id,
    name: key.name,
    maxJobs: key.maxJobs,
    dailyTokens: key.dailyTokens,
  });
  let t = base + 10;
  let count = 0;
  const enqueue = (extra: Partial<NewJob> = {}) => {
    count++;
    return store.enqueue(job(extra), 10_000, (t += 7)).job;
  };
  const claim = (target = "gpu0") => store.claimNextJob(policy(target), (t += 11))!;
  const big = new Uint8Array(300_000).map((_, i) => (i * 31) % 251);
  // Done, one after another, on two targets, by three callers; their artifacts (text and bytes) and usage.
  for (let i = 0; i < 12; i++) {
    const model = i % 3 === 0 ? "qwen3" : "llama3.2";
    const queued = enqueue({
      model,
      modelKey: `${model}:latest`,
      source: (["jobs", "ollama", "openai"] as const)[i % 3],
      owner: i % 2 === 0 ? owner(alice.key) : i % 3 === 0 ? owner(bob.key) : undefined,
    });
    const claimed = claim(i % 2 === 0 ? "gpu0" : "gpu1");
    expect(claimed.id).toBe(queued.id);
    if (i % 2) store.markWorking(claimed.id);
    const artifacts = [
      { name: "result.json", contentType: "application/json", data: JSON.stringify({ message: { content: `answer ${i}` } }) },
      ...(i === 4 ? [{ name: "stream.bin", contentType: "application/octet-stream", data: big }] : []),
    ];
    const usage = { promptTokens: 10 + i, outputTokens: 100 + i, loadMs: i % 3 === 0 ? 1500 + i : null, evalMs: 900.25 + i };
    store.finishJob(
      claimed.id,
      JSON.stringify({ message: { role: "assistant", content: `answer ${i} é ✓` } }),
      artifacts,
      usage,
      (t += 1000 + i),
    );
  }
  // Failed (with an artifact), canceled while queued, canceled while running.
  enqueue({ owner: owner(alice.key) });
  store.failJob(claim().id, "model said no", 400, [{ name: "error.txt", contentType: "text/plain", data: "no" }], (t += 500));
  store.cancelJob(enqueue().id, { error: "request canceled", status: 499 }, (t += 5));
  enqueue({ owner: owner(bob.key) });
  store.cancelJob(claim("gpu1").id, { error: "request canceled", status: 499 }, (t += 700));
  // Running when foreman stopped: a job API job (re-queued), one on its last attempt (fails), a client's (canceled).
  enqueue({ owner: owner(alice.key), priority: 5 });
  claim();
  enqueue({ maxAttempts: 1 });
  store.markWorking(claim("gpu1").id);
  enqueue({ source: "anthropic", owner: owner(alice.key), model: "qwen3", modelKey: "qwen3:latest" });
  store.markWorking(claim("gpu2").id);
  // Retried once, backing off: queued with its attempt counted and a run_after ahead.
  const retried = enqueue({ source: "jobs", owner: owner(bob.key) });
  store.requeueJob(claim().id, t + 10 * MINUTE, "server busy", 503);
  expect(retried.id).toBeTruthy();
  // Queued: many (several pages at the test's page size), of two models, priorities and callers.
  for (let i = 0; i < 40; i++) {
    enqueue({
      model: i % 4 === 0 ? "qwen3" : "llama3.2",
      modelKey: i % 4 === 0 ? "qwen3:latest" : i % 5 === 0 ? "llama3.2:latest num_ctx=8192" : "llama3.2:latest",
      priority: i % 7 === 0 ? 10 : i % 3 === 0 ? -2 : 0,
      owner: i % 2 === 0 ? owner(alice.key) : undefined,
      idempotencyKey: i === 3 ? "once-only" : undefined,
    });
  }
  // Clients' own requests still queued: their connections closed with foreman.
  enqueue({ source: "ollama", type: "generate", request: JSON.stringify({ model: "llama3.2", prompt: "hi" }) });
  enqueue({ source: "openai", owner: owner(alice.key) });
  db.close();
  return { jobs: count };
}

/** The file as a SQLite restart would leave it: a consistent copy (VACUUM INTO) put through the same recovery at `now`. */
function restartedTwin(path: string, now: number, options: { cancelBatchLines?: boolean } = {}): Database {
  const twin = `${path}.twin-${now}.db`;
  const source = new Database(path, { readonly: true });
  source.run(`VACUUM INTO '${twin}'`);
  source.close();
  const db = openDatabase(twin);
  const store = new JobStore(db);
  store.recoverInterruptedJobs(now);
  if (options.cancelBatchLines) {
    const ids = db
      .query<{ id: string }, []>(`SELECT id FROM jobs WHERE source = 'batch' AND state IN ('queued', 'loading', 'working')`)
      .all()
      .map((row) => row.id);
    store.cancelJobs(ids, BATCH_NOT_COPIED, now);
  }
  return db;
}

/** Every row of a table in one engine, its bytes as plain arrays, for comparison. */
async function pgRows(sql: SQL, table: string, order: string): Promise<unknown[]> {
  const rows = await sql.unsafe(`SELECT * FROM ${table} ORDER BY ${order}`);
  return [...rows].map((row: Record<string, unknown>) => plain(row, table));
}

function liteRows(db: Database, table: string, order: string): unknown[] {
  return db
    .query<Record<string, unknown>, []>(`SELECT * FROM ${table} ORDER BY ${order}`)
    .all()
    .map((row) => plain(row, table));
}

/** bigints (strings from Bun.SQL) as numbers, bytes as arrays; PostgreSQL's waiter column left out. */
function plain(row: Record<string, unknown>, table: string): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(row)) {
    if (table === "jobs" && name === "waiter") continue;
    if (value instanceof Uint8Array) out[name] = [...value];
    else if (typeof value === "string" && /^-?\d+$/.test(value) && BIGINT_COLUMNS.has(name)) out[name] = Number(value);
    else out[name] = value;
  }
  return out;
}

const BIGINT_COLUMNS = new Set([
  "run_after",
  "created_at",
  "started_at",
  "finished_at",
  "updated_at",
  "rotated_at",
  "revoked_at",
  "daily_tokens",
  "prompt_tokens",
  "output_tokens",
  "gpu_ms",
]);

const ORDER: Record<string, string> = {
  jobs: "id",
  artifacts: "job_id, name",
  model_costs: "model_key",
  target_costs: "target, model_key",
  keys: "id",
  key_counters: "key_id",
  key_usage: "key_id, day",
};

const hasPg = pgBinDir() !== null;

beforeAll(async () => {
  dir = tempDir();
  if (hasPg) cluster = await startPgCluster();
});
afterAll(async () => {
  for (const sql of clients) await sql.close().catch(() => {});
  await cluster?.stop();
  dir.cleanup();
});

describe.skipIf(!hasPg)("foreman db copy", () => {
  test("copies every table column for column; the PG stores answer what SQLite's do after its restart recovery", async () => {
    const path = sqlitePath();
    const base = Date.now() - 2 * HOUR;
    fillQueue(path, base);
    const before = new Database(path, { readonly: true });
    const untouched = Object.fromEntries(COPIED_TABLES.map((table) => [table, liteRows(before, table, ORDER[table]!)]));
    before.close();
    const now = Date.now();
    const url = await freshPg();

    const report = await copySqliteToPg({ sqlitePath: path, pgUrl: url, now, pageRows: 7, pageBytes: 64 * 1024 });

    // The SQLite file is left as it was, and its lock released.
    const after = new Database(path, { readonly: true });
    for (const table of COPIED_TABLES) expect(liteRows(after, table, ORDER[table]!)).toEqual(untouched[table]!);
    after.close();
    expect(existsSync(`${path}.lock`)).toBe(false);

    const twin = restartedTwin(path, now);
    const lite = new JobStore(twin);
    const sql = await pgClient(url);
    const pgJobs = new PgJobStore(sql);
    const pg = new PgQueueStore(sql, pgJobs);

    // Raw rows, table by table (bytes as bytes, times as numbers).
    for (const table of COPIED_TABLES) {
      const rows = liteRows(twin, table, ORDER[table]!);
      expect({ table, rows: await pgRows(sql, table, ORDER[table]!) }).toEqual({ table, rows });
      expect(report.rows[table]).toBe(rows.length);
    }
    expect(report.rows.keys).toBe(3);
    expect(report.rows.jobs).toBeGreaterThan(60);
    expect(report.rows.target_costs).toBeGreaterThan(1);
    expect(report.rows.key_usage).toBeGreaterThan(0);
    expect(report.rows.key_counters).toBeGreaterThan(0);
    const [{ waiters }] = await sql`SELECT count(*)::int AS waiters FROM jobs WHERE waiter IS NOT NULL`;
    expect(waiters).toBe(0);

    // What the recovery did, as SQLite's restart does it.
    expect(report.recovery).toEqual({ requeued: 1, failed: 1, canceledRunning: 1, canceledQueued: 2 });
    expect(lite.runningJobs()).toEqual([]);
    expect(await pg.runningJobs()).toEqual([]);

    // The job API's reads: every job by id, the lists and pages with and without filters.
    const all = lite.listJobs({ limit: 1000, withBodies: { request: true, result: true } });
    expect(await pg.listJobs({ limit: 1000, withBodies: { request: true, result: true } })).toEqual(all);
    for (const row of all) {
      expect(await pg.getJob(row.id)).toEqual(lite.getJob(row.id)!);
      expect(await pg.getJobHead(row.id)).toEqual(lite.getJobHead(row.id)!);
      expect(await pg.artifacts.list(row.id)).toEqual(lite.artifacts.list(row.id));
      for (const artifact of lite.artifacts.list(row.id)) {
        const want = lite.artifacts.get(row.id, artifact.name)!;
        const got = (await pg.artifacts.get(row.id, artifact.name))!;
        expect({ contentType: got.contentType, data: [...got.data] }).toEqual({
          contentType: want.contentType,
          data: [...want.data],
        });
      }
    }
    for (const state of ["queued", "done", "failed", "canceled"] as const) {
      const filter = { state, limit: 9, withBodies: { request: true, result: true } };
      expect(await pg.listJobs(filter)).toEqual(lite.listJobs(filter));
      expect(await pg.listJobPage(filter, 2000)).toEqual(lite.listJobPage(filter, 2000));
    }
    const keyId = all.find((row) => row.keyId !== null)!.keyId!;
    expect(await pg.listJobs({ keyId, limit: 50 })).toEqual(lite.listJobs({ keyId, limit: 50 }));

    // The queue's shape: counts (queued_counts, kept by PG's triggers through the INSERTs), groups, positions.
    expect(await pg.queuedCount()).toBe(lite.queuedCount());
    expect(report.queued).toBe(lite.queuedCount());
    expect(await pg.queuedCountByModel()).toEqual(lite.queuedCountByModel());
    // Without the starvation guard's cutoff: SQLite counts a group's overdue jobs by id, PostgreSQL by created_at,
    // the same jobs only while ids are made at created_at, and this file's back-dated jobs get ids from the shared
    // monotonic ULID factory, which a test before it in the same process may have moved past their times.
    expect(await pg.queueGroups()).toEqual(lite.queueGroups());
    for (const row of lite.listJobs({ state: "queued", limit: 1000 })) {
      expect({ id: row.id, at: await pg.queuePosition(row) }).toEqual({ id: row.id, at: lite.queuePosition(row) });
    }
    const liteCounts = twin
      .query<{ n: number }, []>(`SELECT model_key, model, priority, batch, n FROM queued_counts WHERE n > 0 ORDER BY 1, 2, 3, 4`)
      .all();
    const pgCounts = await sql`SELECT model_key, model, priority, batch, sum(n)::int AS n FROM queued_counts WHERE n > 0
      GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4`;
    expect([...pgCounts]).toEqual(liteCounts);

    // The insert trigger, set aside for the copy, is back: jobs queued from now on are counted.
    const [{ enabled }] = await sql`SELECT tgenabled AS enabled FROM pg_trigger WHERE tgname = 'jobs_queued_insert'`;
    expect(enabled).toBe("O");

    // Learned costs, as the scheduler reads them.
    expect(await pg.costs.all()).toEqual(lite.costs.all());
    for (const target of ["gpu0", "gpu1"]) expect(await pg.costs.forTarget(target)).toEqual(lite.costs.forTarget(target));
    twin.close();
  });

  test("the recovery's instant is PostgreSQL's clock when none is given", async () => {
    const path = sqlitePath();
    fillQueue(path, Date.now() - HOUR);
    const url = await freshPg();
    const before = Date.now();
    const report = await copySqliteToPg({ sqlitePath: path, pgUrl: url });
    const after = Date.now();
    expect(report.recovery.requeued).toBe(1);
    const sql = await pgClient(url);
    const [row] = await sql`SELECT run_after::float8 AS "runAfter" FROM jobs WHERE error = 'interrupted'`;
    // The test cluster runs on this machine's clock.
    expect(row.runAfter).toBeGreaterThanOrEqual(before - 1000);
    expect(row.runAfter).toBeLessThanOrEqual(after + 1000);
  });

  test("a role that does not own the tables copies with queued_counts' trigger kept: the same counts", async () => {
    const path = sqlitePath();
    fillQueue(path, Date.now() - HOUR);
    const url = await freshPg();
    const owner = await pgClient(url);
    const role = `copier${databases}`;
    await owner.unsafe(`CREATE ROLE ${role} LOGIN; GRANT CREATE ON SCHEMA public TO ${role};
      GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA public TO ${role}`);
    const now = Date.now();
    const report = await copySqliteToPg({ sqlitePath: path, pgUrl: url.replace("postgres@", `${role}@`), now });
    const twin = restartedTwin(path, now);
    expect(report.queued).toBe(new JobStore(twin).queuedCount());
    const pg = new PgQueueStore(owner, new PgJobStore(owner));
    expect(await pg.queuedCountByModel()).toEqual(new JobStore(twin).queuedCountByModel());
    expect(await pg.queueGroups()).toEqual(new JobStore(twin).queueGroups());
    twin.close();
  });

  test("refuses a PostgreSQL queue that is not empty, and leaves it as it was", async () => {
    const path = sqlitePath();
    fillQueue(path, Date.now() - HOUR);
    const url = await freshPg();
    const first = await copySqliteToPg({ sqlitePath: path, pgUrl: url });
    const sql = await pgClient(url);
    const [{ n: jobs }] = await sql`SELECT count(*)::int AS n FROM jobs`;
    const again = copySqliteToPg({ sqlitePath: path, pgUrl: url });
    await expect(again).rejects.toThrow(CopyError);
    await expect(copySqliteToPg({ sqlitePath: path, pgUrl: url })).rejects.toThrow(
      `the PostgreSQL queue at ${url} is not empty (${jobs} jobs, `,
    );
    expect(jobs).toBe(first.rows.jobs);
    const [{ n }] = await sql`SELECT count(*)::int AS n FROM jobs`;
    expect(n).toBe(jobs);

    // Keys alone make it not empty too: a copy never merges two queues.
    const other = await freshPg();
    const otherSql = await pgClient(other);
    await otherSql`INSERT INTO keys (id, name, role, secret_hash, hint, created_at) VALUES ('key_x', 'x', 'admin', '\\x00', 'abcd', 1)`;
    await expect(copySqliteToPg({ sqlitePath: path, pgUrl: other })).rejects.toThrow("is not empty (1 keys row): ");
  });

  test("a copy that fails midway leaves PostgreSQL as it was (one transaction)", async () => {
    const path = sqlitePath();
    fillQueue(path, Date.now() - HOUR);
    // PostgreSQL's text cannot hold a NUL: the last job's row is refused, pages after the first were written.
    const db = new Database(path);
    db.run(`UPDATE jobs SET error = 'bad' || char(0) || 'byte' WHERE id = (SELECT max(id) FROM jobs WHERE state = 'done')`);
    db.close();
    const url = await freshPg();
    await expect(copySqliteToPg({ sqlitePath: path, pgUrl: url, pageRows: 5 })).rejects.toThrow(/^copying jobs \(the page from /);
    const sql = await pgClient(url);
    for (const table of COPIED_TABLES) {
      const [{ n }] = await sql.unsafe(`SELECT count(*)::int AS n FROM ${table}`);
      expect({ table, n }).toEqual({ table, n: 0 });
    }
    const [{ enabled }] = await sql`SELECT tgenabled AS enabled FROM pg_trigger WHERE tgname = 'jobs_queued_insert'`;
    expect(enabled).toBe("O");
    expect(existsSync(`${path}.lock`)).toBe(false);
  });

  test("refuses while a foreman holds the SQLite file; a missing file is not created", async () => {
    const path = sqlitePath();
    fillQueue(path, Date.now() - HOUR);
    const url = await freshPg();
    const lock = lockDatabase(path);
    try {
      await expect(copySqliteToPg({ sqlitePath: path, pgUrl: url })).rejects.toThrow(
        `another foreman (pid ${process.pid}) is serving ${path}: stop it first`,
      );
    } finally {
      lock.release();
    }
    const missing = join(dir.path, "gone", "missing.db");
    await expect(copySqliteToPg({ sqlitePath: missing, pgUrl: url })).rejects.toThrow(`no such file: ${missing}`);
    expect(existsSync(join(dir.path, "gone"))).toBe(false);
    // PostgreSQL down: named, and the file's lock given back.
    const down = `postgres://postgres:hunter2@127.0.0.1:${await freePort()}/foreman`;
    const refused = copySqliteToPg({ sqlitePath: path, pgUrl: down });
    await expect(refused).rejects.toThrow(/^cannot reach PostgreSQL at postgres:\/\/postgres:\*\*\*@127\.0\.0\.1:\d+\/foreman: /);
    expect(existsSync(`${path}.lock`)).toBe(false);
  });

  test("active batches are refused, or with --skip-batches their lines still to run are canceled in the copy", async () => {
    const path = sqlitePath();
    fillQueue(path, Date.now() - HOUR);
    const db = openDatabase(path);
    const tables = openJobTables(db);
    const files = new FileStore(db);
    const batches = new BatchStore(db, files, tables.batchLedger);
    const input = files.beginUpload("batch", "in.jsonl");
    files.finishUpload(input.id, "batch");
    const batch = batches.create({
      endpoint: "/v1/chat/completions",
      inputFileId: input.id,
      completionWindow: "24h",
      metadata: null,
      priority: -1,
      maxAttempts: 3,
      expiresAt: Date.now() + 24 * HOUR,
    });
    const lines = [1, 2, 3].map((number) => ({
      number,
      kind: "job" as const,
      customId: `line-${number}`,
      type: "chat" as const,
      model: "llama3.2",
      modelKey: "llama3.2:latest",
      request: "{}",
    }));
    batches.admitSlice(batch.id, lines, 3, true);
    // One line runs when foreman stops.
    tables.store.claimNextJob({ ...policy("gpu0"), eligible: () => true }, Date.now());
    db.close();
    const url = await freshPg();
    await expect(copySqliteToPg({ sqlitePath: path, pgUrl: url })).rejects.toThrow(
      `${path} has 1 active batch (${batch.id}) with 3 batch lines still to run, and PostgreSQL does not run batches yet`,
    );
    const sql = await pgClient(url);
    const [{ n }] = await sql`SELECT count(*)::int AS n FROM jobs`;
    expect(n).toBe(0);

    const now = Date.now();
    const report = await copySqliteToPg({ sqlitePath: path, pgUrl: url, skipBatches: true, now });
    expect(report.batchLinesCanceled).toBe(3);
    expect(report.leftInSqlite).toMatchObject({ batches: 1, activeBatches: 1, files: 3 });
    expect(warnings(report)).toEqual([
      expect.stringMatching(
        /^not copied, PostgreSQL having no place for them yet: 1 batch, 3 files \(\d+ B\); they stay in the SQLite file$/,
      ),
    ]);
    expect(summary(path, url, report)).toContain("\nbatch lines canceled (--skip-batches: their batches stay in SQLite): 3\n");
    const twin = restartedTwin(path, now, { cancelBatchLines: true });
    expect(await pgRows(sql, "jobs", "id")).toEqual(liteRows(twin, "jobs", "id"));
    const pg = new PgQueueStore(sql, new PgJobStore(sql));
    expect(await pg.queuedCount()).toBe(new JobStore(twin).queuedCount());
    const [{ canceled }] = await sql`SELECT count(*)::int AS canceled FROM jobs WHERE source = 'batch' AND state = 'canceled'
      AND error = ${BATCH_NOT_COPIED.error}`;
    expect(canceled).toBe(3);
    twin.close();
  });

  test("webhooks still owed are refused, or with --skip-webhooks copied without them", async () => {
    const path = sqlitePath();
    fillQueue(path, Date.now() - HOUR);
    const db = openDatabase(path);
    const { store } = openJobTables(db);
    const hooked = store.enqueue(job({ webhook: { url: "https://example.com/hook", secret: "whsec_x" } }), 1000).job;
    // An ended job with a webhook: its delivery is queued (pending) by the end hook.
    const ended = store.enqueue(job({ webhook: { url: "https://example.com/hook" }, priority: 100 }), 1000).job;
    store.cancelJob(ended.id);
    db.close();
    const url = await freshPg();
    await expect(copySqliteToPg({ sqlitePath: path, pgUrl: url })).rejects.toThrow(
      `${path} has 1 webhook not yet delivered and 1 job with a webhook still to run, and PostgreSQL does not deliver webhooks yet`,
    );
    const report = await copySqliteToPg({ sqlitePath: path, pgUrl: url, skipWebhooks: true });
    expect(report.leftInSqlite).toMatchObject({ webhookDeliveries: 1, pendingDeliveries: 1, webhookJobs: 1 });
    expect(warnings(report)).toEqual([
      "not copied, PostgreSQL having no place for them yet: 1 webhook delivery record; they stay in the SQLite file",
      "--skip-webhooks: 1 webhook not yet delivered will never be; 1 job with a webhook will run without calling it",
    ]);
    const sql = await pgClient(url);
    const [row] = await sql`SELECT state, webhook_url, webhook_secret FROM jobs WHERE id = ${hooked.id}`;
    expect(row).toEqual({ state: "queued", webhook_url: "https://example.com/hook", webhook_secret: "whsec_x" });
  });

  test("the compiled binary: misuse exits 2, refusals 1, a copy 0 with its summary", async () => {
    const path = sqlitePath();
    fillQueue(path, Date.now() - HOUR);
    const url = await freshPg();

    const misuse = await runForeman(["db", "copy", path]);
    expect(misuse).toEqual({
      stdout: "",
      stderr: "foreman db: db copy takes a SQLite file and a PostgreSQL URL\nrun `foreman --help` for usage\n",
      code: 2,
    });
    const swapped = await runForeman(["db", "copy", url, path]);
    expect(swapped.code).toBe(2);
    expect(swapped.stderr).toStartWith("foreman db: db copy takes the SQLite file first, then the PostgreSQL URL\n");
    expect((await runForeman(["db", "move"])).stderr).toStartWith("foreman db: db takes one of copy\n");
    const help = await runForeman(["--help"]);
    expect(help.stdout).toContain("\n  foreman db copy SQLITE-FILE POSTGRES-URL [--skip-batches] [--skip-webhooks]\n");

    const missing = join(dir.path, "nothing-here.db");
    const gone = await runForeman(["db", "copy", missing, url]);
    expect(gone).toEqual({
      stdout: "",
      stderr: `foreman db: no such file: ${missing} (the SQLite database to copy; nothing was created)\n`,
      code: 1,
    });
    expect(existsSync(missing)).toBe(false);
    expect(existsSync(`${missing}.lock`)).toBe(false);

    // This process holds the lock, as a serving foreman would: another process is refused.
    const lock = lockDatabase(path);
    try {
      const held = await runForeman(["db", "copy", path, url]);
      expect(held.code).toBe(1);
      expect(held.stderr).toBe(
        `foreman db: another foreman (pid ${process.pid}) is serving ${path}: stop it first, so the copy sees the queue at rest\n`,
      );
    } finally {
      lock.release();
    }

    const copied = await runForeman(["db", "copy", path, url]);
    expect(copied.code).toBe(0);
    const sql = await pgClient(url);
    const [{ jobs }] = await sql`SELECT count(*)::int AS jobs FROM jobs`;
    const [{ queued }] = await sql`SELECT count(*)::int AS queued FROM jobs WHERE state = 'queued'`;
    expect(copied.stdout).toMatch(new RegExp(`^copied ${path} to ${url} in \\d+\\.\\ds\\nTABLE\\s+ROWS\\s+SIZE\\n`));
    expect(copied.stdout).toMatch(new RegExp(`\\njobs\\s+${jobs}\\n`));
    expect(copied.stdout).toMatch(/\nartifacts\s+\d+\s+\d+(\.\d)? KB\n/);
    expect(copied.stdout).toContain(
      "\nrunning when foreman stopped, as a restart treats them: 1 re-queued, 1 failed (out of attempts), 1 client request canceled\n",
    );
    expect(copied.stdout).toContain("\nqueued client requests canceled (their connections closed with foreman): 2\n");
    expect(copied.stdout).toContain(`\nqueued on PostgreSQL: ${queued}\n`);
    expect(copied.stdout).toEndWith(
      "\nthe SQLite file is unchanged: do not serve it again, or its queued jobs would run twice\n",
    );
    expect(copied.stderr).toBe("");

    const twice = await runForeman(["db", "copy", path, url]);
    expect(twice.code).toBe(1);
    expect(twice.stderr).toStartWith(`foreman db: the PostgreSQL queue at ${url} is not empty (${jobs} jobs, `);
  });
});
