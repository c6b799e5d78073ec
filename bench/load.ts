// `bun run load`: many clients at once against the compiled binary, outside the unit tests.
//   1. 2,000 concurrent streaming clients, half on /api/chat (NDJSON), half on /v1/chat/completions (SSE),
//      against a slow fake (a delay per token). The first job meets a model load of LOAD_HOLD (default 35 s,
//      past every idle timeout of Bun's); every other client waits behind it in the queue without a byte.
//      Every client must get its complete stream (the done record, or data: [DONE]).
//   2. 10,000 POST /jobs at concurrency 50: the rate, and every one accepted.
// RSS (VmRSS of the binary) is sampled every second and printed over time.
// `bun run load --long` holds the clients 40 minutes; LOAD_CLIENTS and LOAD_JOBS change the counts.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { FakeOllama } from "../test/fake-ollama";
import { machineInfo, updateReport } from "./report";
import { foremanEnv, spawnForeman, tempDir } from "../test/harness";
import { median, quantile, table } from "./stats";

const ROOT = join(import.meta.dir, "..");
const LONG = process.argv.includes("--long");
const HOLD_MS = Number(process.env.LOAD_HOLD_MS ?? (LONG ? 40 * 60_000 : 35_000));
const CLIENTS = Number(process.env.LOAD_CLIENTS ?? 2_000);
const JOBS = Number(process.env.LOAD_JOBS ?? 10_000);
const JOB_CONCURRENCY = 50;

function rssMb(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]) / 1024;
}

/** One streaming client: true when its stream ended with the API's final record. */
async function streamingClient(url: string, i: number): Promise<{ ok: boolean; why?: string; ms: number }> {
  const start = performance.now();
  const openai = i % 2 === 1;
  const path = openai ? "/v1/chat/completions" : "/api/chat";
  const body = openai
    ? { model: "llama3.2", stream: true, messages: [{ role: "user", content: `client ${i} says hello` }] }
    : { model: "llama3.2", messages: [{ role: "user", content: `client ${i} says hello` }] };
  try {
    const response = await fetch(`${url}${path}`, { method: "POST", body: JSON.stringify(body) });
    const text = await response.text();
    const ms = performance.now() - start;
    if (response.status !== 200) return { ok: false, why: `${response.status} ${text.slice(0, 120)}`, ms };
    const complete = openai ? text.trimEnd().endsWith("data: [DONE]") : text.trimEnd().split("\n").pop()!.includes('"done":true');
    return complete ? { ok: true, ms } : { ok: false, why: `incomplete: …${text.slice(-120)}`, ms };
  } catch (error) {
    return { ok: false, why: `connection: ${(error as Error).message}`, ms: performance.now() - start };
  }
}

