// `bun run fuzz`: the long fuzz run, 100,000 cases (FUZZ_CASES) against foreman in this process and as
// the compiled binary (built first when dist/foreman is missing), each followed by the database audit.
// Exits 1 on any violation. The seeded short run of the same engine is test/fuzz/routes.test.ts.
import { existsSync } from "node:fs";
import { join } from "node:path";
import { FakeOllama } from "../test/fake-ollama";
import { foremanEnv, spawnForeman, startStack, tempDir } from "../test/harness";
import { auditDatabase, fuzz } from "../test/fuzz/engine";
import { machineInfo, updateReport } from "./report";

const CASES = Number(process.env.FUZZ_CASES ?? 100_000);
const SEED = Number(process.env.FUZZ_SEED ?? Date.now() % 1_000_000);
const ROOT = join(import.meta.dir, "..");
const MAX_BODY = String(16 * 1024 * 1024);
/** FUZZ_TARGETS: "process", "binary" or both (default). */
const TARGETS = (process.env.FUZZ_TARGETS ?? "process,binary").split(",");
let failed = false;
const report: string[] = [];
/** Prints a line and keeps it for docs/benchmarks.md. */
const say = (line: string) => (console.log(line), report.push(line));

async function settle(url: string) {
  for (let i = 0; i < 2400; i++) {
    const queue = (await (await fetch(`${url}/queue`)).json()) as { depth: number; running: unknown };
    if (queue.depth === 0 && queue.running === null) return;
    await Bun.sleep(25);
  }
}

async function run(name: string, url: string, dbPath: string, seed: number, fake: FakeOllama) {
  const start = performance.now();
  const result = await fuzz(url, {
    numRuns: CASES,
    seed,
    onProgress: (done) => {
      // The fake keeps every request it saw, for tests; a long run does not need them.
      fake.seen.length = 0;
      fake.requests.length = 0;
      if (done % 10_000 === 0) console.error(`  ${name}: ${done} cases`);
    },
  });
  await settle(url);
  const audit = auditDatabase(dbPath, result.ledger);
  const seconds = (performance.now() - start) / 1000;
  const ok =
    result.violations.length === 0 &&
    !audit.unannounced.length &&
    !audit.missing.length &&
    audit.integrity === "ok" &&
    audit.countsMatch;
  failed ||= !ok;
  say(`### ${name}: ${ok ? "ok" : "FAILED"} (seed ${seed}, ${result.cases} cases in ${seconds.toFixed(0)} s)`);
  say("");
  say(`statuses: \`${JSON.stringify(result.statuses)}\`; jobs accepted: ${result.ledger.ids.size}`);
  say("");
  say(
    `audit: ${audit.unannounced.length} jobs nobody was told of, ${audit.missing.length} announced but missing, integrity ${audit.integrity}, counts ${audit.countsMatch ? "match" : "DIFFER"}`,
  );
  say("");
  for (const v of result.violations) say(`- violation: ${v}`);
}

say(`## bun run fuzz: ${CASES} cases per target, seed ${SEED} (FUZZ_SEED to replay)`);
say("");
say(machineInfo());
say("");
if (TARGETS.includes("process")) {
  const stack = await startStack({ env: { FOREMAN_MAX_BODY: MAX_BODY, FOREMAN_LOG_LEVEL: "error" } });
  try {
    await run("in process", stack.foreman.url, stack.dbPath, SEED, stack.fake);
  } finally {
    await stack.stop();
  }
}
if (TARGETS.includes("binary")) {
  const binary = join(ROOT, "dist", "foreman");
  if (!existsSync(binary)) Bun.spawnSync(["bun", "run", "build"], { cwd: ROOT, stdout: "inherit", stderr: "inherit" });
  const fake = new FakeOllama().start();
  const dir = tempDir();
  const foreman = await spawnForeman(foremanEnv(fake.url, dir.path, { FOREMAN_MAX_BODY: MAX_BODY, FOREMAN_LOG_LEVEL: "error" }), {
    command: [binary],
  });
  try {
    await run("compiled binary", foreman.url, join(dir.path, "foreman.db"), SEED + 1, fake);
    const alive = foreman.process.exitCode === null && (await fetch(`${foreman.url}/healthz`)).ok;
    if (!alive) ((failed = true), say("the binary is no longer up"));
  } finally {
    foreman.process.kill("SIGTERM");
    await foreman.process.exited;
    await fake.stop();
    dir.cleanup();
  }
}
updateReport("fuzz", report.join("\n"));
process.exit(failed ? 1 : 0);
