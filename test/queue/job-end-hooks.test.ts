// Job-end hooks: the other tables' owners (webhook deliveries, the batch ledger) write at a job's end
// through hooks registered on the store, inside the transaction that ends it. A hook that throws rolls
// the whole end back, theirs included: the end is still one transaction.
import { afterEach, beforeEach, expect, test } from "bun:test";
import type { Database } from "bun:sqlite";
import { join } from "node:path";
import { FileStore } from "../../src/batch/files";
import { BatchStore } from "../../src/batch/store";
import { openDatabase } from "../../src/queue/db";
import type { JobRow } from "../../src/queue/job-row";
import type { ClaimPolicy, JobStore } from "../../src/queue/store";
import { type JobTables, openJobTables } from "../../src/tables";
import { tempDir } from "../harness";

let dir: ReturnType<typeof tempDir>;
let db: Database;
let tables: JobTables;
let store: JobStore;
let files: FileStore;
let batches: BatchStore;
/** Every end the test's own hook saw, as (id, state, the row's state read inside the hook). */
let seen: Array<[string, string, string | undefined]>;
/** When set, the test's hook throws after the owners' hooks have written. */
let failing: boolean;

beforeEach(() => {
  dir = tempDir();
  db = openDatabase(join(dir.path, "q.db"));
  tables = openJobTables(db);
  store = tables.store;
  files = new FileStore(db);
  batches = new BatchStore(db, files, tables.batchLedger);
  seen = [];
  failing = false;
  const stateOf = db.query<{ state: string }, [string]>("SELECT state FROM jobs WHERE id = ?");
  // Registered after openJobTables' own: it runs once the delivery and the batch line are written.
  store.onJobEnd((job: JobRow) => {
    seen.push([job.id, job.state, stateOf.get(job.id)?.state]);
    if (failing) throw new Error("hook failed");
  });
});
afterEach(() => {
  db.close();
  dir.cleanup();
});

const T0 = 1_800_000_000_000;
const fifo: ClaimPolicy = { schedule: "fifo", residentKeys: [], maxWaitMs: 60_000 };
const count = (sql: string, id: string) => db.query<{ n: number }, [string]>(sql).get(id)!.n;
const deliveries = (jobId: string) => count("SELECT count(*) AS n FROM webhook_deliveries WHERE job_id = ?", jobId);

function add(at: number, extra: { source?: "jobs" | "ollama"; webhook?: { url: string } } = {}) {
  return store.enqueue(
    { type: "chat", model: "a", modelKey: "a:latest", request: "{}", source: "jobs", maxAttempts: 3, ...extra },
    1000,
    at,
  ).job;
}

function oneLineBatch() {
  const input = files.beginUpload("batch", "in.jsonl");
  files.finishUpload(input.id, "batch");
  const batch = batches.create({
    endpoint: "/v1/chat/completions",
    inputFileId: input.id,
    completionWindow: "24h",
    metadata: null,
    priority: 0,
    maxAttempts: 3,
    expiresAt: Date.now() + 60_000,
  });
  const line = {
    number: 1,
    kind: "job" as const,
    customId: "only",
    type: "openai.chat" as const,
    model: "a",
    modelKey: "a:latest",
    request: JSON.stringify({ model: "a", messages: [], stream: false }),
  };
  expect(batches.admitSlice(batch.id, [line], 1, true)).toBe(true);
  return batch;
}

