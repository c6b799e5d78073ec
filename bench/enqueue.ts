// The job API under load and at depth, against the compiled binary and an instant fake: POST /jobs at
// concurrency 50 (the worker runs the jobs meanwhile), GET /queue and a job view, RSS, from an empty queue and
// with 100,000 more queued (inserted behind the server's back at priority -1, so the worker serves the
// posted jobs first and drains the deep queue only slowly meanwhile), and the time from start to healthy.
import { Database } from "bun:sqlite";
import { monotonicFactory } from "ulid";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { FakeOllama } from "../test/fake-ollama";
import { foremanEnv, freePort, tempDir } from "../test/harness";
import { median, quantile, table, targets } from "./stats";

const ROOT = join(import.meta.dir, "..");
const POSTS = 5_000;
const CONCURRENCY = 50;
const DEEP = 100_000;

const rssMb = (pid: number) => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))![1]) / 1024;

/**
 * Starts the binary as users run it (the default log level and format, stdout a pipe, read here and
 * dropped) and polls /healthz every 2 ms: the time from spawn to the first 200.
 */
async function start(env: Record<string, string>) {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const t0 = performance.now();
  const { FOREMAN_LOG_LEVEL: _level, ...defaults } = env;
  const child = Bun.spawn([join(ROOT, "dist", "foreman"), "serve"], {
    env: { ...process.env, ...defaults, FOREMAN_LISTEN: `127.0.0.1:${port}` },
    stdout: "pipe",
    stderr: "inherit",
  });
  void (async () => {
    for await (const _ of child.stdout) {
      // Drained, so that a full pipe never blocks foreman's log writes.
    }
  })();
  for (;;) {
    try {
      if ((await fetch(`${url}/healthz`)).ok) break;
    } catch {
      // Not listening yet.
    }
    if (child.exitCode !== null) throw new Error(`foreman exited with ${child.exitCode}`);
    await Bun.sleep(2);
  }
  return { url, child, startMs: performance.now() - t0 };
}

async function postJobs(url: string) {
  const body = JSON.stringify({ type: "chat", request: { model: "llama3.2", messages: [{ role: "user", content: "hi" }] } });
  const latencies: number[] = [];
  let next = 0;
  let ids: string[] = [];
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next++ < POSTS) {
        const t = performance.now();
        const response = await fetch(`${url}/jobs`, { method: "POST", body });
        const job = (await response.json()) as { id: string };
        latencies.push(performance.now() - t);
        if (response.status !== 202) throw new Error(`POST /jobs: ${response.status} ${JSON.stringify(job)}`);
        ids.push(job.id);
      }
    }),
  );
  const rate = POSTS / ((performance.now() - t0) / 1000);
  ids = ids.slice(-100);
  return { rate, p50: median(latencies), p99: quantile(latencies, 0.99), ids };
}

async function timeGets(url: string, paths: string[]) {
  const samples: number[] = [];
  for (let round = 0; round < 3; round++) {
    for (const path of paths) {
      const t = performance.now();
      const response = await fetch(`${url}${path}`);
      await response.arrayBuffer();
      samples.push(performance.now() - t);
    }
  }
  return { p50: median(samples), p99: quantile(samples, 0.99) };
}

/** Queues `n` jobs straight into the database at priority -1, older than any posted job; returns their ids. */
function prefill(dbPath: string, n: number): string[] {
  const ulid = monotonicFactory();
  const ids: string[] = [];
  const db = new Database(dbPath);
  db.run("PRAGMA busy_timeout = 5000");
  const insert = db.query(
    `INSERT INTO jobs (id, type, model, model_key, request, source, state, priority, attempts, max_attempts, run_after, created_at)
     VALUES (?, 'chat', ?, ?, '{"model":"llama3.2","messages":[]}', 'jobs', 'queued', -1, 0, 3, ?, ?)`,
  );
  const now = Date.now();
  for (let done = 0; done < n; done += 10_000) {
    db.transaction(() => {
      for (let i = done; i < Math.min(n, done + 10_000); i++) {
        const model = ["llama3.2", "qwen3", "mistral"][i % 3]!;
        const id = ulid();
        ids.push(id);
        insert.run(id, model, `${model}:latest`, now, now);
      }
    }).immediate();
  }
  db.close();
  return ids;
}

