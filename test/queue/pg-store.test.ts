// PgJobStore on a real throwaway PostgreSQL cluster (one per file, a fresh database per test): the semantics
// test/queue/store.test.ts checks of JobStore on SQLite, the fencing of every runner write by the target's
// lease, and claimers in separate processes sharing one queue.
import { afterAll, beforeAll, beforeEach, describe, expect, test } from "bun:test";
import type { SQL } from "bun";
import fc from "fast-check";
import { join } from "node:path";
import { QueueFullError } from "../../src/errors";
import { type ClaimPolicy, pickNextJob } from "../../src/queue/claim-rules";
import type { JobSource, JobState } from "../../src/queue/job-states";
import { NewerSchemaError, openPg } from "../../src/queue/pg/db";
import { type Fence, PgJobStore } from "../../src/queue/pg/job-store";
import { PG_MIGRATIONS } from "../../src/queue/pg/migrations";
import { JobEndListener, JobQueuedListener } from "../../src/queue/pg/notify";
import type { NewJob } from "../../src/queue/store";
import { type PgCluster, startPgCluster } from "../pg-cluster";
import { type MemoryQueue, memoryClaimView } from "./memory-claim-view";

let cluster: PgCluster;
let sql: SQL;
let store: PgJobStore;
let dbCount = 0;
const open: SQL[] = [];

beforeAll(async () => {
  cluster = await startPgCluster();
});
afterAll(async () => {
  for (const client of open) await client.close().catch(() => {});
  await cluster.stop();
});

/** A fresh database on the cluster, migrated; its URL. */
async function freshDatabase(): Promise<string> {
  const name = `t${++dbCount}`;
  await cluster.createDatabase(name);
  return cluster.urlFor(name);
}

let url: string;
beforeEach(async () => {
  url = await freshDatabase();
  sql = await openPg(url, { poolSize: 4 });
  open.push(sql);
  store = new PgJobStore(sql);
  await takeLease(GPU);
});

const GPU = "gpu0";
const MINUTE = 60_000;

/** Holds `target`'s lease for a minute under `token` (the lease keeper's job in a node; written directly here). */
async function takeLease(target: string, token = 1, node = "test"): Promise<Fence> {
  await sql`INSERT INTO target_leases (target, node, token, expires_at) VALUES (${target}, ${node}, ${token}, now() + interval '1 minute')
    ON CONFLICT (target) DO UPDATE SET node = excluded.node, token = excluded.token, expires_at = excluded.expires_at`;
  return { target, token };
}
const fence: Fence = { target: GPU, token: 1 };

const drain = (residentKeys: string[] = [], maxWaitMs = 2 * MINUTE): ClaimPolicy => ({
  schedule: "drain",
  residentKeys,
  maxWaitMs,
});
const fifo: ClaimPolicy = { schedule: "fifo", residentKeys: [], maxWaitMs: 2 * MINUTE };

async function add(model: string, extra: Partial<NewJob> = {}, maxQueue = 1000) {
  return (
    await store.enqueue(
      { type: "chat", model, modelKey: `${model}:latest`, request: "{}", source: "jobs", maxAttempts: 3, ...extra },
      maxQueue,
    )
  ).job;
}

/** Moves a job's creation time back (the starvation guard's age) without waiting for it. */
async function age(id: string, ms: number) {
  await sql`UPDATE jobs SET created_at = created_at - ${ms} WHERE id = ${id}`;
}

async function claimModels(policy: ClaimPolicy, n: number): Promise<string[]> {
  const models: string[] = [];
  for (let i = 0; i < n; i++) {
    const job = await store.claimNextJob(policy, fence);
    if (!job) break;
    models.push(job.model);
    await store.finishJob(job.id, fence, "{}");
  }
  return models;
}

