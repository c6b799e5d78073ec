import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { Database } from "bun:sqlite";
import init from "../../src/queue/migrations/001_init.sql" with { type: "text" };
import { QueueFullError } from "../../src/errors";
import { openDatabase } from "../../src/queue/db";
import { type ClaimPolicy, JobStore, type NewJob } from "../../src/queue/store";
import { openJobTables } from "../../src/tables";
import { tempDir } from "../harness";

let dir: ReturnType<typeof tempDir>;
let db: Database;
let store: JobStore;

beforeEach(() => {
  dir = tempDir();
  db = openDatabase(join(dir.path, "nested", "folder", "q.db"));
  store = new JobStore(db);
});
afterEach(() => {
  db.close();
  dir.cleanup();
});

const T0 = 1_800_000_000_000;
const MINUTE = 60_000;
const drain = (residentKeys: string[] = [], maxWaitMs = 2 * MINUTE): ClaimPolicy => ({
  schedule: "drain",
  residentKeys,
  maxWaitMs,
});
const fifo: ClaimPolicy = { schedule: "fifo", residentKeys: [], maxWaitMs: 2 * MINUTE };

function add(model: string, at: number, extra: Partial<NewJob> = {}) {
  return store.enqueue(
    { type: "chat", model, modelKey: `${model}:latest`, request: "{}", source: "jobs", maxAttempts: 3, ...extra },
    1000,
    at,
  ).job;
}

describe("the database", () => {
  test("is WAL with foreign keys and a schema version; reopening does not migrate twice", () => {
    expect(db.query<{ journal_mode: string }, []>("PRAGMA journal_mode").get()!.journal_mode).toBe("wal");
    expect(db.query<{ foreign_keys: number }, []>("PRAGMA foreign_keys").get()!.foreign_keys).toBe(1);
    expect(db.query<{ synchronous: number }, []>("PRAGMA synchronous").get()!.synchronous).toBe(1);
    // Every migration file is registered and applied.
    const migrations = readdirSync(join(import.meta.dir, "../../src/queue/migrations")).filter((f) => f.endsWith(".sql"));
    expect(db.query<{ user_version: number }, []>("PRAGMA user_version").get()!.user_version).toBe(migrations.length);
    add("a", T0);
    const again = openDatabase(join(dir.path, "nested", "folder", "q.db"), { durability: "full" });
    expect(again.query<{ synchronous: number }, []>("PRAGMA synchronous").get()!.synchronous).toBe(2);
    expect(again.query<{ n: number }, []>("SELECT count(*) AS n FROM jobs").get()!.n).toBe(1);
    again.close();
  });

  test("a version-1 database keeps its jobs, artifacts and deliveries through the upgrade", () => {
    const path = join(dir.path, "v1.db");
    const old = new Database(path, { create: true });
    old.run(init);
    old.run("PRAGMA user_version = 1");
    old.run(
      `INSERT INTO jobs (id, type, model, model_key, request, source, state, max_attempts, run_after, created_at, finished_at, webhook_url)
       VALUES ('01J0000000000000000000000A', 'chat', 'm', 'm:latest', '{}', 'ollama', 'done', 3, 0, 0, 1, 'http://h/')`,
    );
    old.run(`INSERT INTO artifacts VALUES ('01J0000000000000000000000A', 'result.json', 'application/json', x'7B7D', 1)`);
    old.run(
      `INSERT INTO webhook_deliveries (id, job_id, url, payload, state, next_attempt_at, created_at)
       VALUES ('msg_1', '01J0000000000000000000000A', 'http://h/', '{}', 'pending', 1, 1)`,
    );
    old.close();
    const upgraded = openDatabase(path);
    const { store: store2, deliveries } = openJobTables(upgraded);
    expect(store2.getJob("01J0000000000000000000000A")?.state).toBe("done");
    expect(store2.artifacts.list("01J0000000000000000000000A").map((a) => a.name)).toEqual(["result.json"]);
    expect(deliveries.status("01J0000000000000000000000A")?.state).toBe("pending");
    // A type and source outside the first migration's CHECKs are accepted now.
    upgraded.run(
      `INSERT INTO jobs (id, type, model, model_key, request, source, state, max_attempts, run_after, created_at)
       VALUES ('01J0000000000000000000000B', 'openai.chat', 'm', 'm:latest', '{}', 'openai', 'queued', 3, 0, 0)`,
    );
    expect(upgraded.query("PRAGMA foreign_key_check").all()).toEqual([]);
    upgraded.close();
  });

  test("refuses a database from a newer foreman", () => {
    db.run("PRAGMA user_version = 99");
    expect(() => openDatabase(join(dir.path, "nested", "folder", "q.db"))).toThrow("newer");
  });
});

