// Fair share between callers (issue #20 item 4): a virtual counter per key (VTC) charged in GPU-ms at
// each job's end, lifted when a key returns, ordering each model group's jobs; the slack rule that lets a
// caller whose jobs need another model through once it trails by two of that model's loads.
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import type { Database } from "bun:sqlite";
import { join } from "node:path";
import { runKeysCommand } from "../../src/cli/keys-command";
import { KeyStore } from "../../src/keys/key-store";
import type { KeyAdmission } from "../../src/keys/usage";
import { openDatabase } from "../../src/queue/db";
import { type ClaimPolicy, FAIR_SLACK_LOADS, JobStore, type JobRow } from "../../src/queue/store";
import { tempDir } from "../harness";
import { startInProcess } from "../in-process";

let dir: ReturnType<typeof tempDir>;
let path: string;
let db: Database;
let store: JobStore;

beforeEach(() => {
  dir = tempDir();
  path = join(dir.path, "q.db");
  db = openDatabase(path);
  store = new JobStore(db);
});
afterEach(() => {
  db.close();
  dir.cleanup();
});

const T0 = 1_800_000_000_000;
const HOUR = 3_600_000;
/** Drain with the loaded model given; the starvation guard far away (it keeps its precedence, tested elsewhere). */
const drain = (residentKeys: string[]): ClaimPolicy => ({ schedule: "drain", residentKeys, maxWaitMs: HOUR });

function owner(keys: KeyStore, name: string, weight?: number): KeyAdmission {
  const { key } = keys.create(name, "client", { weight });
  return { keyId: key.id, name: key.name, maxJobs: null, dailyTokens: null };
}

function add(s: JobStore, model: string, at: number, who?: KeyAdmission): JobRow {
  const job = { type: "chat", model, modelKey: `${model}:latest`, request: "{}", source: "jobs", maxAttempts: 3 } as const;
  return s.enqueue({ ...job, owner: who }, 10_000, at).job;
}

/** Claims and runs jobs one at a time, each `runMs` long, the last run model resident; returns them in order. */
function runAll(s: JobStore, from: number, runMs: number, resident: string[] = []): { jobs: JobRow[]; at: number } {
  const jobs: JobRow[] = [];
  let at = from;
  let loaded = resident;
  for (let job = s.claimNextJob(drain(loaded), at); job; job = s.claimNextJob(drain(loaded), at)) {
    at += runMs;
    s.finishJob(job.id, "{}", [], { promptTokens: 1, outputTokens: 1, loadMs: null, evalMs: null }, at);
    jobs.push(job);
    loaded = [job.modelKey];
  }
  return { jobs, at };
}

const counterOf = (s: JobStore, keyId: string | null) => s.fair.all().find((c) => c.keyId === keyId)?.counter;