describe("the schema", () => {
  test("two nodes opening a fresh database at once migrate it once; a newer database is refused untouched", async () => {
    const url = await freshDatabase();
    const [a, b] = await Promise.all([openPg(url, { poolSize: 1 }), openPg(url, { poolSize: 1 })]);
    open.push(a, b);
    const versions = await a`SELECT version FROM schema_migrations ORDER BY version`;
    expect(versions.map((r: { version: number }) => r.version)).toEqual(PG_MIGRATIONS.map((_, i) => i + 1));
    await a`INSERT INTO schema_migrations (version, applied_at) VALUES (${PG_MIGRATIONS.length + 1}, now())`;
    const error = await openPg(url).catch((e) => e);
    expect(error).toBeInstanceOf(NewerSchemaError);
    expect(error.version).toBe(PG_MIGRATIONS.length + 1);
    // A later migration applies on top, in its own version.
    const newer = await openPg(url, { migrations: [...PG_MIGRATIONS, "SELECT 1", "CREATE TABLE later (x int)"] });
    open.push(newer);
    expect((await newer`SELECT max(version)::int AS v FROM schema_migrations`)[0].v).toBe(PG_MIGRATIONS.length + 2);
  });
});

describe("enqueue", () => {
  test("returns the row with numbers, times from the database's clock", async () => {
    const before = await store.now();
    const job = await add("a", { priority: 3, idempotencyKey: "k1" });
    const after = await store.now();
    expect(job).toMatchObject({ state: "queued", priority: 3, attempts: 0, maxAttempts: 3, request: "", result: null });
    expect(typeof job.createdAt).toBe("number");
    expect(job.createdAt).toBeGreaterThanOrEqual(before);
    expect(job.createdAt).toBeLessThanOrEqual(after);
    expect(job.runAfter).toBe(job.createdAt);
    expect((await store.getJob(job.id))!.request).toBe("{}");
    expect(await store.jobState(job.id)).toBe("queued");
    expect(await store.jobState("nope")).toBeNull();
  });

  test("an idempotency key returns the first job; a full queue refuses, batch lines not counted", async () => {
    const first = await store.enqueue(
      { type: "chat", model: "a", modelKey: "a:latest", request: "{}", source: "jobs", maxAttempts: 1, idempotencyKey: "same" },
      10,
    );
    const again = await store.enqueue(
      { type: "chat", model: "b", modelKey: "b:latest", request: "{}", source: "jobs", maxAttempts: 1, idempotencyKey: "same" },
      10,
    );
    expect(first.created).toBe(true);
    expect(again).toMatchObject({ created: false, job: { id: first.job.id, model: "a" } });
    await add("a", { source: "batch" }, 2);
    await add("a", {}, 2);
    await expect(add("a", {}, 2)).rejects.toBeInstanceOf(QueueFullError);
    await expect(add("a", { source: "batch" }, 2)).rejects.toBeInstanceOf(QueueFullError);
    expect(await store.queuedCount()).toBe(3);
    const many = await store.enqueueMany(
      [1, 2, 3].map(() => ({
        type: "chat" as const,
        model: "c",
        modelKey: "c:latest",
        request: "{}",
        source: "jobs" as const,
        maxAttempts: 1,
      })),
      3,
    );
    expect(many.map((o) => (o instanceof Error ? "full" : "ok"))).toEqual(["ok", "full", "full"]);
    expect(await store.queuedOfKey("a:latest")).toBe(3);
  });
});