async function main() {
  const binary = join(ROOT, "dist", "foreman");
  if (!existsSync(binary)) Bun.spawnSync(["bun", "run", "build"], { cwd: ROOT, stdout: "inherit", stderr: "inherit" });
  // The model is not resident: the first generation loads it for HOLD_MS, and everyone queues behind it.
  const fake = new FakeOllama({ tokenDelayMs: 1, loadDelayMs: HOLD_MS }).start();
  const dir = tempDir();
  const foreman = await spawnForeman(
    foremanEnv(fake.url, dir.path, {
      FOREMAN_MAX_QUEUE: String(CLIENTS + JOBS + 100),
      // Every streaming client holds a request open for the whole run: past the default bound on open
      // requests (1024) they would get 503s, which is the bound working, not what this load measures.
      FOREMAN_MAX_CONNECTIONS: String(CLIENTS + 1000),
      FOREMAN_POLL_INTERVAL: "1h",
      FOREMAN_LOG_LEVEL: "warn",
      FOREMAN_STALL_TIMEOUT: LONG ? "0" : "5m",
      FOREMAN_JOB_TIMEOUT: "0",
    }),
    { command: [binary] },
  );
  const pid = foreman.process.pid;
  const samples: Array<[number, number, string]> = [];
  const t0 = performance.now();
  let phase = "idle";
  const sampler = setInterval(() => samples.push([(performance.now() - t0) / 1000, rssMb(pid), phase]), 1000);
  samples.push([0, rssMb(pid), phase]);
  const lines: string[] = [];
  try {
    // 1. Streaming clients.
    phase = "streams";
    const holdArrived = fake.nextArrival();
    const first = streamingClient(foreman.url, 0);
    await holdArrived;
    fake.loadDelayMs = 0; // Only the first load is slow; the clients behind it are served warm.
    const rest = Array.from({ length: CLIENTS - 1 }, (_, i) => streamingClient(foreman.url, i + 1));
    const results = await Promise.all([first, ...rest]);
    const failed = results.filter((r) => !r.ok);
    const waits = results.map((r) => r.ms / 1000);
    lines.push(
      `### Load: ${CLIENTS.toLocaleString("en-US")} concurrent streaming clients (half NDJSON /api/chat, half SSE /v1/chat/completions)`,
      "",
      `The first job met a ${(HOLD_MS / 1000).toFixed(0)} s model load; every client waited behind it without a byte, then streamed (1 ms per token).`,
      "",
      table(
        ["clients", "complete streams", "failed", "median s to complete", "slowest s"],
        [[CLIENTS, CLIENTS - failed.length, failed.length, median(waits).toFixed(1), Math.max(...waits).toFixed(1)]],
      ),
    );
    for (const f of failed.slice(0, 5)) lines.push(`- failed: ${f.why}`);

    // 2. POST /jobs.
    phase = "jobs";
    fake.tokenDelayMs = 0;
    let next = 0;
    let accepted = 0;
    const latencies: number[] = [];
    const body = JSON.stringify({ type: "chat", request: { model: "llama3.2", messages: [{ role: "user", content: "batch" }] } });
    const start = performance.now();
    await Promise.all(
      Array.from({ length: JOB_CONCURRENCY }, async () => {
        while (next++ < JOBS) {
          const t = performance.now();
          const response = await fetch(`${foreman.url}/jobs`, { method: "POST", body });
          await response.arrayBuffer();
          latencies.push(performance.now() - t);
          if (response.status === 202) accepted++;
        }
      }),
    );
    const seconds = (performance.now() - start) / 1000;
    lines.push(
      "",
      `### Load: ${JOBS.toLocaleString("en-US")} POST /jobs at concurrency ${JOB_CONCURRENCY}`,
      "",
      table(
        ["accepted", "jobs/s", "p50 ms", "p99 ms"],
        [[accepted, Math.round(JOBS / seconds), median(latencies).toFixed(2), quantile(latencies, 0.99).toFixed(2)]],
      ),
    );
    phase = "drain";
    while (true) {
      const queue = (await (await fetch(`${foreman.url}/queue`)).json()) as { depth: number; running: unknown };
      if (queue.depth === 0 && queue.running === null) break;
      await Bun.sleep(500);
    }
    phase = "idle";
    await Bun.sleep(2000);
    clearInterval(sampler);
    samples.push([(performance.now() - t0) / 1000, rssMb(pid), "end"]);
    const every = Math.max(1, Math.ceil(samples.length / 20));
    lines.push(
      "",
      "### Load: RSS of the binary over time",
      "",
      table(
        ["s", "phase", "RSS MB"],
        samples
          .filter((_, i) => i % every === 0 || i === samples.length - 1)
          .map(([s, mb, p]) => [s.toFixed(0), p, mb.toFixed(0)]),
      ),
      "",
      `peak RSS ${Math.max(...samples.map(([, mb]) => mb)).toFixed(0)} MB`,
    );
    const ok = failed.length === 0 && accepted === JOBS;
    const text = [
      `## bun run load${LONG ? " --long" : ""}: ${ok ? "ok" : "FAILED"}`,
      "",
      `Run ${new Date().toISOString()} on:`,
      "",
      machineInfo(),
      "",
      ...lines,
    ].join("\n");
    console.log(text);
    updateReport("load", text);
    return ok;
  } finally {
    clearInterval(sampler);
    foreman.process.kill("SIGTERM");
    await foreman.process.exited;
    await fake.stop();
    dir.cleanup();
  }
}

if (import.meta.main) process.exit((await main()) ? 0 : 1);
