// What a job's end leaves on PostgreSQL besides its row, each written in the transaction that ends it: its
// artifacts, its model key's learned costs per target, its key's usage (and the admission that reads it).
// Each is checked against SQLite's JobStore doing the same to the same jobs at the same instants (PG's). A
// real throwaway cluster, one per file, a fresh database per test.
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test } from "bun:test";
import type { SQL } from "bun";
import type { Database } from "bun:sqlite";
import { ApiError, QueueFullError } from "../../src/errors";
import { type KeyAdmission, KeyLimitError, nextUtcMidnight } from "../../src/keys/usage";
import type { ArtifactInput } from "../../src/queue/artifacts";
import { openDatabase } from "../../src/queue/db";
import type { JobRow } from "../../src/queue/job-row";
import { openPg } from "../../src/queue/pg/db";
import { type Fence, PgJobStore } from "../../src/queue/pg/job-store";
import { JobEndListener } from "../../src/queue/pg/notify";
import { PgRunnerStore } from "../../src/queue/pg/runner-store";
import {
  CLIENT_CANCELED,
  type ClaimPolicy,
  type JobUsage,
  JobStore,
  type NewJob,
  RESTART_DROPPED_RUNNING,
} from "../../src/queue/store";
import { type PgCluster, startPgCluster } from "../pg-cluster";

let cluster: PgCluster;
let url: string;
let sql: SQL;
let pg: PgJobStore;
let db: Database;
let lite: JobStore;
let dbCount = 0;
const open: SQL[] = [];

const GPU = "gpu0";
const GPU1 = "gpu1";
const HOUR = 3_600_000;
const DAY = 86_400_000;
/** The lease each target is held under (the lease keeper's job in a node; written directly here). */
const fences: Record<string, Fence> = {};

beforeAll(async () => {
  cluster = await startPgCluster();
});
afterAll(async () => {
  for (const client of open) await client.close().catch(() => {});
  await cluster.stop();
});
beforeEach(async () => {
  const name = `o${++dbCount}`;
  await cluster.createDatabase(name);
  url = cluster.urlFor(name);
  sql = await openPg(url, { poolSize: 4 });
  open.push(sql);
  pg = new PgJobStore(sql);
  for (const target of [GPU, GPU1]) await takeLease(target);
  db = openDatabase(":memory:");
  lite = new JobStore(db);
});
afterEach(() => db.close());

async function takeLease(target: string, token = 1, node = "test"): Promise<Fence> {
  await sql`INSERT INTO target_leases (target, node, token, expires_at) VALUES (${target}, ${node}, ${token}, now() + interval '1 minute')
    ON CONFLICT (target) DO UPDATE SET node = excluded.node, token = excluded.token, expires_at = excluded.expires_at`;
  return (fences[target] = { target, token });
}

// --- Twins: one job on both stores, each operation made on PostgreSQL, then on SQLite at PG's instant ---

/** A job on both stores: PG's row as last returned, SQLite's id, the target it was last claimed on. */
interface Twin {
  pg: JobRow;
  liteId: string;
  target: string;
}

let models = 0;
const job = (extra: Partial<NewJob> = {}): NewJob => {
  const model = extra.model ?? `m${++models}`;
  return { type: "chat", model, modelKey: `${model}:latest`, request: "{}", source: "jobs", maxAttempts: 3, ...extra };
};

/** Queues a job on both; SQLite's an hour before PG's, so it is runnable at whatever instant PG claims it. */
async function add(extra: Partial<NewJob> = {}): Promise<Twin> {
  const line = job(extra);
  const row = (await pg.enqueue(line, 1000)).job;
  return { pg: row, liteId: lite.enqueue(line, 1000, row.createdAt - HOUR).job.id, target: GPU };
}

/**
 * Claims the twin on `target` on both (its model loaded there when `resident`), as if it had run `runMs` by
 * its end: PG's start is moved back by that much, and SQLite claims at that start.
 */
