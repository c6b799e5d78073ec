// The scheduling policy end to end: priority header, starvation guard, outages, timeouts.
import { afterEach, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { loadConfig } from "../../src/config";
import { startServer } from "../../src/server";
import { KeyStore } from "../../src/keys/key-store";
import { openDatabase } from "../../src/queue/db";
import { FakeOllama } from "../fake-ollama";
import { type Stack, foremanEnv, freePort, startStack, tempDir, until } from "../harness";

let stack: Stack | undefined;
afterEach(async () => {
  await stack?.stop();
  stack = undefined;
});

const chat = (content: string, model = "llama3.2", extra: Record<string, unknown> = {}) =>
  JSON.stringify({ model, messages: [{ role: "user", content }], ...extra });

async function submitJob(model: string, content: string) {
  const response = await fetch(`${stack!.foreman.url}/jobs`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ type: "chat", request: { model, messages: [{ role: "user", content }] } }),
  });
  return ((await response.json()) as { id: string }).id;
}

describe("X-Foreman-Priority", () => {
  test("an integer in range sets the priority; anything else is a 400 that queues nothing", async () => {
    stack = await startStack();
    for (const bad of ["high", "1.5", "1001", "-1001", "1e3"]) {
      const response = await fetch(`${stack.foreman.url}/api/chat`, {
        method: "POST",
        headers: { "x-foreman-priority": bad },
        body: chat("x"),
      });
      expect(response.status).toBe(400);
      expect(((await response.json()) as { error: string }).error).toContain("X-Foreman-Priority");
    }
    expect(stack.foreman.jobs.store.listJobs({ limit: 10 })).toEqual([]);
    const response = await fetch(`${stack.foreman.url}/api/chat`, {
      method: "POST",
      headers: { "x-foreman-priority": "7" },
      body: chat("x", "llama3.2", { stream: false }),
    });
    expect(stack.foreman.jobs.store.getJob(response.headers.get("x-foreman-job-id")!)!.priority).toBe(7);
  });
});

describe("the starvation guard", () => {
  test("a steady flow of model A holds a lone model B job no longer than FOREMAN_MAX_WAIT plus one job", async () => {
    stack = await startStack({ fake: { tokenDelayMs: 25, loadDelayMs: 50 }, env: { FOREMAN_MAX_WAIT: "1s" } });
    const store = stack.foreman.jobs.store;
    // Keep A's queue topped up for 3 s: drain alone would never let B run.
    let feeding = true;
    let n = 0;
    const feeder = (async () => {
      while (feeding) {
        while (store.queuedCount() < 3) await submitJob("llama3.2", `a${n++} one two three`);
        await Bun.sleep(10);
      }
    })();
    await until(() => stack!.fake.inFlight === 1, 5000, "A to run");
    const lonely = await submitJob("qwen3", "b");
    await until(() => store.getJob(lonely)?.state === "done", 10_000, "the B job");
    await Bun.sleep(300);
    feeding = false;
    await feeder;

    const b = store.getJob(lonely)!;
    const waited = b.startedAt! - b.createdAt;
    const aRuns = store.listJobs({ model: "llama3.2", state: "done", limit: 500 }).map((j) => j.finishedAt! - j.startedAt!);
    const longestA = Math.max(...aRuns);
    expect(waited).toBeGreaterThan(1000); // drain held it back while A kept coming...
    expect(waited).toBeLessThanOrEqual(1000 + longestA + 50); // ...but no longer than the guard allows
    // And A kept flowing after B: the guard promoted one job, it did not switch policy.
    expect(stack.fake.seen.filter((s) => s.model === "llama3.2" && s.startedAt > b.finishedAt!).length).toBeGreaterThan(0);
  });
});

describe("outages", () => {
  test("while Ollama is down the worker takes nothing, a waiting client keeps waiting, and no attempt is spent", async () => {
    stack = await startStack({ env: { FOREMAN_POLL_INTERVAL: "200ms" } });
    await stack.fake.stop();
    await until(() => stack!.foreman.jobs.inventory.snapshot.degraded, 5000, "degraded");
    const answer = fetch(`${stack.foreman.url}/api/chat`, {
      method: "POST",
      body: chat("during the outage", "llama3.2", { stream: false }),
    });
    const queuedJob = await submitJob("qwen3", "also waiting");
    await Bun.sleep(1000);
    expect(stack.foreman.jobs.store.getJob(queuedJob)).toMatchObject({ state: "queued", attempts: 0 });
    stack.fake.start();
    const response = await answer;
    expect(response.status).toBe(200);
    expect(((await response.json()) as { message: { content: string } }).message.content).toBe("You said: during the outage");
    expect(stack.foreman.jobs.store.getJob(response.headers.get("x-foreman-job-id")!)!.attempts).toBe(1);
    await until(() => stack!.foreman.jobs.store.getJob(queuedJob)?.state === "done", 5000, "the queued job");
    expect(stack.foreman.jobs.store.getJob(queuedJob)!.attempts).toBe(1);
  });
});

