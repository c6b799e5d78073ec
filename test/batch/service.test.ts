// The batch service on the HTTP thread, without a worker: validation (resumed after a restart), the
// model check (skipped while Ollama is unreachable), cancel while validating, and expiry.
import { afterEach, beforeEach, expect, test } from "bun:test";
import type { Database } from "bun:sqlite";
import { join } from "node:path";
import { FileStore } from "../../src/batch/files";
import { BatchService } from "../../src/batch/service";
import { BatchStore } from "../../src/batch/store";
import { JobService } from "../../src/job-service";
import { createLogger } from "../../src/log";
import type { TargetInventory } from "../../src/ollama/targets";
import { openDatabase } from "../../src/queue/db";
import type { JobStore } from "../../src/queue/store";
import { type JobTables, openJobTables } from "../../src/tables";
import type { JobLink } from "../../src/worker/job-events";
import { tempDir, until } from "../harness";

let dir: ReturnType<typeof tempDir>;
let db: Database;
let store: JobStore;
let tables: JobTables;
let files: FileStore;
let batches: BatchStore;
let service: BatchService | undefined;
const inventory = {
  degraded: false,
  knows: async (model: string) => model !== "ghost",
  get snapshot() {
    return { degraded: this.degraded };
  },
};

beforeEach(() => {
  dir = tempDir();
  db = openDatabase(join(dir.path, "q.db"));
  tables = openJobTables(db);
  store = tables.store;
  files = new FileStore(db);
  batches = new BatchStore(db, files, tables.batchLedger);
  inventory.degraded = false;
});
afterEach(() => {
  service?.stop();
  db.close();
  dir.cleanup();
});

const log = createLogger("error", "test");
const link: JobLink = {
  subscribe: () => () => {},
  subscribeAll: () => () => {},
  jobEnded: () => {},
  wake: () => {},
  cancel: () => {},
  clientGone: () => {},
};

function startService(windowMs = 60_000): BatchService {
  const jobs = new JobService(
    store,
    tables.deliveries,
    link,
    inventory as unknown as TargetInventory,
    { maxAttempts: 3, maxQueue: 10, schedule: "drain" },
    log,
  );
  service = new BatchService(
    batches,
    files,
    jobs,
    { batchPriority: -1, batchWindowMs: windowMs, maxAttempts: 3, maxBodyBytes: 1 << 20 },
    log,
  );
  service.start();
  return service;
}

function upload(models: string[]): string {
  const file = files.beginUpload("batch", "in.jsonl");
  const text = models
    .map((model, i) =>
      JSON.stringify({
        custom_id: `r${i}`,
        method: "POST",
        url: "/v1/chat/completions",
        body: { model, messages: [{ role: "user", content: "hi" }] },
      }),
    )
    .join("\n");
  files.append(file.id, Buffer.from(text));
  return files.finishUpload(file.id, "batch").id;
}

const request = (inputFileId: string) => ({
  input_file_id: inputFileId,
  endpoint: "/v1/chat/completions",
  completion_window: "24h",
});

test("a batch left validating by a crash is validated at the next start, and queued once", async () => {
  const input = upload(["llama3.2", "qwen3"]);
  const batch = batches.create({
    endpoint: "/v1/chat/completions",
    inputFileId: input,
    completionWindow: "24h",
    metadata: null,
    priority: -1,
    maxAttempts: 3,
    expiresAt: Date.now() + 60_000,
  });
  await startService().settled();
  expect(batches.get(batch.id)!.status).toBe("in_progress");
  expect(store.queuedCount()).toBe(2);
  expect(batches.admitSlice(batch.id, [], 0, true)).toBe(false);
  expect(store.queuedCount()).toBe(2);
});

test("an unknown model fails its lines, unless Ollama is unreachable: then they are queued to fail on their own", async () => {
  const svc = startService();
  const first = svc.create(request(upload(["llama3.2", "ghost"])));
  await svc.settled();
  expect(batches.get(first.id)).toMatchObject({ status: "in_progress", total: 2, failed: 1 });
  inventory.degraded = true;
  const second = svc.create(request(upload(["llama3.2", "ghost"])));
  await svc.settled();
  expect(batches.get(second.id)).toMatchObject({ status: "in_progress", total: 2, failed: 0 });
});

