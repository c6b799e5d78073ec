// The claim's rules (src/queue/claim-rules.ts) over the in-memory ClaimView written from the interface's
// doc comments: a few cases read as the rules say, then the property that the SQLite store's claim picks
// what the rules pick over the memory view for any queue and policy (the check a second engine takes too).
import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import { type ClaimPolicy, type Placement, pickNextJob } from "../../src/queue/claim-rules";
import { openDatabase } from "../../src/queue/db";
import type { JobSource, JobState } from "../../src/queue/job-states";
import type { ModelCost } from "../../src/queue/model-costs";
import { JobStore } from "../../src/queue/store";
import { type MemoryJob, type MemoryQueue, memoryClaimView } from "./memory-claim-view";

const NOW = 1_800_000_000_000;
const MINUTE = 60_000;

let serial = 0;
/** A runnable job of the anonymous caller made a minute ago; ids rise in the order jobs are made. */
function job(modelKey: string, fields: Partial<MemoryJob> = {}): MemoryJob {
  return {
    id: `job-${String(serial++).padStart(4, "0")}`,
    modelKey,
    priority: 0,
    createdAt: NOW - MINUTE,
    runAfter: NOW - MINUTE,
    source: "jobs",
    keyId: null,
    state: "queued",
    ...fields,
  };
}

function cost(modelKey: string, loadMs: number | null, runMs: number | null): ModelCost {
  return { modelKey, loadMs, runMs, totalMs: null, outputTokens: null, evalMs: null, jobs: 1, loads: 1, updatedAt: 0 };
}

function queue(jobs: MemoryJob[], fields: Partial<MemoryQueue> = {}): MemoryQueue {
  return { jobs, fairActive: false, counters: new Map(), costs: new Map(), ...fields };
}

const drain = (residentKeys: string[] = [], fields: Partial<ClaimPolicy> = {}): ClaimPolicy => ({
  schedule: "drain",
  residentKeys,
  maxWaitMs: 10 * MINUTE,
  ...fields,
});

/** The picked job's id and whether it swaps the model in, or null. */
function next(q: MemoryQueue, policy: ClaimPolicy, now = NOW): { id: string; swapped: 0 | 1 } | null {
  const r = pickNextJob(memoryClaimView(q), policy, now);
  return r && { id: r.pick.id, swapped: r.swapped };
}