describe("the claim", () => {
  test("takes the highest priority first, then the oldest, and marks it", async () => {
    const low = await add("a");
    const high = await add("b", { priority: 5 });
    const claimed = await store.claimNextJob(fifo, fence);
    expect(claimed).toMatchObject({ id: high.id, state: "loading", attempts: 1, target: GPU, swapped: 1, request: "{}" });
    expect(typeof claimed!.startedAt).toBe("number");
    expect((await store.claimNextJob(fifo, fence))!.id).toBe(low.id);
    expect(await store.claimNextJob(fifo, fence)).toBeNull();
  });

  test("prefers the loaded model, unless a job waited past the starvation guard", async () => {
    const old = await add("a");
    await add("b");
    await add("b");
    expect(await claimModels(drain(["b:latest"]), 1)).toEqual(["b"]);
    await age(old.id, 3 * MINUTE);
    expect(await claimModels(drain(["b:latest"]), 1)).toEqual(["a"]);
    expect(await claimModels(drain(["b:latest"]), 1)).toEqual(["b"]);
  });

  test("a batch line is never promoted by the starvation guard", async () => {
    const line = await add("a", { source: "batch" });
    await add("b");
    await age(line.id, 3 * MINUTE);
    expect(await claimModels(drain(["b:latest"]), 2)).toEqual(["b", "a"]);
  });

  test("drains by cost: many cheap jobs behind a short load before one behind a long load", async () => {
    await sql`INSERT INTO model_costs (model_key, load_ms, run_ms, jobs, loads, updated_at) VALUES
      ('big:latest', 60000, 1000, 5, 5, 0), ('small:latest', 1000, 1000, 5, 5, 0)`;
    await add("big");
    for (let i = 0; i < 3; i++) await add("small");
    expect(await claimModels(drain(), 4)).toEqual(["small", "small", "small", "big"]);
  });

  test("fair share: the least served caller's job first within the group", async () => {
    await sql`INSERT INTO keys (id, name, role, secret_hash, hint, created_at) VALUES
      ('key_a', 'a', 'client', '\\x01', 'aaaa', 0), ('key_b', 'b', 'client', '\\x02', 'bbbb', 0)`;
    const owner = (keyId: string) => ({ keyId, name: keyId, maxJobs: null, dailyTokens: null });
    await add("m", { owner: owner("key_a") });
    await add("m", { owner: owner("key_a") });
    await add("m", { owner: owner("key_b") });
    expect((await sql`SELECT key_id, counter FROM key_counters ORDER BY key_id`).length).toBe(2);
    await sql`UPDATE key_counters SET counter = 100 WHERE key_id = 'key_a'`;
    const first = await store.claimNextJob(drain(["m:latest"]), fence);
    expect(first!.keyId).toBe("key_b");
    await store.finishJob(first!.id, fence, "{}");
    // key_b was charged its GPU time; it has nothing more queued, so key_a's jobs follow.
    expect((await store.claimNextJob(drain(["m:latest"]), fence))!.keyId).toBe("key_a");
  });

  test("fair share: of callers level behind the served one, the anonymous caller sorts first, then by key id", async () => {
    await sql`INSERT INTO keys (id, name, role, secret_hash, hint, created_at) VALUES
      ('key_b', 'b', 'client', '\\x02', 'bbbb', 0), ('key_s', 's', 'client', '\\x03', 'ssss', 0)`;
    const owner = (keyId: string) => ({ keyId, name: keyId, maxJobs: null, dailyTokens: null });
    await add("y", { owner: owner("key_b") });
    const anonymous = await add("x");
    await add("m", { owner: owner("key_s") });
    await sql`DELETE FROM key_counters`;
    await sql`INSERT INTO key_counters (key_id, counter, updated_at) VALUES ('', 0, 0), ('key_b', 0, 0), ('key_s', 100000, 0)`;
    expect((await store.claimNextJob(drain(["m:latest"]), fence))!.id).toBe(anonymous.id);
  });

  test("a job backing off is not claimed before its run_after; nextRunIn says when", async () => {
    await add("a");
    const job = (await store.claimNextJob(fifo, fence))!;
    const requeued = await store.requeueJob(job.id, fence, 60_000, "upstream 503", 503);
    expect(requeued).toMatchObject({ state: "queued", attempts: 1, error: "upstream 503", errorStatus: 503 });
    expect(requeued!.runAfter).toBeGreaterThan(job.startedAt! + 59_000);
    expect(await store.claimNextJob(fifo, fence)).toBeNull();
    expect(await store.nextRunIn()).toBeGreaterThan(59_000);
    expect(await store.nextRunAfter()).toBe(requeued!.runAfter);
    await sql`UPDATE jobs SET run_after = run_after - 60000`;
    expect(await store.nextRunIn()).toBe(0);
    const again = (await store.claimNextJob(fifo, fence))!;
    expect(again).toMatchObject({ id: job.id, attempts: 2, error: null });
    // A refunded requeue (a shutdown) gives the attempt back.
    expect(await store.requeueJob(job.id, fence, 0, null, null, true)).toMatchObject({ attempts: 1 });
  });

  test("several targets: only eligible keys; onlyKey holds off another key", async () => {
    await add("a");
    await add("b");
    const onlyB: ClaimPolicy = { ...fifo, eligible: (k) => k === "b:latest" };
    expect((await store.claimNextJob(onlyB, fence))!.model).toBe("b");
    expect(await store.claimNextJob(onlyB, fence)).toBeNull();
    expect(await store.claimNextJob({ ...fifo, onlyKey: "b:latest" }, fence)).toBeNull();
    expect((await store.claimNextJob({ ...fifo, onlyKey: "a:latest" }, fence))!.model).toBe("a");
  });
});