describe("counters", () => {
  test("charge each job's GPU time over its key's weight at its end, and survive a restart", () => {
    const keys = new KeyStore(db);
    const light = owner(keys, "light");
    const heavy = owner(keys, "heavy", 2);
    const l1 = add(store, "a", T0, light);
    const l2 = add(store, "a", T0 + 1, light);
    const h1 = add(store, "a", T0 + 2, heavy);
    const h2 = add(store, "a", T0 + 3, heavy);
    const run = (expected: JobRow, at: number, ms: number) => {
      const job = store.claimNextJob(drain(["a:latest"]), at)!;
      expect(job.id).toBe(expected.id);
      store.finishJob(job.id, "{}", [], undefined, at + ms);
    };
    run(l1, T0 + 10, 400); // all level: the oldest
    run(h1, T0 + 500, 400); // heavy at 0
    expect(counterOf(store, light.keyId)).toBe(400);
    expect(counterOf(store, heavy.keyId)).toBe(200);

    db.close();
    db = openDatabase(path);
    store = new JobStore(db);
    expect(store.fair.all()).toEqual([
      { keyId: heavy.keyId, counter: 200 },
      { keyId: light.keyId, counter: 400 },
    ]);
    // And the claim reads them: heavy, at 200, goes before light's older job; then light's, level at 400.
    run(h2, T0 + 1000, 400);
    run(l2, T0 + 1500, 100);
    expect(counterOf(store, heavy.keyId)).toBe(400);
    expect(counterOf(store, light.keyId)).toBe(500);
  });

  test("a key coming back is lifted to the least among the keys waiting: idleness banks no credit", () => {
    const keys = new KeyStore(db);
    const a = owner(keys, "a");
    const b = owner(keys, "b");
    add(store, "m", T0, b);
    let { at } = runAll(store, T0 + 1, 100, ["m:latest"]);
    expect(counterOf(store, b.keyId)).toBe(100);
    for (let i = 0; i < 20; i++) add(store, "m", at + i, a);
    // A serves 10 jobs while B is away.
    for (let i = 0; i < 10; i++) {
      const job = store.claimNextJob(drain(["m:latest"]), at)!;
      at += 100;
      store.finishJob(job.id, "{}", [], undefined, at);
    }
    // A came when nobody waited: it started level with B's 100, the most served.
    expect(counterOf(store, a.keyId)).toBe(1100);
    add(store, "m", at, b);
    // Lifted to A's 1100, not left at 100 (which would give B the next ten jobs).
    expect(counterOf(store, b.keyId)).toBe(1100);
    // A second job while one of B's waits is no return: no lift.
    add(store, "m", at + 1, b);
    expect(counterOf(store, b.keyId)).toBe(1100);
    const next = runAll(store, at, 100, ["m:latest"]).jobs.slice(0, 4);
    // Level counters: the oldest first (A's), then B, A, B.
    expect(next.map((j) => j.keyId)).toEqual([a.keyId, b.keyId, a.keyId, b.keyId]);
  });

  test("with nobody waiting, a returning key starts level with the most served", () => {
    const keys = new KeyStore(db);
    const a = owner(keys, "a");
    const b = owner(keys, "b");
    add(store, "m", T0, a);
    const { at } = runAll(store, T0 + 1, 700, ["m:latest"]);
    add(store, "m", at, b);
    expect(counterOf(store, b.keyId)).toBe(700);
  });
});

