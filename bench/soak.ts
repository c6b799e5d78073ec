// `bun run soak`: 100,000 jobs (SOAK_JOBS) through the compiled binary against an instant fake, half
// POST /jobs, half /api/chat, 20 clients at a time. The binary's RSS is sampled every 1,000 jobs and must
// be flat after warm-up (the last quarter's mean within 25% of the second quarter's); the WAL must stay
// bounded; and once the TTL pruner has run (FOREMAN_JOB_TTL 1s; it runs every minute) the database file
// must be back near its size before the run (incremental vacuum).
import { existsSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { FakeOllama } from "../test/fake-ollama";
import { machineInfo, updateReport } from "./report";
import { foremanEnv, spawnForeman, tempDir } from "../test/harness";
import { table } from "./stats";

const ROOT = join(import.meta.dir, "..");
const JOBS = Number(process.env.SOAK_JOBS ?? 100_000);
const CONCURRENCY = 20;
const SAMPLE_EVERY = 1_000;

const rssMb = (pid: number) => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))![1]) / 1024;
const sizeMb = (path: string) => (existsSync(path) ? statSync(path).size / 1024 / 1024 : 0);

async function main(): Promise<boolean> {
  const binary = join(ROOT, "dist", "foreman");
  if (!existsSync(binary)) Bun.spawnSync(["bun", "run", "build"], { cwd: ROOT, stdout: "inherit", stderr: "inherit" });
  const fake = new FakeOllama().start();
  const dir = tempDir();
  const dbPath = join(dir.path, "foreman.db");
  const foreman = await spawnForeman(
    foremanEnv(fake.url, dir.path, { FOREMAN_JOB_TTL: "1s", FOREMAN_MAX_QUEUE: "100000", FOREMAN_LOG_LEVEL: "warn" }),
    { command: [binary] },
  );
  const pid = foreman.process.pid;
  try {
    await Bun.sleep(500);
    const baselineDb = sizeMb(dbPath);
    const samples: Array<{ jobs: number; rss: number; db: number; wal: number; s: number }> = [];
    const t0 = performance.now();
    let sent = 0;
    let done = 0;
    let failures = 0;
    const chat = JSON.stringify({ model: "llama3.2", messages: [{ role: "user", content: "soak" }], stream: false });
    const job = JSON.stringify({ type: "chat", request: { model: "llama3.2", messages: [{ role: "user", content: "soak" }] } });
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (sent < JOBS) {
          const viaJobs = sent++ % 2 === 0;
          const response = await fetch(`${foreman.url}${viaJobs ? "/jobs" : "/api/chat"}`, {
            method: "POST",
            body: viaJobs ? job : chat,
          });
          await response.arrayBuffer();
          if (response.status >= 300) failures++;
          // POST /jobs answers at once: keep the queue short so the soak measures steady state, not a backlog.
          if (viaJobs && done % 200 === 0) {
            while (((await (await fetch(`${foreman.url}/queue`)).json()) as { depth: number }).depth > 1_000) await Bun.sleep(50);
          }
          if (++done % SAMPLE_EVERY === 0) {
            samples.push({
              jobs: done,
              rss: rssMb(pid),
              db: sizeMb(dbPath),
              wal: sizeMb(`${dbPath}-wal`),
              s: (performance.now() - t0) / 1000,
            });
            if (done % 10_000 === 0) console.error(`  ${done} jobs, RSS ${samples.at(-1)!.rss.toFixed(0)} MB`);
          }
        }
      }),
    );
    while (true) {
      const queue = (await (await fetch(`${foreman.url}/queue`)).json()) as { depth: number; running: unknown };
      if (queue.depth === 0 && queue.running === null) break;
      await Bun.sleep(200);
    }
    const seconds = (performance.now() - t0) / 1000;
    const peakDb = Math.max(...samples.map((x) => x.db));
    // The pruner runs at most a minute after its last run; then the freed pages are returned.
    const pruneDeadline = Date.now() + 75_000;
    while (Date.now() < pruneDeadline && sizeMb(dbPath) > baselineDb * 2 + 1) await Bun.sleep(1000);
    const finalDb = sizeMb(dbPath);
    const q = Math.floor(samples.length / 4);
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    const warm = mean(samples.slice(q, 2 * q).map((x) => x.rss));
    const last = mean(samples.slice(3 * q).map((x) => x.rss));
    const maxWal = Math.max(...samples.map((x) => x.wal));
    const flat = last <= warm * 1.25;
    // The checkpoint truncates the WAL past 32 MB once a second; a second of writes at full speed comes on
    // top (about 115 MB here, at ~700 jobs/s). Unbounded, it reached 840 MB in 100,000 jobs. Twice the usual
    // peak leaves room for a faster machine without letting a WAL that never shrinks pass.
    const walBounded = maxWal <= 256;
    const shrunk = finalDb <= baselineDb * 2 + 1;
    const every = Math.max(1, Math.ceil(samples.length / 20));
    const ok = flat && walBounded && shrunk && failures === 0;
    const text = [
      `## bun run soak: ${ok ? "ok" : "FAILED"}`,
      "",
      `Run ${new Date().toISOString()} on:`,
      "",
      machineInfo(),
      "",
      `### Soak: ${JOBS.toLocaleString("en-US")} jobs (half POST /jobs, half /api/chat), instant fake, ${CONCURRENCY} clients`,
      "",
      `${Math.round(JOBS / seconds)} jobs/s end to end; ${failures} failed requests.`,
      "",
      table(
        ["jobs", "s", "RSS MB", "db MB", "wal MB"],
        samples
          .filter((_, i) => i % every === 0 || i === samples.length - 1)
          .map((x) => [x.jobs, x.s.toFixed(0), x.rss.toFixed(0), x.db.toFixed(1), x.wal.toFixed(1)]),
      ),
      "",
      `RSS after warm-up: ${warm.toFixed(0)} MB (second quarter) → ${last.toFixed(0)} MB (last quarter): ${flat ? "flat" : "GROWING"}`,
      `WAL at most ${maxWal.toFixed(1)} MB: ${walBounded ? "bounded" : "UNBOUNDED"}`,
      `database: ${baselineDb.toFixed(2)} MB before, ${peakDb.toFixed(1)} MB at most, ${finalDb.toFixed(2)} MB after pruning: ${shrunk ? "back to baseline" : "NOT SHRUNK"}`,
    ].join("\n");
    console.log(text);
    updateReport("soak", text);
    return ok;
  } finally {
    foreman.process.kill("SIGTERM");
    await foreman.process.exited;
    await fake.stop();
    dir.cleanup();
  }
}

if (import.meta.main) process.exit((await main()) ? 0 : 1);
