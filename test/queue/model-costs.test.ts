// Learned costs per model key, the queued counts per model key the triggers keep, and the cost-aware group choice.
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { join } from "node:path";
import type { Database } from "bun:sqlite";
import { openDatabase } from "../../src/queue/db";
import { expectedCosts, rankGroups } from "../../src/queue/model-costs";
import { estimatedStart, overdueRun, planQueue, plannedGroup } from "../../src/queue/start-estimate";
import { type ClaimPolicy, JobStore, type NewJob } from "../../src/queue/store";
import { tempDir } from "../harness";

let dir: ReturnType<typeof tempDir>;
let db: Database;
let store: JobStore;

beforeEach(() => {
  dir = tempDir();
  db = openDatabase(join(dir.path, "q.db"));
  store = new JobStore(db);
});
afterEach(() => {
  db.close();
  dir.cleanup();
});

const T0 = 1_800_000_000_000;
const MINUTE = 60_000;
const policy = (schedule: ClaimPolicy["schedule"], residentKeys: string[] = [], maxWaitMs = 2 * MINUTE): ClaimPolicy => ({
  schedule,
  residentKeys,
  maxWaitMs,
});

function add(model: string, at: number, extra: Partial<NewJob> = {}) {
  return store.enqueue(
    { type: "chat", model, modelKey: `${model}:latest`, request: "{}", source: "jobs", maxAttempts: 3, ...extra },
    1000,
    at,
  ).job;
}

/** Runs one job of `model` to done: claimed at `start` (as a swap unless resident), finished after `ms`. */
function run(model: string, start: number, ms: number, usage: { loadMs?: number; resident?: boolean } = {}) {
  add(model, start - 1);
  const job = store.claimNextJob(policy("fifo", usage.resident ? [`${model}:latest`] : []), start)!;
  expect(job.modelKey).toBe(`${model}:latest`);
  return store.finishJob(
    job.id,
    "{}",
    [],
    { promptTokens: 3, outputTokens: 10, loadMs: usage.loadMs ?? null, evalMs: usage.loadMs === undefined ? null : 50 },
    start + ms,
  )!;
}

describe("learned costs", () => {
  test("a native swap teaches load and warm run; warm jobs move the run time by a rolling average; a restart keeps them", () => {
    run("a", T0, 1100, { loadMs: 1000 });
    expect(store.costs.get("a:latest")).toMatchObject({ loadMs: 1000, runMs: 100, totalMs: 1100, jobs: 1, loads: 1 });
    // Warm: Ollama's small load_duration is not a load; 0.8 × 100 + 0.2 × (201 − 1) = 120.
    run("a", T0 + 2000, 201, { loadMs: 1, resident: true });
    expect(store.costs.get("a:latest")).toMatchObject({ loadMs: 1000, runMs: 120, jobs: 2, loads: 1 });
    db.close();
    db = openDatabase(join(dir.path, "q.db"));
    store = new JobStore(db);
    expect(store.costs.all().get("a:latest")).toMatchObject({ loadMs: 1000, runMs: 120, outputTokens: 10 });
  });

  test("without load_duration (OpenAI, Anthropic) a swap's load is its run time minus the expected warm run", () => {
    run("b", T0, 300, { resident: true });
    run("b", T0 + 1000, 3300);
    expect(store.costs.get("b:latest")).toMatchObject({ runMs: 300, loadMs: 3000, loads: 1, jobs: 2 });
    // A swap before any warm run cannot be split: it counts as a job, teaches no load.
    run("c", T0, 900);
    expect(store.costs.get("c:latest")).toMatchObject({ runMs: null, loadMs: null, totalMs: 900, loads: 0 });
  });

  test("failed and canceled jobs teach nothing", () => {
    const job = add("a", T0);
    store.claimNextJob(policy("fifo"), T0);
    store.failJob(job.id, "boom", 500, [], T0 + 10);
    store.cancelJob(add("a", T0).id);
    expect(store.costs.get("a:latest")).toBeNull();
  });
});