describe("the claim", () => {
  test("orders a model group's jobs by counter, then by age; jobs without a key are one caller", () => {
    const keys = new KeyStore(db);
    const a = owner(keys, "a");
    const b = owner(keys, "b");
    const aJobs = [0, 1, 2].map((i) => add(store, "m", T0 + i, a));
    const bJobs = [3, 4].map((i) => add(store, "m", T0 + i, b));
    const anonymous = [5, 6].map((i) => add(store, "m", T0 + i));
    const order = runAll(store, T0 + 10, 100, ["m:latest"]).jobs.map((j) => j.id);
    const [a0, a1, a2] = aJobs.map((j) => j.id) as [string, string, string];
    const [b0, b1] = bJobs.map((j) => j.id) as [string, string];
    const [n0, n1] = anonymous.map((j) => j.id) as [string, string];
    expect(order).toEqual([a0, b0, n0, a1, b1, n1, a2]);
    expect(counterOf(store, null)).toBe(200);
  });

  test("a key whose jobs all need another model gets the GPU once it trails by more than the slack, not before", () => {
    const keys = new KeyStore(db);
    // Learn the cost of a swap to each model: 1 s (Ollama's load_duration on a job that swapped).
    for (const model of ["a", "b"]) {
      add(store, model, T0);
      const job = store.claimNextJob(drain([]), T0 + 1)!;
      store.finishJob(job.id, "{}", [], { promptTokens: 1, outputTokens: 1, loadMs: 1000, evalMs: null }, T0 + 1200);
    }
    expect(store.costs.get("b:latest")!.loadMs).toBe(1000);
    const flood = owner(keys, "flood");
    const other = owner(keys, "other");
    const t = T0 + 10_000;
    for (let i = 0; i < 12; i++) add(store, "a", t + i, flood);
    const lone = add(store, "b", t + 20, other);
    const order = runAll(store, t + 30, 500, ["a:latest"]).jobs;
    // Both start level (other is lifted to flood's counter); each flood job widens the gap by 500 ms. The
    // slack is two loads of b (2000 ms): after the fifth the gap is 2500, and the lone job goes sixth.
    expect(FAIR_SLACK_LOADS).toBe(2);
    expect(order.findIndex((j) => j.id === lone.id)).toBe(5);
    expect(order.filter((j) => j.swapped === 1).map((j) => j.modelKey)).toEqual(["b:latest", "a:latest"]);
  });

  test("FOREMAN_FAIR_SLACK sets the slack in loads: four of them let the lone job through after nine", () => {
    const keys = new KeyStore(db);
    add(store, "b", T0);
    const learn = store.claimNextJob(drain([]), T0 + 1)!;
    store.finishJob(learn.id, "{}", [], { promptTokens: 1, outputTokens: 1, loadMs: 1000, evalMs: null }, T0 + 1200);
    const flood = owner(keys, "flood");
    const other = owner(keys, "other");
    const t = T0 + 10_000;
    for (let i = 0; i < 12; i++) add(store, "a", t + i, flood);
    const lone = add(store, "b", t + 20, other);
    const order: JobRow[] = [];
    let at = t + 30;
    const policy: ClaimPolicy = { ...drain(["a:latest"]), fairSlackLoads: 4 };
    for (
      let job = store.claimNextJob(policy, at);
      job;
      job = store.claimNextJob({ ...policy, residentKeys: [job.modelKey] }, at)
    ) {
      at += 500;
      store.finishJob(job.id, "{}", [], undefined, at);
      order.push(job);
    }
    expect(order.findIndex((j) => j.id === lone.id)).toBe(9);
  });

  test("priorities and the starvation guard keep their precedence over counters", () => {
    const keys = new KeyStore(db);
    const served = owner(keys, "served");
    const fresh = owner(keys, "fresh");
    add(store, "m", T0, served);
    runAll(store, T0 + 1, 5000, ["m:latest"]); // served: 5000 ms ahead
    const low = add(store, "m", T0 + 10_000, fresh);
    const urgent = store.enqueue(
      {
        type: "chat",
        model: "m",
        modelKey: "m:latest",
        request: "{}",
        source: "jobs",
        maxAttempts: 3,
        priority: 1,
        owner: served,
      },
      10_000,
      T0 + 10_001,
    ).job;
    expect(store.claimNextJob(drain(["m:latest"]), T0 + 10_002)!.id).toBe(urgent.id);
    store.finishJob(urgent.id, "{}", [], undefined, T0 + 10_003);
    expect(store.claimNextJob(drain(["m:latest"]), T0 + 10_004)!.id).toBe(low.id);
    store.finishJob(low.id, "{}", [], undefined, T0 + 10_005);
    // An overdue job of the most served key, on another model, still goes before the least served key's job.
    const old = add(store, "n", T0 + 10_010, served);
    const next = add(store, "m", T0 + 10_500, fresh);
    const guard: ClaimPolicy = { schedule: "drain", residentKeys: ["m:latest"], maxWaitMs: 1000 };
    expect(store.claimNextJob(guard, T0 + 11_011)!.id).toBe(old.id);
    expect(store.claimNextJob(guard, T0 + 11_012)!.id).toBe(next.id);
  });

  test("off (FOREMAN_FAIR_SHARE=off): drain-by-model alone, and no counters kept", () => {
    store.fair.enabled = false;
    const keys = new KeyStore(db);
    const a = owner(keys, "a");
    const b = owner(keys, "b");
    const aJobs = [0, 1, 2].map((i) => add(store, "m", T0 + i, a));
    const lone = add(store, "n", T0 + 5, b);
    const bJobs = [6, 7].map((i) => add(store, "m", T0 + i, b));
    const order = runAll(store, T0 + 10, 100, ["m:latest"]).jobs.map((j) => j.id);
    expect(order).toEqual([...aJobs, ...bJobs, lone].map((j) => j.id));
    expect(store.fair.all()).toEqual([]);
  });
});

