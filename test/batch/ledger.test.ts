// The batch side of a job's end, against a real database: one line per line, counted once, the batch
// ended by its last line, and batch lines never making interactive requests 503.
import { afterEach, beforeEach, expect, test } from "bun:test";
import type { Database } from "bun:sqlite";
import { join } from "node:path";
import { FileStore } from "../../src/batch/files";
import { type AdmittedLine, BatchStore } from "../../src/batch/store";
import { openDatabase } from "../../src/queue/db";
import type { JobStore } from "../../src/queue/store";
import { openJobTables } from "../../src/tables";
import { tempDir } from "../harness";

let dir: ReturnType<typeof tempDir>;
let db: Database;
let store: JobStore;
let files: FileStore;
let batches: BatchStore;

beforeEach(() => {
  dir = tempDir();
  db = openDatabase(join(dir.path, "q.db"));
  const tables = openJobTables(db);
  store = tables.store;
  files = new FileStore(db);
  batches = new BatchStore(db, files, tables.batchLedger);
});
afterEach(() => {
  db.close();
  dir.cleanup();
});

const job = (customId: string): AdmittedLine & { kind: "job" } => ({
  number: 0,
  kind: "job",
  customId,
  type: "openai.chat",
  model: "llama3.2",
  modelKey: "llama3.2:latest",
  request: JSON.stringify({ model: "llama3.2", messages: [], stream: false }),
});

function newBatch(lines: AdmittedLine[]) {
  const input = files.beginUpload("batch", "in.jsonl");
  files.finishUpload(input.id, "batch");
  const batch = batches.create({
    endpoint: "/v1/chat/completions",
    inputFileId: input.id,
    completionWindow: "24h",
    metadata: null,
    priority: -1,
    maxAttempts: 3,
    expiresAt: Date.now() + 60_000,
  });
  const numbered = lines.map((line, i) => ({ ...line, number: i + 1 }));
  expect(batches.admitSlice(batch.id, numbered, numbered.length, true)).toBe(true);
  return batch;
}

const claim = () => store.claimNextJob({ schedule: "fifo", residentKeys: [], maxWaitMs: 60_000 })!;
const lines = (fileId: string) => [...files.lines(fileId)].map((line) => JSON.parse(line.text));

test("each line's end writes one output or error line and counts it; the last one completes the batch", () => {
  const batch = newBatch([
    job("a"),
    job("b"),
    { number: 0, kind: "error", customId: "c", status: 404, message: "model 'x' not found" },
  ]);
  expect(batches.get(batch.id)).toMatchObject({ status: "in_progress", total: 3, failed: 1, completed: 0 });
  const first = claim();
  expect(first.source).toBe("batch");
  expect(first.priority).toBe(-1);
  store.finishJob(first.id, JSON.stringify({ object: "chat.completion", n: 1 }), []);
  // A second end of the same job changes nothing: the line is recorded once.
  store.finishJob(first.id, JSON.stringify({ object: "chat.completion", n: 2 }), []);
  store.failJob(first.id, "late", 500);
  expect(batches.get(batch.id)).toMatchObject({ status: "in_progress", completed: 1 });
  const second = claim();
  store.failJob(second.id, "ollama said no", 500);
  const ended = batches.get(batch.id)!;
  expect(ended).toMatchObject({ status: "completed", total: 3, completed: 1, failed: 2 });
  expect(ended.completedAt).toBeNumber();
  expect(lines(batch.outputFileId)).toEqual([
    {
      id: `batch_req_${first.id}`,
      custom_id: "a",
      response: { status_code: 200, request_id: first.id, body: { object: "chat.completion", n: 1 } },
      error: null,
    },
  ]);
  const errors = lines(batch.errorFileId);
  expect(errors.map((e) => [e.custom_id, e.response.status_code])).toEqual([
    ["c", 404],
    ["b", 500],
  ]);
  expect(files.get(batch.outputFileId)!.bytes).toBe(
    Buffer.byteLength([...files.chunks(batch.outputFileId)].map((c) => Buffer.from(c).toString()).join("")),
  );
});

test("a canceled line ends in the error file as batch_cancelled, and the batch as cancelled", () => {
  const batch = newBatch([job("a"), job("b")]);
  const running = claim();
  batches.markEnding(batch.id, "cancel");
  for (const id of batches.queuedJobIds(batch.id)) store.cancelJob(id, { error: "cancelled", status: 499 });
  expect(batches.get(batch.id)!.status).toBe("cancelling");
  store.finishJob(running.id, "{}", []);
  expect(batches.get(batch.id)).toMatchObject({ status: "cancelled", completed: 1, failed: 0, canceled: 1 });
  expect(lines(batch.errorFileId)[0].error.code).toBe("batch_cancelled");
});

test("queued batch lines do not count against FOREMAN_MAX_QUEUE", () => {
  newBatch([job("a"), job("b"), job("c")]);
  const { created } = store.enqueue(
    { type: "chat", model: "llama3.2", modelKey: "llama3.2:latest", request: "{}", source: "ollama", maxAttempts: 1 },
    1,
  );
  expect(created).toBe(true);
  expect(store.queuedCount()).toBe(4);
});

test("batch lines are never promoted by the starvation guard: an old batch still drains by the loaded model", () => {
  const old = Date.now() - 10 * 60_000;
  const batch = batches.create({
    endpoint: "/v1/chat/completions",
    inputFileId: "file-x",
    completionWindow: "24h",
    metadata: null,
    priority: -1,
    maxAttempts: 3,
    expiresAt: Date.now() + 60_000,
  });
  const line = (customId: string, model: string): AdmittedLine => ({ ...job(customId), model, modelKey: `${model}:latest` });
  batches.admitSlice(
    batch.id,
    [line("a", "qwen3"), line("b", "llama3.2")].map((l, i) => ({ ...l, number: i + 1 })),
    2,
    true,
    old,
  );
  const picked = store.claimNextJob({ schedule: "drain", residentKeys: ["llama3.2:latest"], maxWaitMs: 60_000 })!;
  expect(picked.model).toBe("llama3.2");
  const plan = db
    .query<{ detail: string }, []>(
      `EXPLAIN QUERY PLAN SELECT id FROM jobs WHERE state = 'queued' AND priority = -1 AND created_at < 0 AND run_after <= 0
       AND source != 'batch' ORDER BY created_at, id LIMIT 1`,
    )
    .all();
  expect(plan.map((row) => row.detail).join(" ")).toContain("jobs_overdue");
});
