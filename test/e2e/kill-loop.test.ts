// Slow: kill -9 at random moments, over and over, while a client submits jobs. Every job the client
// got a 2xx for must reach a terminal state, the database must stay intact, and no job may run more
// often than the kills that interrupted a job can explain.
import { afterAll, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { join } from "node:path";
import { seededRandom } from "../../bench/stats";
import { FakeOllama } from "../fake-ollama";
import { type ForemanProcess, foremanEnv, freePort, spawnForeman, tempDir, until } from "../harness";

const KILLS = 20;
const fake = new FakeOllama({ tokenDelayMs: 15, loadDelayMs: 30 }).start();
const dir = tempDir();
let foreman: ForemanProcess | undefined;

afterAll(async () => {
  foreman?.process.kill(9);
  await fake.stop();
  dir.cleanup();
});

test(`${KILLS} kill -9s at random moments lose no acknowledged job`, async () => {
  const random = seededRandom(7);
  const port = await freePort();
  const env = foremanEnv(fake.url, dir.path, {
    FOREMAN_DB: join(dir.path, "kill.db"),
    FOREMAN_LISTEN: `127.0.0.1:${port}`,
    FOREMAN_MAX_ATTEMPTS: "10",
  });
  const url = `http://127.0.0.1:${port}`;
  const acknowledged = new Set<string>();
  let submitting = true;
  let sequence = 0;

  // The client: submits steadily, keeps every id it got a 2xx for, shrugs off refused connections.
  const client = (async () => {
    while (submitting) {
      const n = sequence++;
      try {
        const response = await fetch(`${url}/jobs`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({
            type: "chat",
            request: { model: n % 2 ? "llama3.2" : "qwen3", messages: [{ role: "user", content: `job-${n} a b` }] },
          }),
        });
        if (response.ok) acknowledged.add(((await response.json()) as { id: string }).id);
      } catch {
        await Bun.sleep(20);
      }
      await Bun.sleep(15);
    }
  })();

  // A job the database still holds as loading or working when foreman dies runs again after the
  // restart; nothing else may. Counted from the database, not from the fake: a kill that lands after
  // Ollama's last line but before foreman records the job done repeats it too.
  let interrupted = 0;
  const countInterrupted = () => {
    const db = new Database(env.FOREMAN_DB!, { readonly: true });
    interrupted += db.query<{ n: number }, []>("SELECT count(*) AS n FROM jobs WHERE state IN ('loading', 'working')").get()!.n;
    db.close();
  };
  for (let kill = 0; kill < KILLS; kill++) {
    foreman = await spawnForeman(env);
    await Bun.sleep(100 + Math.floor(random() * 400));
    foreman.process.kill(9);
    await foreman.process.exited;
    countInterrupted();
  }
  foreman = await spawnForeman(env);
  submitting = false;
  await client;

  const db = new Database(env.FOREMAN_DB!, { readonly: true });
  const terminal = () =>
    db.query<{ n: number }, []>("SELECT count(*) AS n FROM jobs WHERE state NOT IN ('done', 'failed', 'canceled')").get()!.n ===
    0;
  await until(terminal, 120_000, "every job to finish");
  const states = new Map(
    db
      .query<{ id: string; state: string }, []>("SELECT id, state FROM jobs")
      .all()
      .map((r) => [r.id, r.state]),
  );
  expect(db.query<{ integrity_check: string }, []>("PRAGMA integrity_check").get()!.integrity_check).toBe("ok");
  db.close();

  expect(acknowledged.size).toBeGreaterThan(KILLS);
  const lost = [...acknowledged].filter((id) => !states.has(id));
  expect(lost).toEqual([]);
  expect([...acknowledged].every((id) => ["done", "failed", "canceled"].includes(states.get(id)!))).toBe(true);

  // Executions per job, as Ollama saw them: a repeat is a job a kill interrupted.
  const runs = new Map<string, number>();
  for (const seen of fake.seen) {
    const tag = /job-\d+/.exec((seen.body.messages as { content: string }[])[0]!.content)![0];
    runs.set(tag, (runs.get(tag) ?? 0) + 1);
  }
  const repeats = [...runs.values()].reduce((sum, n) => sum + n - 1, 0);
  expect(repeats).toBeLessThanOrEqual(interrupted);
  expect(fake.maxInFlight).toBe(1);
  foreman.process.kill("SIGTERM");
  await foreman.process.exited;
}, 300_000);
