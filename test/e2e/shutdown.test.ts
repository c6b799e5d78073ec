// Every waiting client gets an answer at shutdown: a status and a JSON body in its API's shape, never a
// dropped connection. Queued clients are told to come back (503, Retry-After) and their jobs end;
// a client already streaming gets the grace period, then a last error line; job API jobs stay queued.
import { afterAll, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { join } from "node:path";
import { FakeOllama } from "../fake-ollama";
import { foremanEnv, spawnForeman, tempDir, until } from "../harness";

const fake = new FakeOllama({ tokenDelayMs: 100 }).start();
const dir = tempDir();
afterAll(async () => {
  await fake.stop();
  dir.cleanup();
});

const chat = (content: string, stream = true) =>
  JSON.stringify({ model: "llama3.2", messages: [{ role: "user", content }], stream });

test("SIGTERM: queued clients get 503 with Retry-After, the streaming one a last error line, job API jobs stay queued", async () => {
  const env = foremanEnv(fake.url, dir.path, { FOREMAN_DB: join(dir.path, "shutdown.db"), FOREMAN_SHUTDOWN_GRACE: "300ms" });
  const foreman = await spawnForeman(env);
  const post = (path: string, body: string) => fetch(`${foreman.url}${path}`, { method: "POST", body });

  const streaming = await post("/api/chat", chat("one two three four five six seven eight nine ten"));
  expect(streaming.status).toBe(200);
  await until(() => fake.inFlight === 1, 10_000, "the first job to run");
  const queuedNative = post("/api/generate", JSON.stringify({ model: "qwen3", prompt: "later", stream: false }));
  const queuedStream = post("/api/chat", chat("later too"));
  const batch = await post("/jobs", JSON.stringify({ type: "chat", request: JSON.parse(chat("batch work")) }));
  expect(batch.status).toBe(202);
  const batchId = ((await batch.json()) as { id: string }).id;
  await until(
    async () => ((await (await fetch(`${foreman.url}/queue`)).json()) as { depth: number }).depth === 3,
    10_000,
    "three jobs queued",
  );

  foreman.process.kill("SIGTERM");
  for (const pending of [queuedNative, queuedStream]) {
    const response = await pending;
    expect(response.status).toBe(503);
    expect(response.headers.get("retry-after")).toBe("5");
    expect(response.headers.get("x-foreman-job-id")).toBeString();
    expect(((await response.json()) as { error: string }).error).toContain("shutting down");
  }
  const lines = (await streaming.text()).trim().split("\n");
  expect(JSON.parse(lines.at(-1)!)).toEqual({ error: expect.stringContaining("shutting down") });
  expect(await foreman.process.exited).toBe(0);

  const db = new Database(env.FOREMAN_DB!, { readonly: true });
  const rows = db
    .query<{ id: string; source: string; state: string; attempts: number }, []>("SELECT id, source, state, attempts FROM jobs")
    .all();
  db.close();
  expect(rows.filter((r) => r.source === "ollama").map((r) => [r.state, r.attempts])).toEqual([
    ["canceled", 0],
    ["canceled", 0],
    ["canceled", 0],
  ]);
  expect(rows.find((r) => r.id === batchId)).toMatchObject({ state: "queued", attempts: 0 });
});