export async function benchEnqueue(): Promise<string> {
  if (!existsSync(join(ROOT, "dist", "foreman"))) Bun.spawnSync(["bun", "run", "build"], { cwd: ROOT, stdout: "ignore" });
  const fake = new FakeOllama().start();
  const dir = tempDir();
  const env = foremanEnv(fake.url, dir.path, { FOREMAN_MAX_QUEUE: String(DEEP * 2), FOREMAN_POLL_INTERVAL: "1h" });
  const starts: number[] = [];
  // Start-up: the median of five starts on a fresh database.
  for (let i = 0; i < 5; i++) {
    const fresh = tempDir();
    const { child, startMs } = await start({ ...env, FOREMAN_DB: join(fresh.path, "foreman.db") });
    starts.push(startMs);
    child.kill("SIGTERM");
    await child.exited;
    fresh.cleanup();
  }
  const { url, child } = await start(env);
  try {
    await Bun.sleep(1000);
    const idleRss = rssMb(child.pid);
    const rows: (string | number)[][] = [];
    const rates: number[] = [];
    for (const depth of ["empty", "deep"] as const) {
      const deepIds = depth === "deep" ? prefill(env.FOREMAN_DB!, DEEP) : [];
      const queued = ((await (await fetch(`${url}/queue`)).json()) as { depth: number }).depth;
      const posts = await postJobs(url);
      const queue = await timeGets(
        url,
        Array.from({ length: 100 }, () => "/queue"),
      );
      // Views of the jobs just posted; in the deep case also of jobs in the middle of the 100,000 (the costliest).
      const view = await timeGets(
        url,
        posts.ids.map((id) => `/jobs/${id}`),
      );
      const middle =
        depth === "deep"
          ? await timeGets(
              url,
              Array.from({ length: 20 }, (_, i) => `/jobs/${deepIds[DEEP / 2 + i * 100]}`),
            )
          : undefined;
      rates.push(posts.rate);
      const rss = rssMb(child.pid);
      if (depth === "deep") {
        const worstView = Math.max(view.p50, middle!.p50);
        targets.push(
          {
            target: "POST /jobs at concurrency 50, empty queue",
            figure: `${Math.round(rates[0]!)}/s`,
            goal: "≥ 5,000/s",
            met: rates[0]! >= 5000,
          },
          {
            target: "POST /jobs, 100,000 queued vs empty",
            figure: `${Math.round((posts.rate / rates[0]!) * 100)}%`,
            goal: "within 20%",
            met: posts.rate >= rates[0]! * 0.8,
          },
          {
            target: "GET /queue p50 at 100,000 queued",
            figure: `${queue.p50.toFixed(2)} ms`,
            goal: "≤ 2 ms",
            met: queue.p50 <= 2,
          },
          {
            target: "job view p50 at 100,000 queued (worst of back, middle)",
            figure: `${worstView.toFixed(2)} ms`,
            goal: "≤ 2 ms",
            met: worstView <= 2,
          },
          { target: "RSS with 100,000 queued", figure: `${rss.toFixed(0)} MB`, goal: "≤ 150 MB", met: rss <= 150 },
        );
      }
      rows.push([
        depth === "empty" ? "empty queue" : `${queued.toLocaleString("en-US")} queued`,
        Math.round(posts.rate).toLocaleString("en-US"),
        posts.p50.toFixed(2),
        posts.p99.toFixed(2),
        queue.p50.toFixed(2),
        view.p50.toFixed(2),
        view.p99.toFixed(2),
        middle ? middle.p50.toFixed(2) : "",
        rss.toFixed(0),
      ]);
    }
    const start = median(starts);
    targets.push(
      { target: "RSS idle", figure: `${idleRss.toFixed(0)} MB`, goal: "≤ 60 MB", met: idleRss <= 60 },
      { target: "start to healthy", figure: `${start.toFixed(0)} ms`, goal: "≤ 150 ms", met: start <= 150 },
    );
    return [
      `### Job API at depth: ${POSTS.toLocaleString("en-US")} POST /jobs at concurrency ${CONCURRENCY} (the worker runs them meanwhile), GET /queue and a job view (sequential, 300 each)`,
      "",
      table(
        [
          "queue before",
          "POST /jobs/s",
          "POST p50 ms",
          "POST p99 ms",
          "GET /queue p50 ms",
          "job view p50 ms",
          "job view p99 ms",
          "view mid-queue p50 ms",
          "RSS MB",
        ],
        rows,
      ),
      "",
      `RSS idle (empty queue, a second after start): ${idleRss.toFixed(0)} MB. Start to healthy (fresh database, median of 5): ${median(starts).toFixed(0)} ms.`,
    ].join("\n");
  } finally {
    child.kill("SIGTERM");
    await child.exited;
    await fake.stop();
    dir.cleanup();
  }
}

if (import.meta.main) console.log(await benchEnqueue());
