// Admitting a 50,000-line batch on the compiled binary: /healthz keeps answering while the lines are queued
// (in slices, the HTTP thread free between them), and a kill -9 mid-admission neither loses nor repeats a line.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { join } from "node:path";
import { FakeOllama } from "../fake-ollama";
import { type ForemanProcess, foremanEnv, spawnForeman, tempDir, until } from "../harness";

const LINES = 50_000;
let fake: FakeOllama;
let dir: ReturnType<typeof tempDir>;
beforeAll(() => {
  // Slow tokens: the lines queued meanwhile barely run, so the count below is the admission's alone.
  fake = new FakeOllama({ tokenDelayMs: 1000 }).start();
  dir = tempDir();
});
afterAll(async () => {
  await fake.stop();
  dir.cleanup();
});

const input = Array.from({ length: LINES }, (_, i) =>
  JSON.stringify({
    custom_id: `r${i}`,
    method: "POST",
    url: "/v1/chat/completions",
    body: { model: "llama3.2", messages: [{ role: "user", content: `hello ${i}` }] },
  }),
).join("\n");

async function createBatch(foreman: ForemanProcess): Promise<string> {
  const form = new FormData();
  form.append("purpose", "batch");
  form.append("file", new Blob([input]), "in.jsonl");
  const file = await (await fetch(`${foreman.url}/v1/files`, { method: "POST", body: form })).json();
  const body = JSON.stringify({ input_file_id: file.id, endpoint: "/v1/chat/completions", completion_window: "24h" });
  return (await (await fetch(`${foreman.url}/v1/batches`, { method: "POST", body })).json()).id;
}

const batchOf = async (foreman: ForemanProcess, id: string) => (await fetch(`${foreman.url}/v1/batches/${id}`)).json();

test("/healthz answers while 50,000 lines are admitted", async () => {
  const foreman = await spawnForeman(foremanEnv(fake.url, dir.path, { FOREMAN_DB: join(dir.path, "health.db") }));
  try {
    const id = await createBatch(foreman);
    let worst = 0;
    let status = "validating";
    while (status === "validating") {
      const started = performance.now();
      expect((await fetch(`${foreman.url}/healthz`)).status).toBe(200);
      worst = Math.max(worst, performance.now() - started);
      status = (await batchOf(foreman, id)).status;
      await Bun.sleep(10);
    }
    expect(status).toBe("in_progress");
    expect((await batchOf(foreman, id)).request_counts.total).toBe(LINES);
    if (process.env.UPLOADS_REPORT) console.log({ worstHealthzMs: worst });
    // Measured: under 30 ms (main: 2 s, the whole admission in one transaction). Generous: the machine is shared.
    expect(worst).toBeLessThan(1500);
  } finally {
    foreman.process.kill("SIGKILL");
    await foreman.process.exited;
  }
});

test("a kill -9 mid-admission neither loses nor repeats a line: the restart resumes after the last slice", async () => {
  const dbPath = join(dir.path, "kill.db");
  const env = foremanEnv(fake.url, dir.path, { FOREMAN_DB: dbPath });
  let foreman = await spawnForeman(env);
  try {
    const id = await createBatch(foreman);
    await until(async () => (await batchOf(foreman, id)).request_counts.total > 0, 30_000, "a first slice");
    const before = await batchOf(foreman, id);
    foreman.process.kill("SIGKILL");
    await foreman.process.exited;
    expect(before.status).toBe("validating");
    expect(before.request_counts.total).toBeLessThan(LINES);
    foreman = await spawnForeman({ ...env, FOREMAN_LISTEN: new URL(foreman.url).host });
    await until(async () => (await batchOf(foreman, id)).status !== "validating", 60_000, "the admission to end");
    expect((await batchOf(foreman, id)).request_counts.total).toBe(LINES);
    const db = new Database(dbPath, { readonly: true });
    try {
      expect(db.query<{ n: number }, []>("SELECT count(*) AS n FROM jobs WHERE source = 'batch'").get()!.n).toBe(LINES);
    } finally {
      db.close();
    }
  } finally {
    foreman.process.kill("SIGKILL");
    await foreman.process.exited;
  }
});