describe("claim order", () => {
  test("fifo: oldest first", () => {
    const a = add("a", T0);
    const b = add("b", T0 + 1);
    const c = add("a", T0 + 2);
    const order = [
      store.claimNextJob(fifo, T0 + 10)!.id,
      store.claimNextJob(fifo, T0 + 10)!.id,
      store.claimNextJob(fifo, T0 + 10)!.id,
    ];
    expect(order).toEqual([a.id, b.id, c.id]);
    expect(store.claimNextJob(fifo, T0 + 10)).toBeNull();
  });

  test("drain: the loaded model's jobs first, oldest first among them, then the oldest", () => {
    const a1 = add("a", T0);
    const b1 = add("b", T0 + 1);
    const a2 = add("a", T0 + 2);
    const b2 = add("b", T0 + 3);
    const now = T0 + 10;
    expect(store.claimNextJob(drain(["b:latest"]), now)!.id).toBe(b1.id);
    expect(store.claimNextJob(drain(["b:latest"]), now)!.id).toBe(b2.id);
    expect(store.claimNextJob(drain(["b:latest"]), now)!.id).toBe(a1.id);
    expect(store.claimNextJob(drain(["a:latest", "b:latest"]), now)!.id).toBe(a2.id);
    // A claim records whether the job's model had to be loaded: b's were resident, a1 swapped, a2 followed it.
    expect([b1, b2, a1, a2].map((job) => store.getJob(job.id)!.swapped)).toEqual([0, 0, 1, 0]);
  });

  test("drain: several resident models are tried in the order given", () => {
    const a = add("a", T0);
    const b = add("b", T0 + 1);
    const c = add("c", T0 + 2);
    expect(store.claimNextJob(drain(["c:latest", "b:latest"]), T0 + 10)!.id).toBe(c.id);
    expect(store.claimNextJob(drain(["c:latest", "b:latest"]), T0 + 10)!.id).toBe(b.id);
    expect(store.claimNextJob(drain(["c:latest", "b:latest"]), T0 + 10)!.id).toBe(a.id);
  });

  test("higher priority beats everything, including overdue jobs and the loaded model", () => {
    const old = add("a", T0);
    const urgent = add("b", T0 + 5 * MINUTE, { priority: 5 });
    expect(store.claimNextJob(drain(["a:latest"]), T0 + 5 * MINUTE)!.id).toBe(urgent.id);
    expect(store.claimNextJob(drain(["a:latest"]), T0 + 5 * MINUTE)!.id).toBe(old.id);
  });

  test("negative priorities run after the default", () => {
    const low = add("a", T0, { priority: -1 });
    const normal = add("a", T0 + 1);
    expect(store.claimNextJob(fifo, T0 + 2)!.id).toBe(normal.id);
    expect(store.claimNextJob(fifo, T0 + 2)!.id).toBe(low.id);
  });

  test("starvation guard: a job waiting longer than maxWait goes before the loaded model, oldest overdue first", () => {
    const lonelyB = add("b", T0);
    const lonelyC = add("c", T0 + 1);
    const a = add("a", T0 + 2 * MINUTE);
    // At exactly maxWait the B job is not yet overdue (it must have waited *longer*): the drain order holds.
    expect(store.claimNextJob(drain(["a:latest"]), T0 + 2 * MINUTE)!.id).toBe(a.id);
    add("a", T0 + 2 * MINUTE + 5);
    expect(store.claimNextJob(drain(["a:latest"]), T0 + 2 * MINUTE + 10)!.id).toBe(lonelyB.id);
    expect(store.claimNextJob(drain(["b:latest"]), T0 + 2 * MINUTE + 10)!.id).toBe(lonelyC.id);
  });

  test("ties: jobs created in the same millisecond keep their submission order", () => {
    const ids = Array.from({ length: 20 }, () => add("a", T0).id);
    const claimed = ids.map(() => store.claimNextJob(drain(["a:latest"]), T0 + 1)!.id);
    expect(claimed).toEqual(ids);
  });

  test("a job whose run_after is in the future waits; lower-priority ready work runs meanwhile", () => {
    const retry = add("a", T0, { priority: 1 });
    store.claimNextJob(fifo, T0);
    store.requeueJob(retry.id, T0 + 5000, "unreachable", 502);
    const ready = add("b", T0 + 1);
    expect(store.claimNextJob(fifo, T0 + 10)!.id).toBe(ready.id);
    expect(store.claimNextJob(fifo, T0 + 10)).toBeNull();
    expect(store.nextRunAfter()).toBe(T0 + 5000);
    const again = store.claimNextJob(fifo, T0 + 5000)!;
    expect(again.id).toBe(retry.id);
    expect(again.attempts).toBe(2);
  });

  test("a claim marks the job loading, stamps it and counts the attempt", () => {
    add("a", T0);
    const job = store.claimNextJob(fifo, T0 + 7)!;
    expect(job).toMatchObject({ state: "loading", startedAt: T0 + 7, attempts: 1 });
    expect(store.runningJob()!.id).toBe(job.id);
  });
});