// --- The snapshot against the memory view (test/queue/memory-claim-view.ts, the reference of claim-rules.test.ts) ---

const MODELS = ["a", "b", "c", "d"];
const CALLERS = [null, "key-1", "key-2", "key-3"];
const nullable = (arb: fc.Arbitrary<number>) => fc.option(arb, { nil: null, freq: 3 });
const sometimes = <T>(arb: fc.Arbitrary<T>, every: number) =>
  fc.oneof({ weight: every - 1, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: arb });
const subset = fc.subarray(MODELS);

const caseArb = fc.record({
  jobs: fc.array(
    fc.record({
      modelKey: fc.constantFrom(...MODELS),
      priority: fc.integer({ min: 0, max: 2 }),
      ageMin: fc.integer({ min: 0, max: 12 }),
      backingOff: fc.boolean(),
      source: fc.constantFrom<JobSource>("jobs", "jobs", "openai", "batch"),
      keyId: fc.constantFrom(...CALLERS),
      state: fc.constantFrom<JobState>("queued", "queued", "queued", "queued", "loading", "done"),
    }),
    { minLength: 1, maxLength: 30, size: "large" },
  ),
  fairEnabled: fc.boolean(),
  keysExist: fc.boolean(),
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
  placement: sometimes(fc.record({ leave: subset, exclusive: subset }), 4),
});

type Case = typeof caseArb extends fc.Arbitrary<infer C> ? C : never;

function policyOf(c: Case): ClaimPolicy {
  const policy: ClaimPolicy = { schedule: c.schedule, residentKeys: c.residentKeys, maxWaitMs: c.maxWaitMs, target: GPU };
  if (c.eligible) policy.eligible = (modelKey) => c.eligible!.includes(modelKey);
  if (c.onlyKey !== undefined) policy.onlyKey = c.onlyKey;
  if (c.fairSlackLoads !== undefined) policy.fairSlackLoads = c.fairSlackLoads;
  if (c.placement) {
    const { leave, exclusive } = c.placement;
    policy.placement = {
      cost: (modelKey) => ({ loadMs: modelKey === "a" ? 2_000 : 1_000, runMs: 1_000 }),
      leaveTo: (modelKey) => leave.includes(modelKey),
      exclusive: (modelKey) => exclusive.includes(modelKey),
    };
  }
  return policy;
}

/**
 * The case's rows in the database, their times from `base`, 30 s ahead of the database's clock: the
 * claim's now (a few ms after the insert) then compares with whole-minute ages as the memory view's exact
 * now does (an age equal to the wait is not overdue on either side). Runnable jobs' run_after is long past.
 */