describe("an Ollama that starts after foreman", () => {
  test("jobs are accepted and wait for it, and run once it answers", async () => {
    const fake = new FakeOllama({ port: await freePort() });
    const dir = tempDir();
    const foreman = await startServer(loadConfig(foremanEnv(fake.url, dir.path, { FOREMAN_POLL_INTERVAL: "200ms" })));
    try {
      const response = fetch(`${foreman.url}/api/generate`, {
        method: "POST",
        body: JSON.stringify({ model: "qwen3", prompt: "early", stream: false }),
      });
      await Bun.sleep(300);
      fake.start();
      expect(((await (await response).json()) as { response: string }).response).toBe("You said: early");
    } finally {
      await foreman.stop();
      await fake.stop();
      dir.cleanup();
    }
  });
});

describe("timeouts", () => {
  test("FOREMAN_STALL_TIMEOUT: silence aborts the attempt, which is retried, then fails with a clear error", async () => {
    stack = await startStack({ fake: { loadDelayMs: 2000 }, env: { FOREMAN_STALL_TIMEOUT: "300ms", FOREMAN_MAX_ATTEMPTS: "2" } });
    const response = await fetch(`${stack.foreman.url}/api/chat`, { method: "POST", body: chat("slow") });
    expect(response.status).toBe(504);
    expect(await response.json()).toEqual({ error: "no output from ollama for 300ms" });
    await until(() => stack!.fake.seen.every((s) => s.aborted), 5000, "both attempts aborted upstream");
    expect(stack.fake.seen.length).toBe(2);
  });

  test("FOREMAN_JOB_TIMEOUT bounds one attempt even while chunks flow; a streaming client gets a last {error} line", async () => {
    stack = await startStack({ fake: { tokenDelayMs: 150 }, env: { FOREMAN_JOB_TIMEOUT: "500ms" } });
    const response = await fetch(`${stack.foreman.url}/api/chat`, {
      method: "POST",
      body: chat("one two three four five six seven eight"),
    });
    const lines = (await response.text()).trim().split("\n");
    expect(lines.length).toBeGreaterThan(1);
    expect(JSON.parse(lines.at(-1)!)).toEqual({ error: "job timed out after 500ms" });
    const job = stack.foreman.jobs.store.getJob(response.headers.get("x-foreman-job-id")!)!;
    expect(job).toMatchObject({ state: "failed", error: "job timed out after 500ms" });
    await until(() => stack!.fake.seen[0]!.aborted === true, 5000, "the upstream abort");
  });

  test("a job API job that times out is retried with backoff and its attempts are counted", async () => {
    stack = await startStack({ fake: { loadDelayMs: 1000 }, env: { FOREMAN_STALL_TIMEOUT: "200ms", FOREMAN_MAX_ATTEMPTS: "3" } });
    const id = await submitJob("llama3.2", "x");
    await until(() => stack!.foreman.jobs.store.getJob(id)?.state === "failed", 15_000, "the job to fail");
    const job = stack.foreman.jobs.store.getJob(id)!;
    expect(job.attempts).toBe(3);
    expect(job.error).toBe("no output from ollama for 200ms");
    const starts = stack.fake.seen.map((s) => s.startedAt);
    // Backoff: 1 s then 2 s (each ±50%) between attempts, on top of the 200 ms stall.
    expect(starts[1]! - starts[0]!).toBeGreaterThanOrEqual(700);
    expect(starts[2]! - starts[1]!).toBeGreaterThanOrEqual(1200);
  });
});

describe("FOREMAN_EMBED_MODEL", () => {
  test("is loaded at start with keep_alive -1, so it stays resident", async () => {
    stack = await startStack({ env: { FOREMAN_EMBED_MODEL: "all-minilm" } });
    await until(() => stack!.fake.embeds.length > 0, 5000, "the warm-up call");
    expect(stack.fake.embeds[0]).toEqual({ model: "all-minilm", input: "", keep_alive: -1 });
  });
});

describe("listening beyond loopback", () => {
  test("without FOREMAN_TOKEN or API keys logs a warning at start; with either it does not", async () => {
    const written: string[] = [];
    const keyed = tempDir();
    // The log goes to stdout.
    const original = process.stdout.write.bind(process.stdout);
    process.stdout.write = ((chunk: string) => (written.push(String(chunk)), true)) as typeof process.stdout.write;
    try {
      stack = await startStack({ env: { FOREMAN_LISTEN: "0.0.0.0:0", FOREMAN_LOG_LEVEL: "warn" } });
      await stack.stop();
      stack = await startStack({ env: { FOREMAN_LISTEN: "0.0.0.0:0", FOREMAN_LOG_LEVEL: "warn", FOREMAN_TOKEN: "t" } });
      await stack.stop();
      // A database with a key made in it: closed as with FOREMAN_TOKEN.
      const dbPath = join(keyed.path, "foreman.db");
      const db = openDatabase(dbPath);
      new KeyStore(db).create("ops", "admin");
      db.close();
      stack = await startStack({ env: { FOREMAN_LISTEN: "0.0.0.0:0", FOREMAN_LOG_LEVEL: "warn", FOREMAN_DB: dbPath } });
    } finally {
      process.stdout.write = original;
    }
    await stack?.stop();
    stack = undefined;
    keyed.cleanup();
    const warnings = written.filter((line) => line.includes("without FOREMAN_TOKEN"));
    expect(warnings.length).toBe(1);
    expect(warnings[0]).toMatch(/warn/i);
  });
});