describe("queue groups", () => {
  test("counts queued jobs per model key and priority through enqueue, claim, requeue, cancel and prune", () => {
    const groups = () => store.queueGroups().map((g) => [g.modelKey, g.priority, g.queued]);
    const a1 = add("a", T0);
    add("a", T0 + 1);
    add("b", T0 + 2, { priority: 5 });
    const b2 = add("b", T0 + 3);
    expect(groups()).toEqual([
      ["b:latest", 5, 1],
      ["a:latest", 0, 2],
      ["b:latest", 0, 1],
    ]);
    const claimed = store.claimNextJob(policy("fifo"), T0 + 10)!;
    expect(groups()).toEqual([
      ["a:latest", 0, 2],
      ["b:latest", 0, 1],
    ]);
    store.requeueJob(claimed.id, T0, "again", null);
    store.cancelJob(a1.id);
    expect(groups()).toEqual([
      ["b:latest", 5, 1],
      ["a:latest", 0, 1],
      ["b:latest", 0, 1],
    ]);
    const oldest = store.queueGroups().find((g) => g.modelKey === "b:latest" && g.priority === 0)!;
    expect(oldest).toMatchObject({ oldestId: b2.id, oldestCreatedAt: T0 + 3, newestCreatedAt: T0 + 3 });
    expect(store.queueGroups().reduce((n, g) => n + g.queued, 0)).toBe(store.queuedCount());
  });
});

describe("cost-aware group choice", () => {
  function learn() {
    // b loads in 8 s, c in 0.3 s; a job takes 100 ms on either.
    run("b", T0 - 50_000, 8100, { loadMs: 8000 });
    run("c", T0 - 40_000, 400, { loadMs: 300 });
  }

  test("when the loaded model has nothing left, drain picks the most waiting work per expected cost; drain-oldest the oldest", () => {
    learn();
    const b = [add("b", T0), add("b", T0 + 1), add("b", T0 + 2)];
    const c = [add("c", T0 + 3), add("c", T0 + 4)];
    // b: 3 / (8000 + 300) ≈ 0.00036 per ms; c: 2 / (300 + 200) = 0.004 per ms.
    expect(store.claimNextJob(policy("drain", ["a:latest"]), T0 + 10)!.id).toBe(c[0]!.id);
    store.requeueJob(c[0]!.id, T0, null, null, true);
    expect(store.claimNextJob(policy("drain-oldest", ["a:latest"]), T0 + 10)!.id).toBe(b[0]!.id);
  });

  test("the loaded model, higher priorities and the starvation guard still come first", () => {
    learn();
    const lonelyB = add("b", T0);
    add("c", T0 + MINUTE);
    add("c", T0 + MINUTE);
    // Overdue (waited past maxWait): b goes first although c scores higher.
    expect(store.claimNextJob(policy("drain", ["a:latest"], MINUTE), T0 + MINUTE + 1)!.id).toBe(lonelyB.id);
    const urgentB = add("b", T0 + MINUTE + 2, { priority: 1 });
    expect(store.claimNextJob(policy("drain", ["c:latest"]), T0 + MINUTE + 3)!.id).toBe(urgentB.id);
  });

  test("unmeasured models are assumed typical, so with nothing learned the choice is the oldest job's", () => {
    const b = add("b", T0);
    add("c", T0 + 1);
    add("c", T0 + 2);
    expect(store.claimNextJob(policy("drain"), T0 + 10)!.id).toBe(b.id);
  });

  test("rankGroups: the README's worked example", () => {
    const cost = (key: string) =>
      ({ "big:latest": { loadMs: 8000, runMs: 500 }, "small:latest": { loadMs: 300, runMs: 200 } })[key]!;
    const ranked = rankGroups(
      [
        { modelKey: "big:latest", queued: 20, oldestId: "01A" },
        { modelKey: "small:latest", queued: 5, oldestId: "01B" },
      ],
      cost,
      [],
    );
    // big: 20 / (8000 + 20 × 500) = 20 / 18000 ≈ 1.11 per s; small: 5 / (300 + 5 × 200) = 5 / 1300 ≈ 3.85 per s.
    expect(ranked.map((g) => g.modelKey)).toEqual(["small:latest", "big:latest"]);
    // Equal scores: the oldest job's group.
    const tie = rankGroups(
      [
        { modelKey: "y", queued: 2, oldestId: "02" },
        { modelKey: "x", queued: 2, oldestId: "01" },
      ],
      expectedCosts(new Map()),
      [],
    );
    expect(tie.map((g) => g.modelKey)).toEqual(["x", "y"]);
  });
});

