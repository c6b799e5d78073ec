// A full disk is an outage, not a crash. The database sits on a small tmpfs that a filler file fills:
// every write answers 503 with Retry-After in its API's shape, /healthz says degraded and why, the worker
// holds the queue with its running job's end pending; once space returns that end is written once, the
// queue resumes, nothing accepted is lost and nothing runs twice, not even after a restart. A client that
// hangs up meanwhile has its job canceled once space returns; crash recovery waits the disk out too.
// Needs root's `mount -t tmpfs`; where it is refused the test is skipped, visibly.
import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync, rmdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { FakeOllama } from "../fake-ollama";
import { type ForemanProcess, foremanEnv, runForeman, spawnForeman, until } from "../harness";
import { capturingLogger } from "../in-process";
import { loadConfig } from "../../src/config";
import { openDatabase } from "../../src/queue/db";
import { JobStore } from "../../src/queue/store";
import { type FromWorker, workerSettings } from "../../src/worker/protocol";
import { JobRunner } from "../../src/worker/runner";

const mountPoint = mkdtempSync(join(tmpdir(), "foreman-full-disk-"));
const mounted = Bun.spawnSync(["mount", "-t", "tmpfs", "-o", "size=8M", "tmpfs", mountPoint], { stderr: "pipe" }).exitCode === 0;
const fake = new FakeOllama().start();
/** A webhook receiver that holds each delivery until `answerHooks` is called (then answers 204). */
const hooks: number[] = [];
let answerHooks!: () => void;
const hooksAnswered = new Promise<void>((resolve) => (answerHooks = resolve));
const receiver = Bun.serve({
  hostname: "127.0.0.1",
  port: 0,
  fetch: async (request) => {
    await request.text();
    hooks.push(Date.now());
    await hooksAnswered;
    return new Response(null, { status: 204 });
  },
});
let foreman: ForemanProcess | undefined;

afterAll(async () => {
  foreman?.process.kill(9);
  await foreman?.process.exited;
  await fake.stop();
  await receiver.stop(true);
  if (mounted) Bun.spawnSync(["umount", mountPoint]);
  rmdirSync(mountPoint);
});

const filler = join(mountPoint, "filler");
/** Fills the tmpfs to its last byte (dd stops at ENOSPC). */
const fillDisk = () => Bun.spawnSync(["dd", "if=/dev/zero", `of=${filler}`, "bs=64k"], { stderr: "pipe" });
const freeDisk = () => rmSync(filler);

