// Slow: the whole story. 200 jobs over three models through POST /jobs, the server killed
// mid-way and restarted; every job ends done with its result, and every webhook arrives verified.
import { afterAll, expect, test } from "bun:test";
import { join } from "node:path";
import { FakeOllama } from "../fake-ollama";
import { type ForemanProcess, foremanEnv, spawnForeman, tempDir, until } from "../harness";
import { WebhookReceiver, newSecret } from "../webhook/receiver";

const JOBS = 200;
const MODELS = ["llama3.2", "qwen3", "mistral"];

const fake = new FakeOllama({ tokenDelayMs: 2, loadDelayMs: 20 }).start();
const dir = tempDir();
const secret = newSecret();
const receiver = new WebhookReceiver(secret).start();
let foreman: ForemanProcess | undefined;

afterAll(async () => {
  foreman?.process.kill(9);
  await fake.stop();
  await receiver.stop();
  dir.cleanup();
});

test("200 jobs, a kill -9 mid-way: all done, all results kept, every webhook verified, repeats only where the kill cut one short", async () => {
  // Every message fails its first attempt, so deliveries are pending across the restart.
  receiver.failFirstAttempts = 1;
  const env = foremanEnv(fake.url, dir.path, {
    FOREMAN_DB: join(dir.path, "batch.db"),
    FOREMAN_WEBHOOK_SECRET: secret,
    FOREMAN_WEBHOOK_BACKOFF: "300ms,300ms,300ms,300ms,300ms,300ms",
    // The receiver listens on loopback, which the default (public addresses only) refuses.
    FOREMAN_WEBHOOK_ALLOW: "127.0.0.1",
  });
  foreman = await spawnForeman(env);
  const listen = new URL(foreman.url).host;

  const ids: string[] = [];
  const expected = new Map<string, string>();
  for (let i = 0; i < JOBS; i += 20) {
    const batch = Array.from({ length: 20 }, (_, k) => i + k).map(async (n) => {
      const response = await fetch(`${foreman!.url}/jobs`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({
          type: "chat",
          request: { model: MODELS[n % 3], messages: [{ role: "user", content: `document ${n}` }] },
          webhook: { url: receiver.url },
        }),
      });
      expect(response.status).toBe(202);
      const { id } = (await response.json()) as { id: string };
      expected.set(id, `You said: document ${n}`);
      return id;
    });
    ids.push(...(await Promise.all(batch)));
  }
  expect(ids.length).toBe(JOBS);

  await until(
    async () => {
      const done = (await (await fetch(`${foreman!.url}/jobs?state=done&limit=500`)).json()) as { jobs: unknown[] };
      return done.jobs.length >= JOBS / 2;
    },
    60_000,
    "half the jobs to finish",
  );
  foreman.process.kill(9);
  await foreman.process.exited;

  foreman = await spawnForeman({ ...env, FOREMAN_LISTEN: listen });
  await until(
    async () => {
      const done = (await (await fetch(`${foreman!.url}/jobs?state=done&limit=500`)).json()) as { jobs: unknown[] };
      return done.jobs.length === JOBS;
    },
    90_000,
    "all jobs to finish",
  );
  for (const id of ids) {
    const job = (await (await fetch(`${foreman.url}/jobs/${id}`)).json()) as {
      state: string;
      result: { message: { content: string } };
    };
    expect(job.state).toBe("done");
    expect(job.result.message.content).toBe(expected.get(id)!);
  }

  await until(() => new Set(receiver.received.map((r) => r.body.data.id)).size === JOBS, 60_000, "every webhook");
  expect(receiver.received.every((r) => r.verified && r.body.type === "job.done")).toBe(true);
  // One webhook-id per job: a repeat is the same message again, which a receiver drops by its id.
  const idsByJob = new Map<string, Set<string>>();
  for (const r of receiver.received) idsByJob.set(r.body.data.id, (idsByJob.get(r.body.data.id) ?? new Set()).add(r.id));
  expect([...idsByJob.values()].every((set) => set.size === 1)).toBe(true);
  // Repeats only where the kill cut a delivery short: at most the deliveries in flight at that moment (4).
  expect(receiver.received.length - JOBS).toBeLessThanOrEqual(4);
  expect(fake.maxInFlight).toBe(1);
  foreman.process.kill("SIGTERM");
  expect(await foreman.process.exited).toBe(0);
}, 240_000);