describe("the claim's rules", () => {
  test("the highest priority with a runnable job goes first; a job backing off is passed over", () => {
    const low = job("a");
    const backingOff = job("b", { priority: 2, runAfter: NOW + 1 });
    const high = job("c", { priority: 1 });
    expect(next(queue([low, backingOff, high]), drain(["a"]))).toEqual({ id: high.id, swapped: 1 });
    expect(next(queue([low, backingOff]), drain(["a"]))).toEqual({ id: low.id, swapped: 0 });
    expect(next(queue([backingOff]), drain())).toBeNull();
    expect(next(queue([]), drain())).toBeNull();
  });

  test("the loaded model's jobs go first, oldest first; under fifo the oldest job whatever its model", () => {
    const other = job("b");
    const warm1 = job("a");
    const warm2 = job("a");
    const q = queue([warm2, other, warm1]);
    expect(next(q, drain(["a"]))).toEqual({ id: warm1.id, swapped: 0 });
    expect(next(q, { ...drain(["a"]), schedule: "fifo" })).toEqual({ id: other.id, swapped: 1 });
  });

  test("the starvation guard: a job older than maxWait goes before the loaded model, oldest by creation; never a batch line", () => {
    const warm = job("a");
    const batchLine = job("b", { source: "batch", createdAt: NOW - 60 * MINUTE });
    const overdueLater = job("c", { createdAt: NOW - 20 * MINUTE });
    const overdueFirst = job("d", { createdAt: NOW - 30 * MINUTE });
    const q = queue([warm, batchLine, overdueLater, overdueFirst]);
    expect(next(q, drain(["a"]))?.id).toBe(overdueFirst.id);
    // Created earlier, but made (id) later: the guard orders by creation time.
    expect(next(queue([warm, batchLine, overdueLater]), drain(["a"]))?.id).toBe(overdueLater.id);
    expect(next(queue([warm, batchLine]), drain(["a"]))?.id).toBe(warm.id);
    // Several targets: the oldest overdue job of a key this target may claim.
    expect(next(q, drain(["a"], { eligible: (k) => k !== "d" }))?.id).toBe(overdueLater.id);
  });

  test("drain takes the group with the most waiting work per expected cost; drain-oldest the oldest job", () => {
    const slow = job("slow");
    const fast = [job("fast"), job("fast")];
    const costs = new Map([
      ["slow", cost("slow", 30_000, 5_000)],
      ["fast", cost("fast", 1_000, 500)],
    ]);
    const q = queue([slow, ...fast], { costs });
    expect(next(q, drain(["idle"]))).toEqual({ id: fast[0]!.id, swapped: 1 });
    expect(next(q, { ...drain(["idle"]), schedule: "drain-oldest" })?.id).toBe(slow.id);
  });

  test("onlyKey: another key's slots are in flight, so a pick of another key claims nothing", () => {
    const a = job("a");
    const b = job("b", { priority: 1 });
    expect(next(queue([a, b]), drain(["a"], { onlyKey: "a" }))).toBeNull();
    expect(next(queue([a]), drain(["a"], { onlyKey: "a" }))?.id).toBe(a.id);
  });

  test("fair share: the least served caller's oldest job in the group; one trailing by more than the slack on another model takes the GPU", () => {
    const heavy = job("a", { keyId: "key-heavy" });
    const light = job("a", { keyId: "key-light" });
    const starved = job("b", { keyId: "key-starved" });
    const costs = new Map([["b", cost("b", 1_000, 1_000)]]);
    const counters = (starvedAt: number) =>
      new Map<string | null, number>([
        ["key-heavy", 9_000],
        ["key-light", 5_000],
        ["key-starved", starvedAt],
      ]);
    const q = (starvedAt: number, fairActive = true) =>
      queue([heavy, light, starved], { fairActive, costs, counters: counters(starvedAt) });
    // 5,000 - 3,000 is within two loads of b (2,000): the loaded group, its least served caller.
    expect(next(q(3_000), drain(["a"]))?.id).toBe(light.id);
    expect(next(q(2_999), drain(["a"]))).toEqual({ id: starved.id, swapped: 1 });
    expect(next(q(2_999), drain(["a"], { fairSlackLoads: 4 }))?.id).toBe(light.id);
    expect(next(q(2_999, false), drain(["a"]))?.id).toBe(heavy.id);
  });

  test("fair share: of callers level behind, the first in key-id order takes the GPU, the anonymous caller first", () => {
    const served = job("a", { keyId: "key-served" });
    const keyed = job("c", { keyId: "key-1" });
    const anonymous = job("b", { keyId: null });
    const counters = new Map<string | null, number>([
      ["key-served", 10_000],
      ["key-1", 0],
      [null, 0],
    ]);
    const costs = new Map([
      ["b", cost("b", 1_000, 1_000)],
      ["c", cost("c", 1_000, 1_000)],
    ]);
    // key-1's job is the older, but the anonymous caller comes first among the level ones.
    expect(next(queue([served, keyed, anonymous], { fairActive: true, counters, costs }), drain(["a"]))?.id).toBe(anonymous.id);
  });

  test("placement: every group is left to a target that has it resident, so this one claims nothing", () => {
    const a = job("a");
    const b = job("b");
    const placement = (leave: string[]): Placement => ({
      cost: () => ({ loadMs: 1_000, runMs: 1_000 }),
      leaveTo: (modelKey) => leave.includes(modelKey),
      exclusive: () => false,
    });
    expect(next(queue([a, b]), drain([], { placement: placement(["a", "b"]) }))).toBeNull();
    expect(next(queue([a, b]), drain([], { placement: placement(["a"]) }))?.id).toBe(b.id);
  });
});

// --- The SQLite store against the memory view --------------------------------------------------------------

const MODELS = ["a", "b", "c", "d"];
const CALLERS = [null, "key-1", "key-2", "key-3"];

const jobArb = fc.record({
  modelKey: fc.constantFrom(...MODELS),
  priority: fc.integer({ min: 0, max: 2 }),
  // Few distinct ages (minutes ago), so the guard's (created_at, id) order meets ties.
  ageMin: fc.integer({ min: 0, max: 12 }),
  backingOff: fc.boolean(),
  source: fc.constantFrom<JobSource>("jobs", "jobs", "openai", "batch"),
  keyId: fc.constantFrom(...CALLERS),
  state: fc.constantFrom<JobState>("queued", "queued", "queued", "queued", "loading", "done"),
});

const subset = fc.subarray(MODELS);
const nullable = (arb: fc.Arbitrary<number>) => fc.option(arb, { nil: null, freq: 3 });
/** `arb` one time in `every`, else absent: each option left out often, so most cases still claim something. */
const sometimes = <T>(arb: fc.Arbitrary<T>, every: number) =>
  fc.oneof({ weight: every - 1, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: arb });
/** True `every - 1` times in `every`. */
const mostly = (every: number) =>
  fc.oneof({ weight: every - 1, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) });

const caseArb = fc.record({
  jobs: fc.array(jobArb, { minLength: 1, maxLength: 30, size: "large" }),
  fairEnabled: mostly(4),
  keysExist: mostly(4),
  // Counters from few values, so callers are often level.
  counters: fc.array(fc.tuple(fc.constantFrom(...CALLERS), fc.constantFrom(0, 1_000, 2_500, 10_000)), { maxLength: 6 }),
  costs: fc.array(
    fc.tuple(
      fc.constantFrom(...MODELS),
      nullable(fc.constantFrom(0, 500, 3_000, 20_000)),
      nullable(fc.constantFrom(100, 1_000, 4_000)),
    ),
    { maxLength: 4 },
  ),
  schedule: fc.constantFrom<ClaimPolicy["schedule"]>("drain", "drain-oldest", "fifo"),
  residentKeys: fc.shuffledSubarray(MODELS, { maxLength: 2 }),
  maxWaitMs: fc.constantFrom(0, 3 * MINUTE, 8 * MINUTE, 60 * MINUTE),
  eligible: sometimes(subset, 3),
  onlyKey: sometimes(fc.constantFrom(...MODELS), 4),
  fairSlackLoads: sometimes(fc.constantFrom(0, 1, 2, 5), 2),
  placement: sometimes(fc.record({ leave: subset, exclusive: subset, loadMs: fc.constantFrom(0, 2_000) }), 4),
});

