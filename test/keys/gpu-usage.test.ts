// Who uses the GPU: each key's GPU time per UTC day, charged once in the transaction that ends each job that
// ran (done, failed, canceled while running), on the day it ended (an injected clock); the dashboard feed's
// Keys lines (every key for an admin, its own for a client key, none where no key exists); the
// foreman_key_gpu_seconds_total series (valid by promtool); and the admin API's and `foreman keys`' figures.
import { afterEach, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { runKeysCommand } from "../../src/cli/keys-command";
import type { DashboardSnapshot } from "../../src/dashboard/types";
import { KeyStore } from "../../src/keys/key-store";
import { openDatabase } from "../../src/queue/db";
import { JobStore, type NewJob } from "../../src/queue/store";
import { readSse } from "../../src/ui/sse";
import { tempDir, until } from "../harness";
import { type InProcessStack, startInProcess } from "../in-process";

const ADMIN = { authorization: "Bearer admin-token" };
const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

describe("GPU time per key per UTC day, at the store (an injected clock)", () => {
  const DAY = 86_400_000;
  // A day far from the real one: `foreman keys` below reads today by the real clock.
  const lateD = Date.UTC(2030, 0, 1, 23, 59, 50);

  function fresh() {
    const dir = tempDir();
    const path = join(dir.path, "foreman.db");
    const db = openDatabase(path);
    cleanups.push(
      () => dir.cleanup(),
      () => db.close(),
    );
    return { store: new JobStore(db), keys: new KeyStore(db), path };
  }
  const newJob = (owner: NewJob["owner"]): NewJob => ({
    type: "chat",
    model: "m",
    modelKey: "m:latest",
    request: "{}",
    source: "jobs",
    maxAttempts: 1,
    owner,
  });
  const POLICY = { schedule: "fifo", residentKeys: [], maxWaitMs: 60_000 } as const;

  test("charged once per end that ran (done, failed, canceled running), on the day it ended; never for a job that never ran", () => {
    const { store, keys } = fresh();
    const { key } = keys.create("alice", "client");
    const owner = { keyId: key.id, name: key.name, maxJobs: null, dailyTokens: null };
    const run = (at: number) => {
      const job = store.enqueue(newJob(owner), 100, at).job;
      expect(store.claimNextJob(POLICY, at)?.id).toBe(job.id);
      return job.id;
    };

    // Starts at 23:59:50 on day D and ends 15 s later, on day D+1: the day it ended gets all of it, as tokens do.
    const overMidnight = run(lateD);
    expect(store.finishJob(overMidnight, "{}", [], undefined, lateD + 15_000)).not.toBeNull();
    // Ending it again does nothing (it already ended): nothing charged twice.
    expect(store.finishJob(overMidnight, "{}", [], undefined, lateD + 20_000)).toBeNull();
    expect(store.failJob(overMidnight, "late", 500, [], lateD + 20_000)).toBeNull();
    expect(store.cancelJob(overMidnight, undefined, lateD + 20_000)).toBeNull();
    expect(store.keyUsage.today(key.id, lateD).gpuMs).toBe(0);
    expect(store.keyUsage.today(key.id, lateD + DAY).gpuMs).toBe(15_000);

    const next = lateD + 60_000;
    const failed = run(next);
    store.failJob(failed, "boom", 500, [], next + 2_000);
    const canceled = run(next + 10_000);
    store.cancelJob(canceled, undefined, next + 13_000);
    // Canceled while queued: it held nothing.
    const queued = store.enqueue(newJob(owner), 100, next + 20_000).job;
    store.cancelJob(queued.id, undefined, next + 30_000);
    // Put back in the queue (a retry's backoff) and canceled there: its last attempt's start is not its end's.
    const retried = run(next + 31_000);
    expect(store.requeueJob(retried, next + 36_000, "boom", 500)?.state).toBe("queued");
    store.cancelJob(retried, undefined, next + 38_000);
    // A job without a key is nobody's line.
    const anonymous = store.enqueue(newJob(undefined), 100, next + 40_000).job;
    store.claimNextJob(POLICY, next + 40_000);
    store.finishJob(anonymous.id, "{}", [], undefined, next + 45_000);

    expect(store.keyUsage.today(key.id, next)).toEqual({ promptTokens: 0, outputTokens: 0, jobs: 1, gpuMs: 20_000 });
    expect(store.keyUsage.board(next)).toEqual([
      { keyId: key.id, name: "alice", promptTokens: 0, outputTokens: 0, jobs: 1, gpuMs: 20_000, waiting: 0 },
    ]);
  });

  test("the board: every key by name, or one key's alone; jobs waiting counted; a revoked key shown only while it has figures", async () => {
    const { store, keys, path } = fresh();
    const bob = keys.create("bob", "client").key;
    const alice = keys.create("alice", "client").key;
    const gone = keys.create("gone", "client").key;
    keys.revoke("gone");
    store.enqueue(newJob({ keyId: bob.id, name: "bob", maxJobs: null, dailyTokens: null }), 100, lateD);
    store.enqueue(newJob({ keyId: bob.id, name: "bob", maxJobs: null, dailyTokens: null }), 100, lateD);
    store.claimNextJob(POLICY, lateD);
    store.keyUsage.chargeTx({ keyId: alice.id, promptTokens: 7, outputTokens: 5 }, lateD);

    const zero = { promptTokens: 0, outputTokens: 0, jobs: 0, gpuMs: 0 };
    expect(store.keyUsage.board(lateD)).toEqual([
      { keyId: alice.id, name: "alice", promptTokens: 7, outputTokens: 5, jobs: 1, gpuMs: 0, waiting: 0 },
      { keyId: bob.id, name: "bob", ...zero, waiting: 2 },
    ]);
    expect(store.keyUsage.board(lateD, bob.id).map((row) => row.name)).toEqual(["bob"]);
    // The next day alice's figures start over; the revoked key appears once it has some.
    store.keyUsage.chargeGpuTx({ keyId: gone.id, startedAt: 0, finishedAt: 1_500 }, lateD + DAY);
    expect(store.keyUsage.board(lateD + DAY).map((row) => [row.name, row.gpuMs, row.jobs])).toEqual([
      ["alice", 0, 0],
      ["bob", 0, 0],
      ["gone", 1_500, 0],
    ]);
    expect(store.keyUsage.board(lateD, "key_none")).toEqual([]);

    // `foreman keys` prints it beside the tokens (on the database, the server need not run).
    const out: string[] = [];
    const io = { stdout: (text: string) => out.push(text), stderr: (text: string) => out.push(text) };
    store.keyUsage.chargeGpuTx({ keyId: alice.id, startedAt: 0, finishedAt: 12_345 }, Date.now());
    expect(await runKeysCommand(["show", "alice"], io, { FOREMAN_DB: path })).toBe(0);
    expect(out.join("")).toMatch(/^today \(UTC\) +0 jobs done, 0 prompt \+ 0 output tokens, 12\.3s GPU$/m);
    out.length = 0;
    expect(await runKeysCommand(["list"], io, { FOREMAN_DB: path })).toBe(0);
    expect(out.join("")).toMatch(/GPU TODAY/);
    expect(out.join("")).toMatch(/^alice .* 12\.3s +-$/m);
  });
});

async function firstSnapshot(stack: InProcessStack, auth: Record<string, string>): Promise<DashboardSnapshot> {
  const response = await stack.request("GET", "/ui/events", undefined, auth);
  expect(response.status).toBe(200);
  const events = readSse(response.body!);
  for (;;) {
    const { value, done } = await events.next();
    if (done) throw new Error("the feed ended");
    if (value.event !== "snapshot") continue;
    await events.return(undefined);
    return JSON.parse(value.data) as DashboardSnapshot;
  }
}

async function promtoolCheck(text: string): Promise<{ code: number; output: string }> {
  const child = Bun.spawn(["promtool", "check", "metrics"], { stdin: new Blob([text]), stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([
    new Response(child.stdout).text(),
    new Response(child.stderr).text(),
    child.exited,
  ]);
  return { code, output: out + err };
}

describe("the Keys lines, /metrics and the admin API, in-process", () => {
  async function stackWith(): Promise<InProcessStack> {
    const stack = await startInProcess({ fake: { tokenDelayMs: 5 }, env: { FOREMAN_TOKEN: "admin-token" } });
    cleanups.push(() => stack.stop());
    return stack;
  }
  async function key(stack: InProcessStack, name: string) {
    const made = await stack.request("POST", "/admin/keys", { name, role: "client" }, ADMIN);
    expect(made.status).toBe(201);
    return { authorization: `Bearer ${((await made.json()) as { secret: string }).secret}` };
  }
  const submit = async (stack: InProcessStack, auth: Record<string, string>) => {
    const response = await stack.request(
      "POST",
      "/jobs",
      { type: "chat", request: { model: "llama3.2", messages: [{ role: "user", content: "hi there" }] } },
      auth,
    );
    expect(response.status).toBe(202);
    return ((await response.json()) as { id: string }).id;
  };

  test("an admin sees every key's line, a client key its own; the series and the API agree with the table", async () => {
    const stack = await stackWith();
    // Before any key: no Keys lines, no per-key series.
    expect((await firstSnapshot(stack, ADMIN)).keys).toBeUndefined();
    expect(await (await stack.request("GET", "/metrics", undefined, ADMIN)).text()).not.toMatch(
      /^foreman_key_gpu_seconds_total\{/m,
    );

    const alice = await key(stack, "alice");
    const bob = await key(stack, "bob");
    const ids = [await submit(stack, alice), await submit(stack, alice)];
    const rows = await Promise.all(ids.map((id) => stack.ended(id)));
    const gpuMs = rows.reduce((sum, row) => sum + (row.finishedAt! - row.startedAt!), 0);
    const tokens = rows.reduce((sum, row) => sum + row.promptTokens! + row.outputTokens!, 0);
    expect(rows.map((row) => row.state)).toEqual(["done", "done"]);
    expect(gpuMs).toBeGreaterThan(0);

    const admin = await firstSnapshot(stack, ADMIN);
    expect(admin.keys).toEqual([
      { name: "alice", tokens, gpuMs, waiting: 0, done: 2 },
      { name: "bob", tokens: 0, gpuMs: 0, waiting: 0, done: 0 },
    ]);
    expect((await firstSnapshot(stack, alice)).keys).toEqual([{ name: "alice", tokens, gpuMs, waiting: 0, done: 2 }]);
    expect((await firstSnapshot(stack, bob)).keys).toEqual([{ name: "bob", tokens: 0, gpuMs: 0, waiting: 0, done: 0 }]);

    // The series counts the same span, by key name; never a secret.
    const metricsText = async () => await (await stack.request("GET", "/metrics", undefined, ADMIN)).text();
    const line = /^foreman_key_gpu_seconds_total\{key="alice"\} (\S+)$/m;
    await until(async () => line.test(await metricsText()), 5000, "alice's GPU seconds on /metrics");
    const text = await metricsText();
    expect(Number(line.exec(text)![1])).toBeCloseTo(gpuMs / 1000, 6);
    expect(text).not.toMatch(/^foreman_key_gpu_seconds_total\{key="bob"\}/m);
    expect(text).not.toContain(alice.authorization.slice("Bearer ".length));
    expect(await promtoolCheck(text)).toEqual({ code: 0, output: "" });

    const view = (await (await stack.request("GET", "/admin/keys/alice", undefined, ADMIN)).json()) as {
      today: { gpu_seconds: number; jobs: number };
    };
    expect(view.today).toMatchObject({ gpu_seconds: gpuMs / 1000, jobs: 2 });
  });
});
