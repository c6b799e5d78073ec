// Slow: no timeout may cut a client that waits silently, in the queue or behind a model load. The one on
// the way is Bun.serve's idle timeout: 10 s as server.ts listens, checked in 4 s ticks, so 40 s of silence
// would be cut; foreman lifts it for the routes that wait (src/http/long-lived.ts keepOpen). The
// next is Bun fetch's idle timeout (5 min: the clients', and foreman's call to Ollama), past any test, and
// foreman's own FOREMAN_STALL_TIMEOUT (5 min). Bun 1.4.5 never idle-cuts a request that sent a body, and
// the job watcher (GET) sends a heartbeat every 15 s: today this passes even without the lift (checked
// with such a build); it guards the day Bun cuts them. Run against the process users run (the compiled
// binary, see test/preload.ts): the timeouts are its settings.
import { afterAll, expect, test } from "bun:test";
import { Ollama } from "ollama";
import { FakeOllama } from "../fake-ollama";
import { type ForemanProcess, foremanEnv, spawnForeman, tempDir, until } from "../harness";

/** Far past the 10 s idle timeout and its 4 s tick. */
const SILENCE_MS = 40_000;
const fake = new FakeOllama({ loadDelayMs: SILENCE_MS }).start();
const dir = tempDir();
let foreman: ForemanProcess | undefined;
afterAll(async () => {
  foreman?.process.kill("SIGTERM");
  await foreman?.process.exited;
  await fake.stop();
  dir.cleanup();
});

test("a streaming client, a queued client and a watcher of the queued job wait 40 s without a byte, and get their answers", async () => {
  foreman = await spawnForeman(foremanEnv(fake.url, dir.path));
  const url = foreman.url;
  const client = new Ollama({ host: url });
  const started = Date.now();
  // The first waits through a 40 s model load; the second waits in the queue behind it, then is served warm.
  const streamed = (async () => {
    const parts: string[] = [];
    for await (const part of await client.chat({
      model: "llama3.2",
      messages: [{ role: "user", content: "slow load" }],
      stream: true,
    })) {
      parts.push(part.message.content);
    }
    return parts.join("");
  })();
  await fake.nextArrival();
  const queued = client.generate({ model: "llama3.2", prompt: "behind it" });
  let queuedId: string | undefined;
  const queuedJobs = async () => (await (await fetch(`${url}/jobs?state=queued`)).json()) as { jobs: { id: string }[] };
  await until(async () => (queuedId = (await queuedJobs()).jobs[0]?.id) !== undefined, 5000, "the second job to queue");
  // Its watcher hears "queued" at once, then nothing until the load ends.
  const watched = fetch(`${url}/jobs/${queuedId}/events`).then((response) => response.text());

  expect(await streamed).toBe("You said: slow load");
  expect((await queued).response).toBe("You said: behind it");
  const events = await watched;
  expect(events.startsWith("event: state\n")).toBe(true);
  expect(events).toContain("event: chunk\n");
  expect(events.trim().split("\n\n").at(-1)).toMatch(/^event: end\ndata: .*"state":"done"/);
  expect(Date.now() - started).toBeGreaterThanOrEqual(SILENCE_MS);
  expect(fake.swaps).toBe(1);
}, 120_000);