async function claim(twin: Twin, target = GPU, runMs = 0, resident = false): Promise<JobRow> {
  const policy: ClaimPolicy = {
    schedule: "fifo",
    residentKeys: resident ? [twin.pg.modelKey] : [],
    maxWaitMs: HOUR,
    target,
    eligible: (key) => key === twin.pg.modelKey,
  };
  const claimed = await pg.claimNextJob(policy, fences[target]!);
  expect(claimed?.id).toBe(twin.pg.id);
  // Its queueing moves back with it: a start before run_after would read as an earlier attempt's (gpuMsOf).
  const [moved] = await sql`UPDATE jobs SET started_at = started_at - ${runMs}::bigint, run_after = run_after - ${runMs}::bigint,
      created_at = created_at - ${runMs}::bigint
    WHERE id = ${twin.pg.id} RETURNING started_at::float8 AS "startedAt"`;
  const liteClaimed = lite.claimNextJob(policy, moved.startedAt);
  expect(liteClaimed).toMatchObject({ id: twin.liteId, swapped: claimed!.swapped, target });
  twin.target = target;
  return (twin.pg = { ...claimed!, startedAt: moved.startedAt });
}

async function finish(twin: Twin, usage: JobUsage, artifacts: ArtifactInput[] = []): Promise<JobRow> {
  const done = await pg.finishJob(twin.pg.id, fences[twin.target]!, "{}", usage, artifacts);
  expect(done).toMatchObject({ state: "done" });
  expect(lite.finishJob(twin.liteId, "{}", artifacts, usage, done!.finishedAt!)).toMatchObject({ state: "done" });
  return (twin.pg = done!);
}

async function fail(twin: Twin, artifacts: ArtifactInput[] = []): Promise<JobRow> {
  const failed = await pg.failJob(twin.pg.id, fences[twin.target]!, "upstream said no", 400, artifacts);
  expect(failed).toMatchObject({ state: "failed" });
  expect(lite.failJob(twin.liteId, "upstream said no", 400, artifacts, failed!.finishedAt!)).toMatchObject({ state: "failed" });
  return (twin.pg = failed!);
}

/** A cancel on both: an API client's (no fence) or, with `byRunner`, the runner's under the claim's fence. */
async function cancel(twin: Twin, byRunner = false): Promise<JobRow> {
  const canceled = await pg.cancelJob(twin.pg.id, CLIENT_CANCELED, byRunner ? fences[twin.target] : undefined);
  expect(canceled).toMatchObject({ state: "canceled" });
  expect(lite.cancelJob(twin.liteId, CLIENT_CANCELED, canceled!.finishedAt!)).toMatchObject({ state: "canceled" });
  return (twin.pg = canceled!);
}

/** Puts a running twin back, runnable in a minute (a retry's backoff). */
async function requeue(twin: Twin): Promise<JobRow> {
  const row = await pg.requeueJob(twin.pg.id, fences[twin.target]!, 60_000, "busy", 503);
  expect(row).toMatchObject({ state: "queued" });
  expect(lite.requeueJob(twin.liteId, row!.runAfter, "busy", 503)).toMatchObject({ state: "queued" });
  return (twin.pg = row!);
}

const usage = (promptTokens: number | null, outputTokens: number | null, loadMs: number | null = null): JobUsage => ({
  promptTokens,
  outputTokens,
  loadMs,
  evalMs: loadMs === null ? null : 40,
});

const bytesOf = (data: Uint8Array | null | undefined) => (data == null ? data : new Uint8Array(data));

// --- Artifacts ---

