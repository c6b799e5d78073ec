// Ollama going away and coming back: the queue holds without spending attempts and resumes at once.
import { afterEach, expect, test } from "bun:test";
import { type Stack, startStack, until } from "../harness";

let stack: Stack | undefined;
afterEach(async () => {
  await stack?.stop();
  stack = undefined;
});

const health = async () => (await (await fetch(`${stack!.foreman.url}/healthz`)).json()) as { degraded: boolean };

test("a job sent while Ollama is down spends no attempt, and runs within about a second of its return", async () => {
  // An hour between polls: only the degraded inventory's one-second poll can notice the return in time.
  stack = await startStack({ env: { FOREMAN_POLL_INTERVAL: "1h" } });
  const { fake, foreman } = stack;
  await fake.stop();

  const submitted = await fetch(`${foreman.url}/jobs`, {
    method: "POST",
    body: JSON.stringify({ type: "chat", request: { model: "llama3.2", messages: [{ role: "user", content: "later" }] } }),
  });
  expect(submitted.status).toBe(202);
  const { id } = (await submitted.json()) as { id: string };
  // A client waiting on /api/chat through the outage gets its answer once Ollama is back.
  const waiting = fetch(`${foreman.url}/api/chat`, {
    method: "POST",
    body: JSON.stringify({ model: "llama3.2", messages: [{ role: "user", content: "patient" }], stream: false }),
  });

  // The refused connection is the outage's first sign: the job is back in the queue, its attempt refunded.
  await until(() => foreman.jobs.store.getJob(id)!.error !== null, 10_000, "the refused attempt");
  expect(foreman.jobs.store.getJob(id)).toMatchObject({ state: "queued", attempts: 0, errorStatus: 502 });
  await until(async () => (await health()).degraded, 10_000, "degraded");

  fake.start();
  // Against an hourly poll, five seconds can only pass through the degraded one-second poll.
  await until(() => foreman.jobs.store.getJob(id)!.state === "done", 5_000, "the queue to resume");
  expect(foreman.jobs.store.getJob(id)!.attempts).toBe(1);
  const answer = await waiting;
  expect(answer.status).toBe(200);
  expect(foreman.jobs.store.getJob(answer.headers.get("x-foreman-job-id")!)!.attempts).toBe(1);
  expect(fake.seen.length).toBe(2);
  expect(fake.maxInFlight).toBe(1);
  expect((await health()).degraded).toBe(false);
}, 30_000);