async function load(c: Case, base: number): Promise<MemoryQueue> {
  const jobs = c.jobs.map((j, i) => ({
    id: `job-${String(i).padStart(3, "0")}`,
    modelKey: j.modelKey,
    priority: j.priority,
    createdAt: base - j.ageMin * MINUTE,
    runAfter: j.backingOff ? base + 10 * MINUTE : 0,
    source: j.source,
    keyId: j.keyId,
    state: j.state,
  }));
  for (const j of jobs) {
    await sql`INSERT INTO jobs (id, type, model, model_key, request, source, state, priority, max_attempts, run_after, created_at, key_id)
      VALUES (${j.id}, 'chat', ${j.modelKey}, ${j.modelKey}, '{}', ${j.source}, ${j.state}, ${j.priority}, 3, ${j.runAfter}::bigint,
        ${j.createdAt}::bigint, ${j.keyId})`;
  }
  if (c.keysExist)
    await sql`INSERT INTO keys (id, name, role, secret_hash, hint, created_at) VALUES ('key-1', 'one', 'client', '\\x00', '0000', 0)`;
  const counters = new Map(c.counters);
  for (const [keyId, counter] of counters)
    await sql`INSERT INTO key_counters (key_id, counter, updated_at) VALUES (${keyId ?? ""}, ${counter}, 0)`;
  const costs = new Map(c.costs.map(([modelKey, loadMs, runMs]) => [modelKey, { loadMs, runMs }]));
  for (const [modelKey, { loadMs, runMs }] of costs)
    await sql`INSERT INTO model_costs (model_key, load_ms, run_ms, jobs, loads, updated_at) VALUES (${modelKey}, ${loadMs}, ${runMs}, 1, 1, 0)`;
  return {
    jobs,
    fairActive: c.fairEnabled && c.keysExist,
    counters,
    costs: new Map(
      [...costs].map(([modelKey, { loadMs, runMs }]) => [
        modelKey,
        { modelKey, loadMs, runMs, totalMs: null, outputTokens: null, evalMs: null, jobs: 1, loads: 1, updatedAt: 0 },
      ]),
    ),
  };
}

test(
  "the claim picks what the rules pick over the memory view, claim after claim, for random queues and policies",
  async () => {
    await fc.assert(
      fc.asyncProperty(caseArb, async (c) => {
        await sql`TRUNCATE jobs, artifacts, webhook_deliveries, queued_counts, keys, key_counters, model_costs`;
        const base = (await store.now()) + 30_000;
        const memory = await load(c, base);
        store.fairEnabled = c.fairEnabled;
        const policy = policyOf(c);
        for (let claim = 0; claim < 3; claim++) {
          const expected = pickNextJob(memoryClaimView(memory), policy, base);
          const claimed = await store.claimNextJob(policy, fence);
          expect(claimed && { id: claimed.id, swapped: claimed.swapped }).toEqual(
            expected && { id: expected.pick.id, swapped: expected.swapped },
          );
          if (!expected) break;
          memory.jobs.find((j) => j.id === expected.pick.id)!.state = "loading";
        }
      }),
      { seed: 22, numRuns: 150 },
    );
  },
  { timeout: 120_000 },
);