describe("artifacts", () => {
  const stream = new Uint8Array(100_000).map((_, i) => (i * 7) % 251);

  test("stored by the transaction that ends the job, done or failed; listed and read as SQLite's; gone when it is pruned", async () => {
    const done = await add();
    await claim(done);
    const artifacts: ArtifactInput[] = [
      { name: "stream.ndjson", contentType: "application/x-ndjson", data: stream },
      { name: "result.json", contentType: "application/json", data: '{"first":"é"}' },
      // A name given twice keeps its last, as SQLite's INSERT OR REPLACE does.
      { name: "result.json", contentType: "application/json", data: '{"ok":"é"}' },
    ];
    const row = await finish(done, usage(1, 2), artifacts);
    const failed = await add();
    await claim(failed);
    await fail(failed, [{ name: "stream.ndjson", contentType: "application/x-ndjson", data: stream.subarray(0, 10) }]);

    const listed = await pg.artifacts.list(done.pg.id);
    expect(listed).toEqual([
      { name: "result.json", contentType: "application/json", size: 11, createdAt: row.finishedAt! },
      { name: "stream.ndjson", contentType: "application/x-ndjson", size: 100_000, createdAt: row.finishedAt! },
    ]);
    expect(listed).toEqual(lite.artifacts.list(done.liteId));
    expect(await pg.artifacts.list(failed.pg.id)).toEqual(lite.artifacts.list(failed.liteId));
    for (const [twin, name] of [
      [done, "result.json"],
      [done, "stream.ndjson"],
      [failed, "stream.ndjson"],
      [failed, "result.json"],
    ] as const) {
      const [got, expected] = [await pg.artifacts.get(twin.pg.id, name), lite.artifacts.get(twin.liteId, name)];
      expect(got && { ...got, data: bytesOf(got.data) }).toEqual(expected && { ...expected, data: bytesOf(expected.data) });
      expect(await pg.artifacts.size(twin.pg.id, name)).toBe(lite.artifacts.size(twin.liteId, name));
    }
    expect(new TextDecoder().decode((await pg.artifacts.get(done.pg.id, "result.json"))!.data)).toBe('{"ok":"é"}');
    expect(await pg.artifacts.list("no-such-job")).toEqual([]);

    // Pruning the jobs deletes their artifacts with them.
    await sql`UPDATE jobs SET finished_at = finished_at - ${HOUR}::bigint`;
    expect(await pg.pruneFinishedJobs(60_000)).toBe(2);
    expect(await pg.artifacts.list(done.pg.id)).toEqual([]);
    expect((await sql`SELECT count(*)::int AS n FROM artifacts`)[0].n).toBe(0);
  });

  test("a slice is the bytes SQLite's slice gives: from its offset, fewer at the end, none past it; null for no artifact", async () => {
    const twin = await add();
    await claim(twin);
    await finish(twin, usage(1, 1), [
      { name: "stream.ndjson", contentType: "application/x-ndjson", data: stream },
      { name: "small", contentType: "text/plain", data: "héllo" },
    ]);
    const [{ storage }] = await sql`SELECT attstorage AS storage FROM pg_attribute
      WHERE attrelid = 'artifacts'::regclass AND attname = 'data'`;
    expect(storage).toBe("e"); // EXTERNAL: out of line uncompressed, so a slice reads only its chunks
    for (const name of ["stream.ndjson", "small"]) {
      for (const offset of [0, 1, 3, 2_000, 65_536, 99_999, 100_000, 100_001, 1_000_000]) {
        for (const length of [0, 1, 2, 10, 4_096, 100_000, 1_000_000]) {
          const got = await pg.artifacts.slice(twin.pg.id, name, offset, length);
          expect(bytesOf(got)).toEqual(bytesOf(lite.artifacts.slice(twin.liteId, name, offset, length)));
        }
      }
    }
    expect(bytesOf(await pg.artifacts.slice(twin.pg.id, "stream.ndjson", 99_990, 100))).toEqual(stream.slice(99_990));
    expect(await pg.artifacts.slice(twin.pg.id, "stream.ndjson", 200_000, 10)).toEqual(new Uint8Array(0));
    expect(await pg.artifacts.slice(twin.pg.id, "nope", 0, 10)).toBeNull();
    expect(await pg.artifacts.slice("no-such-job", "small", 0, 10)).toBeNull();
    expect(await pg.artifacts.size(twin.pg.id, "nope")).toBeNull();
  });

  test("an end fenced out stores nothing of it: no artifacts, costs or usage; the runner store passes its artifacts on", async () => {
    pg.costs.perTarget = true;
    const owner: KeyAdmission = { keyId: "key_a", name: "a", maxJobs: null, dailyTokens: null };
    const a = await pg.enqueue(job({ owner }), 100);
    const b = await pg.enqueue(job({ owner }), 100);
    const fifo: ClaimPolicy = { schedule: "fifo", residentKeys: [], maxWaitMs: HOUR, target: GPU };
    expect((await pg.claimNextJob(fifo, fences[GPU]!))!.id).toBe(a.job.id);
    expect((await pg.claimNextJob(fifo, fences[GPU]!))!.id).toBe(b.job.id);
    const stale = fences[GPU]!;
    await takeLease(GPU, 2, "other");
    const artifacts = [{ name: "result.json", contentType: "application/json", data: "{}" }];
    expect(await pg.finishJob(a.job.id, stale, "{}", usage(5, 5), artifacts)).toBeNull();
    expect(await pg.failJob(b.job.id, stale, "no", 500, artifacts)).toBeNull();
    expect(await pg.cancelJob(b.job.id, CLIENT_CANCELED, stale)).toBeNull();
    const [left] =
      await sql`SELECT (SELECT count(*) FROM artifacts)::int AS artifacts, (SELECT count(*) FROM key_usage)::int AS usage,
      (SELECT count(*) FROM model_costs)::int AS costs, (SELECT count(*) FROM target_costs)::int AS "targetCosts"`;
    expect(left).toEqual({ artifacts: 0, usage: 0, costs: 0, targetCosts: 0 });

    // Under the node's fence, through the runner's store: what the runner hands over is stored.
    for (let i = 0; i < 2; i++) await pg.enqueue(job({ owner }), 100);
    const runner = new PgRunnerStore(pg, (target) => fences[target] ?? null);
    const claims = [await runner.claimNextJob(fifo), await runner.claimNextJob(fifo)];
    expect(await runner.finishJob(claims[0]!.id, "{}", artifacts, usage(5, 5))).toMatchObject({ state: "done" });
    expect(
      await runner.failJob(claims[1]!.id, "no", 500, [{ name: "stream.ndjson", contentType: "x", data: "{}\n" }]),
    ).toMatchObject({
      state: "failed",
    });
    expect((await pg.artifacts.list(claims[0]!.id)).map((a) => a.name)).toEqual(["result.json"]);
    expect((await pg.artifacts.list(claims[1]!.id)).map((a) => a.name)).toEqual(["stream.ndjson"]);
    // The key's charge and the artifacts went in one statement; both are there.
    expect([...(await sql`SELECT key_id, prompt_tokens::int AS p, output_tokens::int AS o, jobs FROM key_usage`)]).toEqual([
      { key_id: "key_a", p: 5, o: 5, jobs: 1 },
    ]);
  });
});