test("a hook that throws rolls the job's end back: no state change, artifact, delivery, learned cost or batch line", () => {
  const job = add(T0, { webhook: { url: "http://127.0.0.1:9/hook" } });
  const batch = oneLineBatch();
  const claimed = [store.claimNextJob(fifo, T0 + 1)!, store.claimNextJob(fifo, T0 + 1)!];
  const line = claimed.find((j) => j.source === "batch")!;
  expect(claimed.map((j) => j.id).sort()).toEqual([job.id, line.id].sort());
  store.markWorking(job.id);
  failing = true;
  const artifact = { name: "result.json", contentType: "application/json", data: "{}" };
  const usage = { promptTokens: 1, outputTokens: 2, loadMs: 100, evalMs: 50 };
  expect(() => store.finishJob(job.id, "{}", [artifact], usage, T0 + 500)).toThrow("hook failed");
  expect(() => store.finishJob(line.id, '{"n":1}', [], usage, T0 + 500)).toThrow("hook failed");
  // The hook ran inside the transaction: it read the row already done, and the owners had written.
  expect(seen).toEqual([
    [job.id, "done", "done"],
    [line.id, "done", "done"],
  ]);
  expect(store.getJobHead(job.id)).toMatchObject({ state: "working", finishedAt: null, outputTokens: null });
  expect(store.getJobHead(line.id)).toMatchObject({ state: "loading", finishedAt: null });
  expect(store.artifacts.list(job.id)).toEqual([]);
  expect(deliveries(job.id)).toBe(0);
  expect(store.costs.get("a:latest")).toBeNull();
  expect(batches.get(batch.id)).toMatchObject({ status: "in_progress", completed: 0 });
  expect([...files.lines(batch.outputFileId)]).toEqual([]);
  expect(count("SELECT count(*) AS n FROM batch_requests WHERE job_id = ?", line.id)).toBe(1);

  // The same ends, the hook well again: everything lands once.
  failing = false;
  expect(store.finishJob(job.id, "{}", [artifact], usage, T0 + 600)!.state).toBe("done");
  expect(store.finishJob(line.id, '{"n":1}', [], usage, T0 + 600)!.state).toBe("done");
  expect(store.artifacts.list(job.id).map((a) => a.name)).toEqual(["result.json"]);
  expect(deliveries(job.id)).toBe(1);
  expect(store.costs.get("a:latest")).toMatchObject({ jobs: 2 });
  expect(batches.get(batch.id)).toMatchObject({ status: "completed", completed: 1 });
  expect([...files.lines(batch.outputFileId)].map((l) => JSON.parse(l.text).custom_id)).toEqual(["only"]);
});

test("a failing hook rolls back the whole of cancelJobs and of crash recovery, each one transaction", () => {
  const a = add(T0, { webhook: { url: "http://127.0.0.1:9/a" } });
  const b = add(T0 + 1, { webhook: { url: "http://127.0.0.1:9/b" } });
  failing = true;
  expect(() => store.cancelJobs([a.id, b.id], { error: "gone", status: 499 }, T0 + 2)).toThrow("hook failed");
  // The first end's hook threw: the second was never reached, and nothing of the first stayed.
  expect(seen.map(([id]) => id)).toEqual([a.id]);
  expect([store.getJobHead(a.id)!.state, store.getJobHead(b.id)!.state]).toEqual(["queued", "queued"]);
  expect(deliveries(a.id)).toBe(0);

  // A client's request left queued by a dead process: recovery cancels it, through the hooks too.
  const client = add(T0 + 3, { source: "ollama", webhook: { url: "http://127.0.0.1:9/c" } });
  store.claimNextJob(fifo, T0 + 4);
  seen = [];
  expect(() => store.recoverInterruptedJobs(T0 + 5)).toThrow("hook failed");
  expect(seen.map(([id, state]) => [id, state])).toEqual([[client.id, "canceled"]]);
  expect(store.getJobHead(client.id)!.state).toBe("queued");
  // The job the claim took is still running, as if recovery had never begun.
  expect(store.getJobHead(a.id)).toMatchObject({ state: "loading", attempts: 1 });
});

test("every way a job ends runs the hooks once each, in the order they were registered", () => {
  const order: string[] = [];
  const other = openJobTables(db).store;
  other.onJobEnd(() => order.push("first"));
  other.onJobEnd(() => order.push("second"));
  const done = add(T0);
  const failed = add(T0 + 1);
  const canceled = add(T0 + 2);
  store.claimNextJob(fifo, T0 + 3);
  store.finishJob(done.id, "{}", [], undefined, T0 + 4);
  store.claimNextJob(fifo, T0 + 5);
  store.failJob(failed.id, "upstream said no", 500, [], T0 + 6);
  store.cancelJob(canceled.id, { error: "gone", status: 499 }, T0 + 7);
  // Ended already: no second end, no second hook.
  expect(store.finishJob(done.id, "{}", [])).toBeNull();
  expect(store.cancelJob(failed.id)).toBeNull();
  expect(seen).toEqual([
    [done.id, "done", "done"],
    [failed.id, "failed", "failed"],
    [canceled.id, "canceled", "canceled"],
  ]);
  // Hooks belong to the store they were registered on: another store over the database runs its own.
  expect(order).toEqual([]);
  const last = add(T0 + 8);
  other.cancelJob(last.id, { error: "gone", status: 499 }, T0 + 9);
  expect(order).toEqual(["first", "second"]);
  expect(seen).toHaveLength(3);
});