describe("without keys, or with one caller", () => {
  /** The same arrivals on a store with fair share and one without: the claims must match exactly. */
  function sameOrder(withKey: boolean) {
    const other = openDatabase(join(dir.path, "off.db"));
    try {
      const off = new JobStore(other);
      off.fair.enabled = false;
      const who = withKey ? owner(new KeyStore(db), "only") : undefined;
      const models = ["a", "b", "a", "c", "b", "a", "a", "c", "b", "b", "a", "c"];
      for (const [i, model] of models.entries()) {
        add(store, model, T0 + i * 10, who);
        add(off, model, T0 + i * 10);
      }
      // A priority above, and a job the starvation guard promotes, so every path of the claim is taken.
      store.enqueue(
        {
          type: "chat",
          model: "c",
          modelKey: "c:latest",
          request: "{}",
          source: "jobs",
          maxAttempts: 3,
          priority: 5,
          owner: who,
        },
        10_000,
        T0 + 500,
      );
      off.enqueue(
        { type: "chat", model: "c", modelKey: "c:latest", request: "{}", source: "jobs", maxAttempts: 3, priority: 5 },
        10_000,
        T0 + 500,
      );
      const on = runAll(store, T0 + 1000, 300).jobs.map((j) => `${j.modelKey}/${j.priority}/${j.createdAt}`);
      const without = runAll(off, T0 + 1000, 300).jobs.map((j) => `${j.modelKey}/${j.priority}/${j.createdAt}`);
      expect(on).toHaveLength(models.length + 1);
      expect(on).toEqual(without);
    } finally {
      other.close();
    }
  }

  test("no keys: the order is drain-by-model's, and no counter is written", () => {
    sameOrder(false);
    expect(store.fair.all()).toEqual([]);
  });

  test("one key alone: the order is drain-by-model's", () => {
    sameOrder(true);
    expect(store.fair.all()).toHaveLength(1);
  });
});

describe("a key's weight", () => {
  test("is set by `foreman keys create --weight` and by the admin API, 1 by default; a bad one is refused", async () => {
    const env = { FOREMAN_DB: join(dir.path, "cli.db") };
    const quiet = { stdout: () => {}, stderr: () => {} };
    let out = "";
    const capture = { stdout: (t: string) => void (out += t), stderr: () => {} };
    expect(await runKeysCommand(["create", "batchy", "--weight", "0.5"], quiet, env)).toBe(0);
    expect(await runKeysCommand(["create", "plain"], quiet, env)).toBe(0);
    expect(await runKeysCommand(["create", "bad", "--weight", "0"], quiet, env)).toBe(2);
    expect(await runKeysCommand(["create", "worse", "--weight", "lots"], quiet, env)).toBe(2);
    expect(await runKeysCommand(["show", "batchy", "--json"], capture, env)).toBe(0);
    expect(JSON.parse(out).weight).toBe(0.5);
    out = "";
    await runKeysCommand(["show", "plain", "--json"], capture, env);
    expect(JSON.parse(out).weight).toBe(1);

    const stack = await startInProcess({ env: { FOREMAN_TOKEN: "admin-token" } });
    try {
      const admin = { authorization: "Bearer admin-token" };
      const made = await stack.request("POST", "/admin/keys", { name: "heavy", role: "client", weight: 3 }, admin);
      expect(made.status).toBe(201);
      expect(((await made.json()) as { weight: number }).weight).toBe(3);
      for (const weight of [0, -1, 1000, "2"]) {
        const refused = await stack.request("POST", "/admin/keys", { name: "w", role: "client", weight }, admin);
        expect(refused.status).toBe(400);
      }
    } finally {
      await stack.stop();
    }
  });
});