// --- Learned costs per target ---

describe("per-target costs", () => {
  /** Job ends on two targets: native swaps (a load reported), swaps without one, warm runs, a failure, a switch off. */
  const steps: {
    model: string;
    target: string;
    runMs: number;
    loadMs: number | null;
    resident?: boolean;
    failed?: boolean;
    perTarget?: boolean;
  }[] = [
    { model: "a", target: GPU, runMs: 2_000, loadMs: 1_500 },
    { model: "a", target: GPU, runMs: 300, loadMs: 2, resident: true },
    // A swap with no load reported: its load is its time less the warm run known (the key's overall; none here yet).
    { model: "a", target: GPU1, runMs: 4_000, loadMs: null },
    { model: "a", target: GPU1, runMs: 500, loadMs: null, resident: true },
    { model: "a", target: GPU1, runMs: 3_000, loadMs: null },
    { model: "b", target: GPU1, runMs: 1_000, loadMs: null },
    { model: "b", target: GPU, runMs: 700, loadMs: null, resident: true, failed: true },
    { model: "b", target: GPU, runMs: 900, loadMs: null, resident: true },
    { model: "c", target: GPU, runMs: 50, loadMs: 20, perTarget: false },
    { model: "b", target: GPU1, runMs: 2_500, loadMs: 1_200 },
  ];

  test("learned as SQLite's ModelCosts learns the same ends, overall and per target; the runner store's placement reads them", async () => {
    const runner = new PgRunnerStore(pg, (target) => fences[target] ?? null);
    expect(runner.costs.perTarget).toBe(false);
    for (const [i, step] of steps.entries()) {
      // The worker's switch, through the runner store as TargetRunners sets it; SQLite's the same.
      runner.costs.perTarget = step.perTarget ?? true;
      expect(pg.costs.perTarget).toBe(step.perTarget ?? true);
      lite.costs.perTarget = step.perTarget ?? true;
      const twin = await add({ model: step.model });
      await claim(twin, step.target, step.runMs, step.resident);
      if (step.failed) await fail(twin);
      else
        await finish(twin, {
          promptTokens: 3,
          outputTokens: 10 + i,
          loadMs: step.loadMs,
          evalMs: step.loadMs === null ? null : 50 + i,
        });
      expect(await pg.costs.all()).toEqual(lite.costs.all());
      for (const target of [GPU, GPU1]) expect(await pg.costs.forTarget(target)).toEqual(lite.costs.forTarget(target));
    }
    // Spot checks: gpu0's native swap taught load 1500; on gpu1, of "a"'s two swaps with no load reported, the
    // first taught no load there (no warm run known there yet; overall it did), the second one against gpu1's own.
    const gpu0 = await pg.costs.forTarget(GPU);
    expect(gpu0.get("a:latest")).toMatchObject({ jobs: 2, loads: 1, loadMs: 1_500 });
    expect(gpu0.has("c:latest")).toBe(false);
    expect((await pg.costs.all()).get("c:latest")).toMatchObject({ jobs: 1, loads: 1, loadMs: 20 });
    expect((await pg.costs.forTarget(GPU1)).get("a:latest")).toMatchObject({ jobs: 3, loads: 1 });
    expect((await pg.costs.all()).get("a:latest")).toMatchObject({ jobs: 5, loads: 3 });
    expect(await pg.costs.forTarget("gpu9")).toEqual(new Map());

    await runner.refresh();
    expect(runner.costs.all()).toEqual(lite.costs.all());
    for (const target of [GPU, GPU1]) expect(runner.costs.forTarget(target)).toEqual(lite.costs.forTarget(target));
    expect(runner.costs.forTarget("gpu9")).toEqual(new Map());
  });
});