describe("state changes", () => {
  test("done stores the result and artifacts; a later cancel is refused", () => {
    const job = add("a", T0);
    store.claimNextJob(fifo, T0);
    expect(store.markWorking(job.id)!.state).toBe("working");
    const done = store.finishJob(
      job.id,
      '{"done":true}',
      [{ name: "result.json", contentType: "application/json", data: '{"done":true}' }],
      { promptTokens: 7, outputTokens: 42, loadMs: 1.5, evalMs: 300 },
      T0 + 5,
    )!;
    expect(done).toMatchObject({ state: "done", finishedAt: T0 + 5, result: '{"done":true}' });
    expect(done).toMatchObject({ promptTokens: 7, outputTokens: 42, loadMs: 1.5, evalMs: 300 });
    // A state change does not read the request back (it can be megabytes); the row has it.
    expect(done.request).toBe("");
    expect(store.artifacts.list(job.id)).toEqual([
      { name: "result.json", contentType: "application/json", size: 13, createdAt: T0 + 5 },
    ]);
    expect(new TextDecoder().decode(store.artifacts.get(job.id, "result.json")!.data)).toBe('{"done":true}');
    expect(store.cancelJob(job.id)).toBeNull();
  });

  test("a canceled job cannot be finished by a worker that was still running it", () => {
    const job = add("a", T0);
    store.claimNextJob(fifo, T0);
    expect(store.cancelJob(job.id)!.state).toBe("canceled");
    expect(store.finishJob(job.id, "{}", [])).toBeNull();
    expect(store.failJob(job.id, "x", 500)).toBeNull();
    expect(store.getJob(job.id)!.state).toBe("canceled");
  });

  test("the queue refuses work past maxQueue with Ollama's 503", () => {
    store.enqueue({ type: "chat", model: "a", modelKey: "a", request: "{}", source: "jobs", maxAttempts: 1 }, 2);
    store.enqueue({ type: "chat", model: "a", modelKey: "a", request: "{}", source: "jobs", maxAttempts: 1 }, 2);
    expect(() =>
      store.enqueue({ type: "chat", model: "a", modelKey: "a", request: "{}", source: "jobs", maxAttempts: 1 }, 2),
    ).toThrow(QueueFullError);
    expect(store.queuedCount()).toBe(2);
  });

  test("an idempotency key returns the first job instead of a second", () => {
    const first = store.enqueue(
      { type: "chat", model: "a", modelKey: "a", request: "{}", source: "jobs", maxAttempts: 1, idempotencyKey: "k" },
      10,
    );
    const again = store.enqueue(
      { type: "chat", model: "a", modelKey: "a", request: "{}", source: "jobs", maxAttempts: 1, idempotencyKey: "k" },
      10,
    );
    expect(first.created).toBe(true);
    expect(again).toEqual({ job: first.job, created: false });
  });

  test("crash recovery re-queues interrupted jobs with the attempt counted, and fails those out of attempts", () => {
    const once = add("a", T0);
    const spent = add("b", T0 + 1, { maxAttempts: 1 });
    store.claimNextJob(fifo, T0 + 2);
    store.claimNextJob(fifo, T0 + 2);
    const { requeued, failed } = store.recoverInterruptedJobs(T0 + 3);
    expect(requeued.map((j) => [j.id, j.state, j.attempts])).toEqual([[once.id, "queued", 1]]);
    expect(failed.map((j) => [j.id, j.state, j.error])).toEqual([[spent.id, "failed", "interrupted 1 times"]]);
  });

  test("crash recovery cancels clients' own requests, running or queued, and keeps job API and batch jobs", () => {
    const client = add("a", T0, { source: "openai" });
    const job = add("a", T0 + 1);
    store.claimNextJob(fifo, T0 + 2);
    store.claimNextJob(fifo, T0 + 2);
    const waiting = add("a", T0 + 3, { source: "ollama" });
    const line = add("a", T0 + 4, { source: "batch" });
    const { requeued, failed, canceled } = store.recoverInterruptedJobs(T0 + 5);
    expect(requeued.map((j) => j.id)).toEqual([job.id]);
    expect(failed).toEqual([]);
    expect(canceled.map((j) => [j.id, j.state, j.error, j.errorStatus, j.finishedAt])).toEqual([
      [waiting.id, "canceled", "queued when foreman stopped; the client's connection closed with it", 499, T0 + 5],
      [client.id, "canceled", "interrupted by a restart; the client's connection closed with it", 499, T0 + 5],
    ]);
    expect(store.getJobHead(line.id)!.state).toBe("queued");
  });

  test("cancelJobs cancels many in one go, leaving out the unknown and the ended", () => {
    const a = add("a", T0);
    const b = add("a", T0 + 1);
    const ended = add("a", T0 + 2);
    store.cancelJob(ended.id);
    const canceled = store.cancelJobs([a.id, "nope", ended.id, b.id], { error: "gone", status: 499 }, T0 + 3);
    expect(canceled.map((j) => [j.id, j.state, j.error])).toEqual([
      [a.id, "canceled", "gone"],
      [b.id, "canceled", "gone"],
    ]);
    expect(store.jobState(a.id)).toBe("canceled");
    expect(store.jobState("nope")).toBeNull();
  });

  test("a shutdown re-queue refunds the attempt", () => {
    const job = add("a", T0);
    store.claimNextJob(fifo, T0);
    expect(store.requeueJob(job.id, T0, "shutdown", null, true)!.attempts).toBe(0);
  });

  test("pruning deletes jobs that ended before the cutoff, with their artifacts", () => {
    const old = add("a", T0);
    const recent = add("a", T0 + 1);
    const waiting = add("a", T0 + 2);
    store.claimNextJob(fifo, T0);
    store.finishJob(old.id, "{}", [{ name: "result.json", contentType: "application/json", data: "{}" }], undefined, T0 + 10);
    store.claimNextJob(fifo, T0);
    store.failJob(recent.id, "x", 500, [], T0 + 1000);
    expect(store.pruneFinishedJobs(T0 + 500)).toBe(1);
    expect(store.getJob(old.id)).toBeNull();
    expect(store.artifacts.list(old.id)).toEqual([]);
    expect(store.getJob(recent.id)).not.toBeNull();
    expect(store.getJob(waiting.id)!.state).toBe("queued");
  });

  test("queue position follows priority then age", () => {
    const a = add("a", T0);
    const b = add("a", T0 + 1);
    const urgent = add("a", T0 + 2, { priority: 3 });
    expect([store.queuePosition(urgent), store.queuePosition(a), store.queuePosition(b)]).toEqual([1, 2, 3]);
  });

  test("listing is newest first with a cursor and filters", () => {
    const ids = Array.from({ length: 5 }, (_, i) => add(i % 2 ? "b" : "a", T0 + i).id);
    const page1 = store.listJobs({ limit: 2 });
    expect(page1.map((j) => j.id)).toEqual([ids[4]!, ids[3]!]);
    const page2 = store.listJobs({ limit: 2, cursor: page1[1]!.id });
    expect(page2.map((j) => j.id)).toEqual([ids[2]!, ids[1]!]);
    expect(store.listJobs({ limit: 10, model: "b" }).map((j) => j.id)).toEqual([ids[3]!, ids[1]!]);
  });
});