const post = (path: string, body: unknown) =>
  fetch(`${foreman!.url}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
const health = async () =>
  (await (await fetch(`${foreman!.url}/healthz`)).json()) as { status: string; degraded: boolean; reasons: string[] };
const jobState = async (id: string) => ((await (await fetch(`${foreman!.url}/jobs/${id}`)).json()) as { state: string }).state;
const chat = (content: string, stream = false) => ({ model: "llama3.2", messages: [{ role: "user", content }], stream });
const servedFor = (content: string) =>
  fake.seen.filter((seen) => JSON.stringify(seen.body.messages ?? seen.body.prompt).includes(content)).length;

test.skipIf(!mounted)(
  "a full disk answers 503 + Retry-After in each API's shape, holds the queue, and loses and repeats nothing",
  async () => {
    const env = foremanEnv(fake.url, mountPoint, { FOREMAN_LOG_LEVEL: "info", FOREMAN_WEBHOOK_ALLOW: "127.0.0.1" });
    foreman = await spawnForeman(env);
    expect((await post("/api/chat", chat("warm up"))).status).toBe(200);
    // A job whose webhook is on its way when the disk fills: its delivery cannot be recorded.
    const hooked = await post("/jobs", {
      type: "chat",
      request: chat("hooked"),
      webhook: { url: `http://127.0.0.1:${receiver.port}/hook` },
    });
    expect(hooked.status).toBe(202);
    const hookedId = ((await hooked.json()) as { id: string }).id;
    await until(() => hooks.length === 1, 10_000, "the webhook delivery");

    // A streaming job on the GPU, held before its last tokens; two job API jobs accepted behind it.
    const release = fake.hold(2);
    const streaming = await post("/api/chat", chat("the whole answer", true));
    expect(streaming.status).toBe(200);
    const runningId = streaming.headers.get("x-foreman-job-id")!;
    const reader = streaming.body!.getReader();
    await reader.read();
    await until(async () => (await jobState(runningId)) === "working", 10_000, "the job to be working");
    const accepted: string[] = [];
    for (const content of ["accepted one", "accepted two"]) {
      const response = await post("/jobs", { type: "chat", request: chat(content) });
      expect(response.status).toBe(202);
      accepted.push(((await response.json()) as { id: string }).id);
    }
    // A sync client queued behind them, which hangs up while the disk is full.
    const hangUp = new AbortController();
    const hungUp = fetch(`${foreman.url}/api/chat`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(chat("hung up")),
      signal: hangUp.signal,
    }).catch(() => undefined);
    await until(
      async () => ((await (await fetch(`${foreman!.url}/queue`)).json()) as { depth: number }).depth === 3,
      10_000,
      "the sync job queued",
    );

    fillDisk();
    // Every write fails for space: 503 and Retry-After, in the shape of the API it came to.
    const ollama = await post("/api/generate", { model: "llama3.2", prompt: "no room", stream: false });
    expect(ollama.status).toBe(503);
    expect(Number(ollama.headers.get("retry-after"))).toBeGreaterThan(0);
    expect(await ollama.json()).toEqual({ error: expect.stringContaining("disk is full") });
    const openai = await post("/v1/chat/completions", chat("no room"));
    expect(openai.status).toBe(503);
    expect(Number(openai.headers.get("retry-after"))).toBeGreaterThan(0);
    expect(await openai.json()).toEqual({
      error: { message: expect.stringContaining("disk is full"), type: "api_error", param: null, code: null },
    });
    const anthropic = await post("/v1/messages", {
      model: "llama3.2",
      max_tokens: 10,
      messages: [{ role: "user", content: "no room" }],
    });
    expect(anthropic.status).toBe(503);
    expect(Number(anthropic.headers.get("retry-after"))).toBeGreaterThan(0);
    expect(await anthropic.json()).toEqual({
      type: "error",
      error: { type: "overloaded_error", message: expect.stringContaining("disk is full") },
    });
    const job = await post("/jobs", { type: "chat", request: chat("no room") });
    expect(job.status).toBe(503);
    expect(job.headers.get("retry-after")).not.toBeNull();
    const form = new FormData();
    form.append("purpose", "batch");
    form.append(
      "file",
      new File([JSON.stringify({ custom_id: "a", method: "POST", url: "/v1/chat/completions", body: chat("x") })], "in.jsonl"),
    );
    const upload = await fetch(`${foreman.url}/v1/files`, { method: "POST", body: form });
    expect(upload.status).toBe(503);
    expect(upload.headers.get("retry-after")).not.toBeNull();
    const degraded = await health();
    expect(degraded.degraded).toBe(true);
    expect(degraded.reasons).toEqual([expect.stringContaining("storage")]);
    const queueWhileFull = (await (await fetch(`${foreman.url}/queue`)).json()) as { degraded: boolean; reasons: string[] };
    expect(queueWhileFull.degraded).toBe(true);
    expect(queueWhileFull.reasons).toEqual([expect.stringContaining("database cannot be written")]);
    const metricsWhileFull = await (await fetch(`${foreman.url}/metrics`)).text();
    expect(metricsWhileFull).toContain('foreman_degraded{reason="storage"} 1');
    expect(await runForeman(["health"], { env: { FOREMAN_URL: foreman.url } })).toEqual({
      code: 0,
      stdout: `degraded: ${foreman.url}/healthz: foreman runs but cannot write its database (disk full?); new requests get 503 and the queue is held\n`,
      stderr: "",
    });

    // The sync client hangs up: its cancel cannot be written now, and must still land.
    hangUp.abort();
    await hungUp;

    // The webhook's answer arrives; its outcome's write fails, so the row stays due.
    answerHooks();
    // While the disk stays full the delivery is sent again about once a second, not in a tight loop.
    await Bun.sleep(1500);
    expect(hooks.length).toBeLessThan(10);
    expect(foreman.process.exitCode).toBeNull();

    // The held job finishes upstream; its client gets the whole answer, but its end cannot be written.
    release();
    let answer = "";
    for (let read = await reader.read(); !read.done; read = await reader.read()) answer += new TextDecoder().decode(read.value);
    expect(answer).toContain('"done":true');
    await until(() => foreman!.stdout().includes("holding the queue"), 10_000, "the worker to hold the queue");
    expect(await jobState(runningId)).toBe("working");
    expect(await Promise.all(accepted.map(jobState))).toEqual(["queued", "queued"]);

    // Space returns: the end lands, the queue resumes, each job ran once, and health clears. The next job
    // is held on the GPU: the hung-up client's cancel lands meanwhile, not only once the worker reaches it.
    const releaseNext = fake.hold(0);
    freeDisk();
    await until(async () => (await jobState(runningId)) === "done", 10_000, "the pending end write");
    const depth = async () => ((await (await fetch(`${foreman!.url}/queue`)).json()) as { depth: number }).depth;
    await until(async () => (await depth()) === 1, 10_000, "the hung-up client's cancel to land");
    releaseNext();
    await until(async () => (await Promise.all(accepted.map(jobState))).every((state) => state === "done"), 10_000, "the queue");
    await until(async () => !(await health()).degraded, 10_000, "healthy again");
    expect(await health()).toEqual({ status: "ok", degraded: false, reasons: [] });
    expect(foreman.process.exitCode).toBeNull();
    const webhookState = async () =>
      ((await (await fetch(`${foreman!.url}/jobs/${hookedId}`)).json()) as { webhook: { state: string } }).webhook.state;
    await until(async () => (await webhookState()) === "delivered", 10_000, "the webhook's outcome recorded");
    const delivered = hooks.length;
    expect([servedFor("the whole answer"), servedFor("accepted one"), servedFor("accepted two"), servedFor("no room")]).toEqual([
      1, 1, 1, 0,
    ]);
    // The hung-up client's job was canceled once space returned, and never sent.
    expect(servedFor("hung up")).toBe(0);

    // After a restart nothing runs again: a new job is served, and only it.
    foreman.process.kill("SIGTERM");
    await foreman.process.exited;
    foreman = await spawnForeman(env);
    expect((await post("/api/chat", chat("after restart"))).status).toBe(200);
    expect(fake.seen.length).toBe(6);
    expect(servedFor("the whole answer")).toBe(1);
    // The webhook's delivery was recorded once space returned: the restart sends it no more.
    expect(hooks.length).toBe(delivered);
  },
  60_000,
);