// --- Key usage and admission ---

/** key_usage as rows, the same columns on both engines. */
async function usageRows() {
  const pgRows = [
    ...(await sql`SELECT key_id AS "keyId", day, prompt_tokens::float8 AS "promptTokens", output_tokens::float8 AS "outputTokens",
      jobs, gpu_ms::float8 AS "gpuMs" FROM key_usage ORDER BY key_id, day`),
  ];
  const liteRows = db
    .query(
      `SELECT key_id AS keyId, day, prompt_tokens AS promptTokens, output_tokens AS outputTokens, jobs, gpu_ms AS gpuMs
      FROM key_usage ORDER BY key_id, day`,
    )
    .all();
  return { pgRows, liteRows };
}

const keyOf = (keyId: string, limits: Partial<KeyAdmission> = {}): KeyAdmission => ({
  keyId,
  name: keyId.replace("key_", ""),
  maxJobs: null,
  dailyTokens: null,
  ...limits,
});

/** An enqueue's outcome, comparable across engines: "ok" (created or not), or the error's class, message, status, headers. */
function outcome(result: { created: boolean } | Error): unknown {
  if (!(result instanceof Error)) return result.created ? "ok" : "existing";
  return {
    error: result.constructor.name,
    message: result.message,
    ...(result instanceof ApiError ? { status: result.status, headers: result.headers } : {}),
  };
}

async function bothEnqueue(line: NewJob, maxQueue = 1000): Promise<unknown> {
  const [pgOutcome] = await pg.enqueueMany([line], maxQueue);
  let liteOutcome: { created: boolean } | Error;
  try {
    liteOutcome = lite.enqueue(line, maxQueue);
  } catch (error) {
    liteOutcome = error as Error;
  }
  expect(outcome(pgOutcome!)).toEqual(outcome(liteOutcome));
  // enqueue throws what enqueueMany returns.
  if (pgOutcome instanceof Error) await expect(pg.enqueue(line, maxQueue)).rejects.toThrow(pgOutcome.message);
  return outcome(pgOutcome!);
}