describe("start estimates", () => {
  test("play the scheduler forward group by group: running remainder, higher priority, loaded model, then the rest", () => {
    run("a", T0 - 60_000, 1100, { loadMs: 1000 }); // a: load 1000, run 100
    run("b", T0 - 50_000, 3200, { loadMs: 3000 }); // b: load 3000, run 200
    const now = T0;
    const running = add("a", now - 100);
    store.claimNextJob(policy("drain", ["a:latest"]), now - 50); // warm, 50 ms in: 50 ms left
    const a = [add("a", now + 1), add("a", now + 2), add("a", now + 3)];
    const b = [add("b", now + 4), add("b", now + 5)];
    const urgent = add("b", now + 6, { priority: 1 });
    const plan = planQueue({
      groups: store.queueGroups(),
      costs: store.costs.all(),
      running: store.getJob(running.id),
      residentKeys: ["a:latest"],
      schedule: "drain",
      now,
    });
    const at = (id: string) => estimatedStart(store.getJob(id)!, plan)! - now;
    // urgent: b loads after a's remainder; then b's own queue follows warm; then a reloads.
    expect(at(urgent.id)).toBe(50 + 3000);
    expect([at(b[0]!.id), at(b[1]!.id)]).toEqual([3250, 3450]);
    expect(a.map((job) => at(job.id))).toEqual([4650, 4750, 4850]);
    expect(estimatedStart(store.getJob(running.id)!, plan)).toBeNull();
  });

  test("the starvation guard's jobs run first at their priority, oldest first across model keys, and leave their groups", () => {
    run("a", T0 + 60 * MINUTE - 300_000, 1100, { loadMs: 1000 }); // a: load 1000, run 100
    run("b", T0 + 60 * MINUTE - 200_000, 3200, { loadMs: 3000 }); // b: load 3000, run 200
    const now = T0 + 60 * MINUTE; // later than the other tests' jobs: the ULID factory is monotonic across them
    const maxWaitMs = MINUTE;
    const overdueBefore = now - maxWaitMs;
    // Enqueued in time order, as the server does (a ULID starts with its creation time).
    const running = add("a", now - 95_000);
    store.claimNextJob(policy("drain", ["a:latest"], maxWaitMs), now - 50); // warm, 50 ms in: 50 ms left
    const oldB = add("b", now - 90_000);
    const batchLine = add("b", now - 85_000, { source: "batch" }); // as old, but batch lines are never promoted
    const oldA = add("a", now - 80_000);
    const a1 = add("a", now + 1);
    const b1 = add("b", now + 2);
    const plan = planQueue({
      groups: store.queueGroups(overdueBefore),
      costs: store.costs.all(),
      running: store.getJob(running.id),
      residentKeys: ["a:latest"],
      schedule: "drain",
      now,
      overdueBefore,
    });
    // Positions as JobService.queuePlace makes them.
    const place = (id: string) => {
      const job = store.getJob(id)!;
      const run = overdueRun(job, plan);
      if (run) return run.ahead + store.overdueRank(job) + 1;
      const group = plannedGroup(job, plan)!;
      return (
        group.ahead + store.rankInGroup(job, group.queued) - store.overdueAheadInGroup(job, overdueBefore, group.overdue) + 1
      );
    };
    const jobs = [oldB, oldA, a1, batchLine, b1];
    expect(jobs.map((job) => place(job.id))).toEqual([1, 2, 3, 4, 5]);
    // The claim's order, a job at a time, with the model it last took loaded.
    const claimed: string[] = [];
    for (let resident = "a:latest"; ;) {
      const job = store.claimNextJob(policy("drain", [resident], maxWaitMs), now + 10);
      if (!job) break;
      claimed.push(job.id);
      resident = job.modelKey;
    }
    expect(claimed).toEqual(jobs.map((job) => job.id));
    // The guard's run: b's load and run and a's run, spread over its two jobs; then a (loaded) and b (a load).
    const at = (job: { id: string; state?: string }) =>
      estimatedStart({ ...store.getJob(job.id)!, state: "queued" }, plan)! - now;
    expect(jobs.map(at)).toEqual([50, 50 + 1650, 3350, 3350 + 100 + 3000, 3350 + 100 + 3000 + 200]);
  });
});