describe("ends", () => {
  test("finish stores usage and result, learns the model's cost, and is once only", async () => {
    const job = await add("a");
    await store.claimNextJob(fifo, fence);
    expect(await store.markWorking(job.id, fence)).toMatchObject({ state: "working" });
    const usage = { promptTokens: 12, outputTokens: 34, loadMs: 500, evalMs: 250, estimated: false };
    const done = await store.finishJob(job.id, fence, '{"ok":true}', usage);
    expect(done).toMatchObject({ state: "done", result: '{"ok":true}', promptTokens: 12, outputTokens: 34, loadMs: 500 });
    expect(done!.tokensEstimated).toBe(0);
    expect(done!.finishedAt).toBeGreaterThanOrEqual(done!.startedAt!);
    expect((await store.getJob(job.id))!.result).toBe('{"ok":true}');
    const [cost] = await sql`SELECT load_ms, jobs, loads FROM model_costs WHERE model_key = 'a:latest'`;
    expect(cost).toMatchObject({ load_ms: 500, jobs: 1, loads: 1 });
    expect(await store.finishJob(job.id, fence, "{}")).toBeNull();
    expect(await store.failJob(job.id, fence, "late", 500)).toBeNull();
  });

  test("fail and cancel end a job; a client's cancel needs no fence", async () => {
    const a = await add("a");
    const b = await add("b");
    await store.claimNextJob(fifo, fence);
    expect(await store.failJob(a.id, fence, "upstream said no", 400)).toMatchObject({ state: "failed", errorStatus: 400 });
    expect(await store.cancelJob(b.id)).toMatchObject({ state: "canceled", errorStatus: 499, error: "request canceled" });
    expect(await store.cancelJob(b.id)).toBeNull();
    expect(await store.queuedCount()).toBe(0);
  });

  test("a stale fence changes nothing: claim, markWorking, finish, fail, requeue and cancel return null", async () => {
    const job = await add("a");
    await store.claimNextJob(fifo, fence);
    // Another node took the lease over (a new token), or it expired by the database's clock.
    await takeLease(GPU, 2, "other");
    const stale = fence;
    await add("b");
    expect(await store.claimNextJob(fifo, stale)).toBeNull();
    expect(await store.markWorking(job.id, stale)).toBeNull();
    expect(await store.finishJob(job.id, stale, "{}")).toBeNull();
    expect(await store.failJob(job.id, stale, "x", 500)).toBeNull();
    expect(await store.requeueJob(job.id, stale, 0, null, null)).toBeNull();
    expect(await store.cancelJob(job.id, { error: "x", status: 499 }, stale)).toBeNull();
    expect(await store.getJobHead(job.id)).toMatchObject({ state: "loading", attempts: 1, finishedAt: null });
    expect(await store.queuedCount()).toBe(1);
    // The right token on the wrong target's job changes nothing either.
    const other = await takeLease("gpu1", 7);
    expect(await store.finishJob(job.id, other, "{}")).toBeNull();
    const current = { target: GPU, token: 2 };
    expect(await store.finishJob(job.id, current, "{}")).toMatchObject({ state: "done" });
    await sql`UPDATE target_leases SET expires_at = now() - interval '1 second' WHERE target = ${GPU}`;
    expect(await store.claimNextJob(fifo, current)).toBeNull();
    expect(await store.queuedCount()).toBe(1);
  });
});

describe("notifications", () => {
  test("every end tells each node the job's id and what makes a job runnable wakes them; a refusal or a stale end tells nobody", async () => {
    const ended: string[] = [];
    let queued = 0;
    const ends = new JobEndListener({ url, onEnded: (ids) => ended.push(...ids), onResync: () => {} });
    const wakes = new JobQueuedListener({ url, onQueued: () => queued++ });
    await Promise.all([ends.start(), wakes.start()]);
    try {
      await Bun.sleep(50);
      const resyncs = queued; // the subscribe's own wake
      const settle = async (what: () => boolean) => {
        for (let i = 0; i < 200 && !what(); i++) await Bun.sleep(10);
        expect(what()).toBe(true);
      };
      const [a, b, c, d] = [await add("a"), await add("b"), await add("c"), await add("d")];
      await settle(() => queued >= resyncs + 4);
      // A queue-full refusal queued nothing: no wake.
      const before = queued;
      await expect(
        store.enqueue({ type: "chat", model: "x", modelKey: "x:latest", request: "{}", source: "jobs", maxAttempts: 1 }, 1),
      ).rejects.toThrow(QueueFullError);
      await store.claimNextJob(fifo, fence);
      expect(await store.finishJob(a.id, fence, "{}")).not.toBeNull();
      await store.claimNextJob(fifo, fence);
      expect(await store.requeueJob(b.id, fence, 0, "busy", 503)).not.toBeNull();
      await settle(() => queued === before + 1);
      await store.claimNextJob(fifo, fence);
      expect(await store.failJob(b.id, fence, "no", 400)).not.toBeNull();
      expect(await store.cancelJob(c.id)).not.toBeNull();
      // An end that changed nothing (a stale fence) tells nobody.
      expect(await store.finishJob(d.id, { target: GPU, token: 9 }, "{}")).toBeNull();
      await store.claimNextJob(fifo, fence);
      const taken = await takeLease(GPU, 2, "me");
      const recovered = await store.recoverInterruptedJobs([taken]);
      expect(recovered.requeued.map((job) => job.id)).toEqual([d.id]);
      await settle(() => ended.length === 3 && queued === before + 2);
      expect(ended).toEqual([a.id, b.id, c.id]);
    } finally {
      await Promise.all([ends.stop(), wakes.stop()]);
    }
  });
});