describe("key usage", () => {
  test("charged as SQLite's KeyUsage charges the same ends: tokens when done, GPU time at every end of a job that ran", async () => {
    const [k1, k2, k3] = [keyOf("key_1"), keyOf("key_2"), keyOf("key_3")];
    const done = await add({ owner: k1 });
    await claim(done, GPU, 1_500);
    await finish(done, usage(12, 34, 900));
    // Done without counts: a job charged, no tokens.
    const noCounts = await add({ owner: k1 });
    await claim(noCounts, GPU1, 250, true);
    await finish(noCounts, usage(null, null));
    const anonymous = await add();
    await claim(anonymous, GPU, 100);
    await finish(anonymous, usage(7, 7));
    // Failed after running: its GPU time alone.
    const failed = await add({ owner: k2 });
    await claim(failed, GPU, 2_200);
    await fail(failed);
    // Canceled queued: nothing, and no row for a key charged nothing (key_3).
    await cancel(await add({ owner: k2 }));
    await cancel(await add({ owner: k3 }));
    // Run, put back with a backoff, canceled while it waits: it holds no GPU at its end.
    const retried = await add({ owner: k1 });
    await claim(retried, GPU, 800);
    await requeue(retried);
    await cancel(retried);
    // Canceled running, by the runner (its fence) and by an API client (none): GPU time.
    const byRunner = await add({ owner: k2 });
    await claim(byRunner, GPU1, 600);
    await cancel(byRunner, true);
    const byClient = await add({ owner: k1 });
    await claim(byClient, GPU, 450);
    await cancel(byClient);

    // Recovery after a takeover: a client's request canceled, an exhausted job failed (both charged), one re-queued.
    const client = await add({ owner: k2, source: "openai" });
    await claim(client, GPU, 1_000);
    const exhausted = await add({ owner: k1, maxAttempts: 1 });
    await claim(exhausted, GPU, 1_300);
    const again = await add({ owner: k1 });
    await claim(again, GPU, 400);
    const twins = new Map([client, exhausted, again].map((twin) => [twin.pg.id, twin]));
    const recovered = await pg.recoverInterruptedJobs([await takeLease(GPU, 2, "me")]);
    expect(recovered.canceled.map((row) => row.id)).toEqual([client.pg.id]);
    expect(recovered.failed.map((row) => row.id)).toEqual([exhausted.pg.id]);
    expect(recovered.requeued.map((row) => row.id)).toEqual([again.pg.id]);
    for (const row of recovered.canceled) lite.cancelJob(twins.get(row.id)!.liteId, RESTART_DROPPED_RUNNING, row.finishedAt!);
    for (const row of recovered.failed) lite.failJob(twins.get(row.id)!.liteId, row.error!, row.errorStatus, [], row.finishedAt!);
    for (const row of recovered.requeued) lite.requeueJob(twins.get(row.id)!.liteId, row.runAfter, row.error, row.errorStatus);

    const { pgRows, liteRows } = await usageRows();
    expect(pgRows).toEqual(liteRows);
    // Each run took its runMs and the few ms of the test's own statements.
    const gpu = (row: { gpuMs: number }, runs: number) => row.gpuMs >= runs && row.gpuMs < runs + 1_000;
    expect(pgRows.map(({ keyId, promptTokens, outputTokens, jobs }) => [keyId, promptTokens, outputTokens, jobs])).toEqual([
      ["key_1", 12, 34, 2],
      ["key_2", 0, 0, 0],
    ]);
    expect(gpu(pgRows[0]!, 1_500 + 250 + 450 + 1_300)).toBe(true);
    expect(gpu(pgRows[1]!, 2_200 + 600 + 1_000)).toBe(true);
  });

  test("cancelJobs: many API cancels in one transaction, in the order given, each charged as cancelJob and announced", async () => {
    const [k1, k2] = [keyOf("key_1"), keyOf("key_2")];
    const queued = await add({ owner: k1 });
    const running = await add({ owner: k2 });
    await claim(running, GPU, 1_700);
    const done = await add({ owner: k1 });
    await claim(done, GPU1, 300);
    await finish(done, usage(4, 6));
    const ended: string[] = [];
    const listener = new JobEndListener({ url, onEnded: (ids) => ended.push(...ids), onResync: () => {} });
    await listener.start();
    try {
      expect(await pg.cancelJobs([], CLIENT_CANCELED)).toEqual([]);
      const rows = await pg.cancelJobs([running.pg.id, "no-such-job", queued.pg.id, done.pg.id, running.pg.id], CLIENT_CANCELED);
      expect(rows.map((row) => [row.id, row.state, row.error, row.errorStatus])).toEqual([
        [running.pg.id, "canceled", CLIENT_CANCELED.error, CLIENT_CANCELED.status],
        [queued.pg.id, "canceled", CLIENT_CANCELED.error, CLIENT_CANCELED.status],
      ]);
      for (const row of rows)
        lite.cancelJob((row.id === running.pg.id ? running : queued).liteId, CLIENT_CANCELED, row.finishedAt!);
      const { pgRows, liteRows } = await usageRows();
      expect(pgRows).toEqual(liteRows);
      expect(pgRows.map((row) => [row.keyId, row.jobs, row.gpuMs >= (row.keyId === "key_1" ? 300 : 1_700)])).toEqual([
        ["key_1", 1, true],
        ["key_2", 0, true],
      ]);
      for (let i = 0; i < 200 && ended.length < 2; i++) await Bun.sleep(10);
      expect(ended.sort()).toEqual([running.pg.id, queued.pg.id].sort());
      expect(await pg.queuedCount()).toBe(0);
    } finally {
      await listener.stop();
    }
  });

  test("admission refuses exactly past the job cap, with SQLite's error; enqueueMany returns it per job", async () => {
    const capped = keyOf("key_cap", { maxJobs: 2 });
    const line = (extra: Partial<NewJob> = {}) => job({ model: "m", owner: capped, ...extra });
    const refusal = {
      error: "KeyLimitError",
      message: 'job cap reached: key "cap" may have 2 jobs queued or running (max_jobs); try again when one ends',
      status: 429,
      headers: { "retry-after": "5" },
    };
    const many = [line({ idempotencyKey: "first" }), line(), line()];
    const [pgMany, liteMany] = [await pg.enqueueMany(many, 1000), lite.enqueueMany(many, 1000)];
    expect(pgMany.map(outcome)).toEqual(liteMany.map(outcome));
    expect(pgMany.map(outcome)).toEqual(["ok", "ok", refusal]);
    expect(pgMany[2]).toBeInstanceOf(KeyLimitError);
    expect(await bothEnqueue(line())).toEqual(refusal);
    // A known idempotency key answers with its job before any limit; a full queue refuses first.
    expect(await bothEnqueue(line({ idempotencyKey: "first" }))).toEqual("existing");
    expect(await bothEnqueue(line(), 2)).toMatchObject({ error: "QueueFullError" });
    await expect(pg.enqueue(line(), 2)).rejects.toBeInstanceOf(QueueFullError);
    // Another key, or none, is not held by this one's cap.
    expect(await bothEnqueue(job({ owner: keyOf("key_free", { maxJobs: 1 }) }))).toEqual("ok");
    expect(await bothEnqueue(job())).toEqual("ok");
    // Running counts as much as queued; an end, done or canceled, gives a place back.
    const fifo: ClaimPolicy = {
      schedule: "fifo",
      residentKeys: [],
      maxWaitMs: HOUR,
      target: GPU,
      eligible: (k) => k === "m:latest",
    };
    const claimed = (await pg.claimNextJob(fifo, fences[GPU]!))!;
    const liteClaimed = lite.claimNextJob(fifo)!;
    expect(await bothEnqueue(line())).toEqual(refusal);
    await pg.finishJob(claimed.id, fences[GPU]!, "{}");
    lite.finishJob(liteClaimed.id, "{}", []);
    expect(await bothEnqueue(line())).toEqual("ok");
    expect(await bothEnqueue(line())).toEqual(refusal);
    const [pgQueued] = await sql`SELECT id FROM jobs WHERE key_id = 'key_cap' AND state = 'queued' ORDER BY id LIMIT 1`;
    await pg.cancelJob(pgQueued.id);
    lite.cancelJob(
      db.query<{ id: string }, []>(`SELECT id FROM jobs WHERE key_id = 'key_cap' AND state = 'queued' ORDER BY id LIMIT 1`).get()!
        .id,
    );
    expect(await bothEnqueue(line())).toEqual("ok");
    expect(await bothEnqueue(line())).toEqual(refusal);
  });

  test("admission refuses exactly when the day's tokens reach the quota, with SQLite's error; the next UTC day starts over", async () => {
    const twin = await add({ owner: keyOf("key_q") });
    await claim(twin, GPU, 500);
    const at = (await finish(twin, usage(30, 70))).finishedAt!;
    const quota = (dailyTokens: number, when = at, maxJobs: number | null = null) =>
      job({ owner: keyOf("key_q", { dailyTokens, maxJobs, at: when }) });
    const refusal = (dailyTokens: number, when: number) => ({
      error: "KeyLimitError",
      message: `daily token quota reached: key "q" used 100 of its ${dailyTokens} tokens (daily_tokens) today; it resets at ${new Date(nextUtcMidnight(when)).toISOString()}`,
      status: 429,
      headers: { "retry-after": String(Math.max(1, Math.ceil((nextUtcMidnight(when) - when) / 1000))) },
    });
    expect(await bothEnqueue(quota(101))).toEqual("ok");
    expect(await bothEnqueue(quota(100))).toEqual(refusal(100, at));
    expect(await bothEnqueue(quota(50))).toEqual(refusal(50, at));
    // The day's last millisecond is still the day (Retry-After at least 1 s); the next day and the one before used nothing.
    const lastMs = nextUtcMidnight(at) - 1;
    expect(await bothEnqueue(quota(100, lastMs))).toEqual({ ...refusal(100, lastMs), headers: { "retry-after": "1" } });
    expect(await bothEnqueue(quota(100, nextUtcMidnight(at)))).toEqual("ok");
    expect(await bothEnqueue(quota(100, at - DAY))).toEqual("ok");
    // Over both limits (3 of its jobs wait, cap 1): the quota's refusal, checked first; under the quota, the cap's.
    expect(await bothEnqueue(quota(100, at, 1))).toEqual(refusal(100, at));
    expect(await bothEnqueue(quota(1_000, at, 1))).toMatchObject({
      error: "KeyLimitError",
      message: expect.stringContaining("job cap reached"),
    });
    expect(await bothEnqueue(quota(1_000, at, 4))).toEqual("ok");
    const { pgRows, liteRows } = await usageRows();
    expect(pgRows).toEqual(liteRows);
  });

  test("a capped key's enqueues racing on two nodes never pass the cap (its admissions are serialized)", async () => {
    const other = await openPg(url, { poolSize: 4 });
    open.push(other);
    const nodes = [pg, new PgJobStore(other)];
    const owner = keyOf("key_race", { maxJobs: 5 });
    const outcomes = await Promise.all(
      Array.from({ length: 24 }, (_, i) => nodes[i % 2]!.enqueueMany([job({ model: "m", owner }), job({ model: "n" })], 1000)),
    );
    const mine = outcomes.map(([first]) => first!);
    expect(mine.filter((o) => !(o instanceof Error)).length).toBe(5);
    expect(mine.filter((o) => o instanceof KeyLimitError).length).toBe(19);
    expect(outcomes.every(([, anonymous]) => !(anonymous instanceof Error))).toBe(true);
    expect((await sql`SELECT count(*)::int AS n FROM jobs WHERE key_id = 'key_race'`)[0].n).toBe(5);
  });
});
