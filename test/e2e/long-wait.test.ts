// Slow: no timeout of Bun or Elysia may cut a client that waits silently for a minute, in the queue
// or behind a model load (Bun.serve's idle timeout is 10 s, Elysia's 30 s). Run against the process users
// run (the compiled binary, see test/preload.ts): the timeouts are its settings.
import { afterAll, expect, test } from "bun:test";
import { Ollama } from "ollama";
import { FakeOllama } from "../fake-ollama";
import { type ForemanProcess, foremanEnv, spawnForeman, tempDir } from "../harness";

const fake = new FakeOllama({ loadDelayMs: 62_000 }).start();
const dir = tempDir();
let foreman: ForemanProcess | undefined;
afterAll(async () => {
  foreman?.process.kill("SIGTERM");
  await foreman?.process.exited;
  await fake.stop();
  dir.cleanup();
});

test("a streaming client and a queued client both wait 62 s without a byte, and get their answers", async () => {
  foreman = await spawnForeman(foremanEnv(fake.url, dir.path));
  const client = new Ollama({ host: foreman.url });
  const started = Date.now();
  // The first waits through a 62 s model load; the second waits in the queue behind it, then is served warm.
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
  const queued = client.generate({ model: "llama3.2", prompt: "behind it" });
  expect(await streamed).toBe("You said: slow load");
  expect((await queued).response).toBe("You said: behind it");
  expect(Date.now() - started).toBeGreaterThanOrEqual(62_000);
  expect(fake.swaps).toBe(1);
}, 120_000);