describe("recovery by target", () => {
  test("re-queues the jobs running on the taken-over targets only; fails the exhausted; cancels clients' requests", async () => {
    const gpu1 = await takeLease("gpu1", 1, "dead");
    const mine = await add("a");
    const exhausted = await add("b", { maxAttempts: 1 });
    const client = await add("c", { source: "openai" });
    const elsewhere = await add("d");
    const queuedClient = await add("e", { source: "ollama" });
    const policy = (model: string): ClaimPolicy => ({ ...fifo, eligible: (k) => k === `${model}:latest` });
    for (const model of ["a", "b", "c"]) expect(await store.claimNextJob(policy(model), fence)).not.toBeNull();
    expect(await store.claimNextJob(policy("d"), gpu1)).not.toBeNull();
    // This node takes gpu0 over (the dead node's token 1 becomes 2) and recovers it.
    const taken = await takeLease(GPU, 2, "me");
    const result = await store.recoverInterruptedJobs([taken]);
    expect(result.requeued.map((j) => j.id)).toEqual([mine.id]);
    expect(result.requeued[0]).toMatchObject({ state: "queued", attempts: 1, error: "interrupted" });
    expect(result.failed.map((j) => j.id)).toEqual([exhausted.id]);
    expect(result.failed[0]).toMatchObject({ error: "interrupted 1 times", errorStatus: 500 });
    expect(result.canceled.map((j) => j.id)).toEqual([client.id]);
    expect(await store.jobState(elsewhere.id)).toBe("loading");
    expect(await store.jobState(queuedClient.id)).toBe("queued");
    // A stale fence recovers nothing; beside a fence that holds, only that one's target.
    expect(await store.recoverInterruptedJobs([fence])).toEqual({ requeued: [], failed: [], canceled: [] });
    const both = await store.recoverInterruptedJobs([fence, gpu1]);
    expect(both.requeued.map((j) => j.id)).toEqual([elsewhere.id]);
  });
});

describe("pruning", () => {
  test("deletes jobs that ended longer ago than the age given, and nothing else", async () => {
    const old = await add("a");
    const recent = await add("b");
    const queued = await add("c");
    for (const id of [old.id, recent.id]) await store.cancelJob(id);
    await sql`UPDATE jobs SET finished_at = finished_at - 3600000 WHERE id = ${old.id}`;
    expect(await store.pruneFinishedJobs(MINUTE)).toBe(1);
    expect(await store.getJobHead(old.id)).toBeNull();
    expect(await store.jobState(recent.id)).toBe("canceled");
    expect(await store.jobState(queued.id)).toBe("queued");
    expect((await sql`SELECT count(*)::int AS n FROM queued_counts WHERE n = 0`)[0].n).toBe(0);
  });
});

test("one node's loops claim and end concurrently over its pool (prepared statements on several connections)", async () => {
  for (let i = 0; i < 200; i++) await add(`m${i % 3}`);
  const ran: string[] = [];
  const loop = async () => {
    for (;;) {
      const job = await store.claimNextJob(fifo, fence);
      // Null while jobs are queued: the others took each pick this claim read (its retries ran out).
      if (!job) {
        if ((await store.queuedCount()) === 0) return;
        continue;
      }
      ran.push(job.id);
      expect(await store.markWorking(job.id, fence)).not.toBeNull();
      expect(await store.finishJob(job.id, fence, "{}")).not.toBeNull();
    }
  };
  await Promise.all(Array.from({ length: 8 }, loop));
  expect(ran.length).toBe(200);
  expect(new Set(ran).size).toBe(200);
  expect((await sql`SELECT count(*)::int AS n FROM jobs WHERE state = 'done' AND attempts = 1`)[0].n).toBe(200);
});