test("create refuses what OpenAI refuses, with the allowed values named", () => {
  const svc = startService();
  const input = upload(["llama3.2"]);
  expect(() => svc.create({ ...request(input), endpoint: "/v1/moderations" })).toThrow(/endpoint must be one of/);
  expect(() => svc.create({ ...request(input), completion_window: "1h" })).toThrow('completion_window must be "24h"');
  expect(() => svc.create(request("file-nope"))).toThrow("No such File object: file-nope");
});

test("cancelling a batch still validating ends it cancelled with nothing queued", async () => {
  const svc = startService();
  const batch = svc.create(request(upload(["llama3.2"])));
  expect(svc.cancel(batch.id).status).toBe("cancelled");
  await svc.settled();
  expect(batches.get(batch.id)!.status).toBe("cancelled");
  expect(store.queuedCount()).toBe(0);
});

test("a running batch past its window expires: its queued lines end batch_expired, and so does the batch", async () => {
  const svc = startService(50);
  const batch = svc.create(request(upload(["llama3.2", "qwen3", "mistral"])));
  await until(() => batches.get(batch.id)!.status === "expired", 5000, "expiry");
  expect(batches.get(batch.id)).toMatchObject({ total: 3, completed: 0, canceled: 3 });
  const errors = [...files.lines(batch.errorFileId)].map((line) => JSON.parse(line.text).error.code);
  expect(errors).toEqual(["batch_expired", "batch_expired", "batch_expired"]);
});

test("a big batch is queued in slices while it stays validating; a crash between slices loses and repeats no line", async () => {
  const lines = 4000;
  const models = Array.from({ length: lines }, (_, i) => (i % 10 === 9 ? "ghost" : "llama3.2"));
  const created = startService().create(request(upload(models)));
  // Between two slices the thread is free: part of the batch is queued, the rest not yet, still validating.
  let seen: ReturnType<typeof batches.get> = null;
  await until(() => {
    seen = batches.get(created.id);
    return seen!.admittedThrough > 0;
  }, 30_000);
  expect(seen!.status).toBe("validating");
  expect(seen!.admittedThrough).toBeLessThan(lines);
  // The process dies here: the database goes away under the admission, which stops at its next slice.
  service!.stop();
  db.close();
  await service!.settled();
  db = openDatabase(join(dir.path, "q.db"));
  tables = openJobTables(db);
  store = tables.store;
  files = new FileStore(db);
  batches = new BatchStore(db, files, tables.batchLedger);
  await startService().settled();
  const batch = batches.get(created.id)!;
  expect(batch).toMatchObject({ status: "in_progress", total: lines, failed: lines / 10, admittedThrough: lines });
  const queued = db
    .query<{ n: number; ids: number }, []>("SELECT count(*) AS n, count(DISTINCT custom_id) AS ids FROM batch_requests")
    .get()!;
  expect(queued).toEqual({ n: lines - lines / 10, ids: lines - lines / 10 });
  const errors = [...files.lines(batch.errorFileId)].map((line) => JSON.parse(line.text).custom_id);
  expect(new Set(errors).size).toBe(lines / 10);
  expect(errors.length).toBe(lines / 10);
});

test("cancelling a batch mid-admission cancels what was queued and queues no more", async () => {
  const svc = startService();
  const created = svc.create(request(upload(Array.from({ length: 4000 }, () => "llama3.2"))));
  await until(() => batches.get(created.id)!.admittedThrough > 0, 30_000);
  const cancelled = svc.cancel(created.id);
  await svc.settled();
  const batch = batches.get(created.id)!;
  expect(cancelled.status === "cancelling" || cancelled.status === "cancelled").toBe(true);
  expect(batch.status).toBe("cancelled");
  expect(batch.total).toBe(batch.admittedThrough);
  expect(batch.total).toBeLessThan(4000);
  expect(batch.canceled).toBe(batch.total);
  expect(store.queuedCount()).toBe(0);
});
