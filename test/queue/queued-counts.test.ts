// The queue's counts (queued_counts, kept by triggers) and positions against a brute-force recount,
// over random sequences of every state change either thread makes.
import { afterAll, beforeAll, expect, test } from "bun:test";
import type { Database } from "bun:sqlite";
import { join } from "node:path";
import fc from "fast-check";
import { openDatabase } from "../../src/queue/db";
import { JobStore } from "../../src/queue/store";
import { tempDir } from "../harness";

let dir: ReturnType<typeof tempDir>;
let db: Database;
let store: JobStore;
beforeAll(() => {
  dir = tempDir();
  db = openDatabase(join(dir.path, "q.db"));
  store = new JobStore(db);
});
afterAll(() => {
  db.close();
  dir.cleanup();
});

type Op =
  | { op: "enqueue"; model: string; priority: number; later: number }
  | { op: "claim" }
  | { op: "finish" | "fail" | "requeue"; pick: number }
  | { op: "cancel"; pick: number }
  | { op: "prune" };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({
      op: fc.constant("enqueue" as const),
      model: fc.constantFrom("a", "b", "c"),
      priority: fc.integer({ min: -2, max: 2 }),
      // Up to 100 ms later than the last: ids spread over several 32 ms slots (queued_slots).
      later: fc.integer({ min: 0, max: 100 }),
    }),
  },
  { weight: 2, arbitrary: fc.record({ op: fc.constant("claim" as const) }) },
  {
    weight: 2,
    arbitrary: fc.record({ op: fc.constantFrom("finish" as const, "fail" as const, "requeue" as const), pick: fc.nat() }),
  },
  { weight: 2, arbitrary: fc.record({ op: fc.constant("cancel" as const), pick: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("prune" as const) }) },
);

let clock = Date.now();

function apply(op: Op): void {
  const all = db.query<{ id: string; state: string }, []>("SELECT id, state FROM jobs ORDER BY id").all();
  const running = all.filter((j) => j.state === "loading" || j.state === "working");
  switch (op.op) {
    case "enqueue":
      store.enqueue(
        {
          type: "chat",
          model: op.model,
          modelKey: op.model,
          request: "{}",
          source: "jobs",
          priority: op.priority,
          maxAttempts: 3,
        },
        1e9,
        (clock += op.later),
      );
      return;
    case "claim":
      store.claimNextJob({ schedule: "drain", residentKeys: ["b"], maxWaitMs: 60_000 }, clock);
      return;
    case "finish":
    case "fail":
    case "requeue": {
      const job = running[op.pick % Math.max(1, running.length)];
      if (!job) return;
      if (op.op === "finish") store.finishJob(job.id, "{}", []);
      else if (op.op === "fail") store.failJob(job.id, "boom", 500);
      else store.requeueJob(job.id, clock, "again", 503);
      return;
    }
    case "cancel": {
      const job = all[op.pick % Math.max(1, all.length)];
      if (job) store.cancelJob(job.id);
      return;
    }
    case "prune":
      store.pruneFinishedJobs(Number.MAX_SAFE_INTEGER);
      return;
  }
}

test("counts and positions match a recount after any sequence of enqueues, claims, ends, re-queues, cancels and prunes", () => {
  fc.assert(
    fc.property(fc.array(opArb, { maxLength: 60 }), (ops) => {
      db.run("DELETE FROM jobs");
      for (const op of ops) apply(op);
      const queued = db
        .query<{ id: string; model: string; priority: number }, []>(
          "SELECT id, model, priority FROM jobs WHERE state = 'queued' ORDER BY priority DESC, id",
        )
        .all();
      expect(store.queuedCount()).toBe(queued.length);
      const byModel = new Map<string, number>();
      for (const j of queued) byModel.set(j.model, (byModel.get(j.model) ?? 0) + 1);
      expect(store.queuedCountByModel()).toEqual(
        [...byModel].sort(([a], [b]) => a.localeCompare(b)).map(([model, n]) => ({ model, n })),
      );
      queued.forEach((j, i) => expect(store.queuePosition(store.getJob(j.id)!)).toBe(i + 1));
    }),
    { seed: 11, numRuns: 150 },
  );
});

test("a position deep in a long queue is exact, counted from the nearer end", () => {
  db.run("DELETE FROM jobs");
  const ids: string[] = [];
  db.transaction(() => {
    for (let i = 0; i < 5000; i++) {
      ids.push(
        store.enqueue({ type: "chat", model: "m", modelKey: "m", request: "{}", source: "jobs", maxAttempts: 3 }, 1e9).job.id,
      );
    }
  })();
  store.enqueue({ type: "chat", model: "m", modelKey: "m", request: "{}", source: "jobs", priority: 5, maxAttempts: 3 }, 1e9);
  for (const i of [0, 1, 255, 256, 1023, 1024, 2500, 4000, 4999]) {
    expect(store.queuePosition(store.getJob(ids[i]!)!)).toBe(i + 2);
  }
});