describe("claimers in separate processes", () => {
  const CLAIMER = join(import.meta.dir, "pg-claimer.ts");

  async function runClaimers(url: string, targets: string[], tokens: number[]): Promise<ClaimerLog[]> {
    const procs = targets.map((target, i) =>
      Bun.spawn(["bun", CLAIMER, url, target, String(tokens[i]!)], { stdout: "pipe", stderr: "pipe" }),
    );
    const logs = await Promise.all(
      procs.map(async (proc) => {
        const [out, err, code] = await Promise.all([
          new Response(proc.stdout).text(),
          new Response(proc.stderr).text(),
          proc.exited,
        ]);
        if (code !== 0) throw new Error(`claimer exited ${code}: ${err}`);
        return JSON.parse(out) as ClaimerLog;
      }),
    );
    return logs;
  }

  async function enqueueJobs(n: number) {
    const jobs = Array.from({ length: n }, (_, i) => ({
      type: "chat" as const,
      model: `m${i % 4}`,
      modelKey: `m${i % 4}:latest`,
      request: "{}",
      source: "jobs" as const,
      maxAttempts: 3,
    }));
    for (let i = 0; i < jobs.length; i += 500) await store.enqueueMany(jobs.slice(i, i + 500), 100_000);
  }

  test(
    "three nodes on their own targets: every job done exactly once, never two at once on a target",
    async () => {
      await enqueueJobs(2000);
      const targets = ["gpu0", "gpu1", "gpu2"];
      for (const target of targets) await takeLease(target, 1);
      const url = cluster.urlFor(`t${dbCount}`);
      const logs = await runClaimers(url, targets, [1, 1, 1]);
      const ids = logs.flatMap((log) => log.spans.map((s) => s.id));
      expect(ids.length).toBe(2000);
      expect(new Set(ids).size).toBe(2000);
      const [counts] = await sql`SELECT count(*) FILTER (WHERE state = 'done')::int AS done,
        count(*) FILTER (WHERE attempts <> 1)::int AS retried FROM jobs`;
      expect(counts).toEqual({ done: 2000, retried: 0 });
      // Every claimer got work (the others did not starve it), and on a target no two jobs overlapped.
      for (const log of logs) {
        expect(log.spans.length).toBeGreaterThan(0);
        const spans = [...log.spans].sort((a, b) => a.start - b.start);
        for (let i = 1; i < spans.length; i++) expect(spans[i]!.start).toBeGreaterThanOrEqual(spans[i - 1]!.end);
      }
      // The database agrees: per target, each job started after the previous one finished.
      const [overlaps] = await sql`SELECT count(*)::int AS n FROM (
        SELECT started_at, lag(finished_at) OVER (PARTITION BY target ORDER BY started_at) AS prev FROM jobs) s
        WHERE started_at < prev`;
      expect(overlaps.n).toBe(0);
    },
    { timeout: 120_000 },
  );

  test(
    "two processes racing for one target's jobs never both take one (SKIP LOCKED)",
    async () => {
      await enqueueJobs(600);
      await takeLease("shared", 1);
      const url = cluster.urlFor(`t${dbCount}`);
      const logs = await runClaimers(url, ["shared", "shared"], [1, 1]);
      const ids = logs.flatMap((log) => log.spans.map((s) => s.id));
      expect(ids.length).toBe(600);
      expect(new Set(ids).size).toBe(600);
      const [counts] = await sql`SELECT count(*) FILTER (WHERE state = 'done')::int AS done,
        count(*) FILTER (WHERE attempts <> 1)::int AS retried FROM jobs`;
      expect(counts).toEqual({ done: 600, retried: 0 });
    },
    { timeout: 120_000 },
  );
});

/** What a claimer process prints: each job it ran, its claim and end by its own clock. */
interface ClaimerLog {
  target: string;
  spans: { id: string; start: number; end: number }[];
  claimMs: number[];
}