type Case = typeof caseArb extends fc.Arbitrary<infer C> ? C : never;

function policyOf(c: Case): ClaimPolicy {
  const policy: ClaimPolicy = { schedule: c.schedule, residentKeys: c.residentKeys, maxWaitMs: c.maxWaitMs, target: "gpu0" };
  if (c.eligible) policy.eligible = (modelKey) => c.eligible!.includes(modelKey);
  if (c.onlyKey !== undefined) policy.onlyKey = c.onlyKey;
  if (c.fairSlackLoads !== undefined) policy.fairSlackLoads = c.fairSlackLoads;
  if (c.placement) {
    const { leave, exclusive, loadMs } = c.placement;
    policy.placement = {
      cost: (modelKey) => ({ loadMs: modelKey === "a" ? loadMs : 1_000, runMs: 1_000 }),
      leaveTo: (modelKey) => leave.includes(modelKey),
      exclusive: (modelKey) => exclusive.includes(modelKey),
    };
  }
  return policy;
}

function memoryOf(c: Case): MemoryQueue {
  const jobs = c.jobs.map((j, i) => ({
    id: `job-${String(i).padStart(3, "0")}`,
    modelKey: j.modelKey,
    priority: j.priority,
    createdAt: NOW - j.ageMin * MINUTE,
    runAfter: j.backingOff ? NOW + MINUTE : NOW - j.ageMin * MINUTE,
    source: j.source,
    keyId: j.keyId,
    state: j.state,
  }));
  return {
    jobs,
    fairActive: c.fairEnabled && c.keysExist,
    counters: new Map(c.counters),
    costs: new Map(c.costs.map(([modelKey, loadMs, runMs]) => [modelKey, cost(modelKey, loadMs, runMs)])),
  };
}

/** A fresh SQLite store holding the same rows as the memory queue. */
function sqliteOf(q: MemoryQueue, keysExist: boolean, fairEnabled: boolean): { store: JobStore; close: () => void } {
  const db = openDatabase(":memory:");
  const store = new JobStore(db);
  store.fair.enabled = fairEnabled;
  const insertJob = db.query(
    `INSERT INTO jobs (id, type, model, model_key, request, source, state, priority, max_attempts, run_after, created_at, key_id)
     VALUES (?1, 'chat', ?2, ?2, '{}', ?3, ?4, ?5, 3, ?6, ?7, ?8)`,
  );
  for (const j of q.jobs) insertJob.run(j.id, j.modelKey, j.source, j.state, j.priority, j.runAfter, j.createdAt, j.keyId);
  if (keysExist) {
    db.run(
      `INSERT INTO keys (id, name, role, secret_hash, hint, created_at) VALUES ('key-1', 'one', 'client', x'00', '0000', 0)`,
    );
  }
  const insertCounter = db.query(`INSERT INTO key_counters (key_id, counter, updated_at) VALUES (?1, ?2, 0)`);
  for (const [keyId, counter] of q.counters) insertCounter.run(keyId ?? "", counter);
  const insertCost = db.query(
    `INSERT INTO model_costs (model_key, load_ms, run_ms, jobs, loads, updated_at) VALUES (?1, ?2, ?3, 1, 1, 0)`,
  );
  for (const c of q.costs.values()) insertCost.run(c.modelKey, c.loadMs, c.runMs);
  return { store, close: () => db.close() };
}

test("the SQLite store claims what the rules pick over the memory view, claim after claim", () => {
  fc.assert(
    fc.property(caseArb, (c) => {
      const memory = memoryOf(c);
      const policy = policyOf(c);
      const sqlite = sqliteOf(memory, c.keysExist, c.fairEnabled);
      try {
        // Three claims in a row: each one's pick leaves the queue (loading) on both sides.
        for (let claim = 0; claim < 3; claim++) {
          const expected = pickNextJob(memoryClaimView(memory), policy, NOW);
          const claimed = sqlite.store.claimNextJob(policy, NOW);
          expect(claimed && { id: claimed.id, swapped: claimed.swapped, target: claimed.target }).toEqual(
            expected && { id: expected.pick.id, swapped: expected.swapped, target: "gpu0" },
          );
          if (!expected) break;
          memory.jobs.find((j) => j.id === expected.pick.id)!.state = "loading";
        }
      } finally {
        sqlite.close();
      }
    }),
    { seed: 22, numRuns: 200 },
  );
});