test.skipIf(!mounted)(
  "crash recovery that fails for space is retried until it lands, the worker saying so; only then does the loop start",
  async () => {
    foreman?.process.kill(9);
    await foreman?.process.exited;
    foreman = undefined;
    const config = loadConfig(foremanEnv(fake.url, join(mountPoint, "recovery")));
    const db = openDatabase(config.dbPath, { durability: config.durability });
    const store = new JobStore(db);
    // A job API job that a dead process left working.
    const request = JSON.stringify(chat("interrupted"));
    const { job } = store.enqueue(
      { type: "chat", model: "llama3.2", modelKey: "llama3.2:latest", request, source: "jobs", maxAttempts: 3 },
      100,
    );
    store.claimNextJob({ schedule: config.schedule, residentKeys: [], maxWaitMs: config.maxWaitMs });
    store.markWorking(job.id);
    // An empty WAL: recovery's write must grow it, and the disk has no room.
    db.run("PRAGMA wal_checkpoint(TRUNCATE)");
    fillDisk();
    const messages: FromWorker[] = [];
    const runner = new JobRunner(
      store,
      workerSettings(config),
      (message) => messages.push(message),
      capturingLogger("worker", []),
    );
    let ready = false;
    const running = runner.run(() => (ready = true));
    try {
      await until(
        () => messages.some((m) => m.type === "storage" && m.error !== undefined),
        10_000,
        "the worker to report storage trouble",
      );
      await Bun.sleep(1500);
      expect(ready).toBe(false);
      expect(store.jobState(job.id)).toBe("working");
      freeDisk();
      await until(() => ready, 10_000, "recovery to land");
      expect(messages.some((m) => m.type === "storage" && m.error === undefined)).toBe(true);
      await until(() => store.jobState(job.id) === "done", 10_000, "the recovered job to run");
      expect(servedFor("interrupted")).toBe(1);
    } finally {
      rmSync(filler, { force: true });
      runner.shutdown(0);
      await running;
      db.close();
    }
  },
  30_000,
);
