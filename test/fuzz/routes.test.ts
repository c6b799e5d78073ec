// A seeded short fuzz run over every declared route (test/fuzz/engine.ts), in this process and against
// the compiled binary; `bun run fuzz` runs the long one (100,000 cases each).
import { afterEach, expect, test } from "bun:test";
import { join } from "node:path";
import { FakeOllama } from "../fake-ollama";
import { foremanEnv, spawnForeman, type Stack, startStack, tempDir } from "../harness";
import { auditDatabase, fuzz } from "./engine";

const SEED = 20261127;
let cleanup: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const step of cleanup.reverse()) await step();
  cleanup = [];
});

/** Lets every job the run queued reach its end, so the audit reads a still database. */
async function settle(url: string) {
  for (let i = 0; i < 400; i++) {
    const queue = (await (await fetch(`${url}/queue`)).json()) as { depth: number; running: unknown };
    if (queue.depth === 0 && queue.running === null) return;
    await Bun.sleep(25);
  }
}

function expectClean(result: Awaited<ReturnType<typeof fuzz>>, dbPath: string) {
  expect(result.violations).toEqual([]);
  expect(result.ledger.ids.size).toBeGreaterThan(0); // Some requests were accepted: the run reached the queue.
  const audit = auditDatabase(dbPath, result.ledger);
  expect(audit).toEqual({ unannounced: [], missing: [], integrity: "ok", countsMatch: true });
}

test("fuzz in process: no 5xx, no hang, JSON errors; the queue holds exactly the announced jobs", async () => {
  const stack: Stack = await startStack({ env: { FOREMAN_MAX_BODY: String(16 * 1024 * 1024) } });
  cleanup.push(() => stack.stop());
  const result = await fuzz(stack.foreman.url, { numRuns: 400, seed: SEED });
  await settle(stack.foreman.url);
  expectClean(result, stack.dbPath);
}, 120_000);

test("fuzz the compiled binary: the same, and the process is still up", async () => {
  const fake = new FakeOllama().start();
  const dir = tempDir();
  const env = foremanEnv(fake.url, dir.path, { FOREMAN_MAX_BODY: String(16 * 1024 * 1024) });
  const foreman = await spawnForeman(env);
  cleanup.push(
    () => dir.cleanup(),
    () => fake.stop(),
    async () => {
      foreman.process.kill("SIGTERM");
      await foreman.process.exited;
    },
  );
  const result = await fuzz(foreman.url, { numRuns: 300, seed: SEED + 1, big: false });
  await settle(foreman.url);
  expect(foreman.process.exitCode).toBeNull();
  expect((await fetch(`${foreman.url}/healthz`)).status).toBe(200);
  expectClean(result, join(dir.path, "foreman.db"));
}, 120_000);
