// `bun run try [--no-burst] [--db PATH]`: foreman without an Ollama. Starts the fake Ollama the tests use
// (test/fake-ollama.ts: one simulated GPU, one model resident at a time, a load delay per swap, a delay
// per token) and `bun src/main.ts serve` in front of it, prints the dashboard's address and commands to
// paste, and sends a burst of jobs for three models so the queue, the dashboard and a drain model by model
// can be watched. Ctrl-C stops both. FOREMAN_LISTEN (default 127.0.0.1:8080) and other FOREMAN_*
// variables are passed on; the database is a throwaway one unless --db names one.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { FakeOllama } from "../test/fake-ollama";

/** The fake's models: small ones, each slower to load than the last, so the drain's choices show. */
export const TRY_MODELS = {
  "llama3.2:1b": { loadMs: 1000, tokenMs: 60 },
  "qwen3:0.6b": { loadMs: 2000, tokenMs: 60 },
  "gemma3:1b": { loadMs: 3000, tokenMs: 60 },
};
const MODELS = Object.keys(TRY_MODELS);

const USAGE = "usage: bun run try [--no-burst] [--db PATH]";

let args;
try {
  args = parseArgs({ options: { "no-burst": { type: "boolean" }, db: { type: "string" }, help: { type: "boolean" } } }).values;
} catch (error) {
  console.error(`try: ${(error as Error).message}\n${USAGE}`);
  process.exit(2);
}
if (args.help) {
  console.log(USAGE);
  process.exit(0);
}

const fake = new FakeOllama({ models: MODELS, modelDelays: TRY_MODELS, embedModels: ["all-minilm:latest"] }).start();
const scratch = args.db ? undefined : mkdtempSync(join(tmpdir(), "foreman-try-"));
const dbPath = args.db ?? join(scratch!, "foreman.db");
const token = process.env.FOREMAN_TOKEN?.trim() || undefined;

// Its own process group (detached), so a Ctrl-C in the terminal reaches only this script, which then
// stops foreman once, gracefully; a second SIGINT would kill it outright.
const foreman = spawn(process.execPath, [join(import.meta.dir, "..", "src", "main.ts"), "serve"], {
  detached: true,
  stdio: ["ignore", "pipe", "inherit"],
  env: {
    ...process.env,
    FOREMAN_LISTEN: process.env.FOREMAN_LISTEN ?? "127.0.0.1:8080",
    FOREMAN_OLLAMA_URL: fake.url,
    FOREMAN_DB: dbPath,
    FOREMAN_LOG_FORMAT: "json",
    FOREMAN_POLL_INTERVAL: "2s",
    FOREMAN_SHUTDOWN_GRACE: "1s",
  },
});

let stopping = false;
async function stop(code: number): Promise<never> {
  if (!stopping) {
    stopping = true;
    if (foreman.exitCode === null) {
      const exited = new Promise((resolve) => foreman.once("exit", resolve));
      foreman.kill("SIGINT");
      await exited;
    }
    await fake.stop();
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  }
  process.exit(code);
}
process.on("SIGINT", () => void stop(0));
process.on("SIGTERM", () => void stop(0));
foreman.on("exit", (code) => {
  if (!stopping) {
    console.error(`try: foreman exited (${code}); see its message above`);
    void stop(code || 1);
  }
});

/** Prints what a newcomer wants to see of foreman's JSON log: one line per ended job, and any warning. */
function show(line: string, ready: (url: string) => void): void {
  let entry: Record<string, unknown>;
  try {
    entry = JSON.parse(line);
  } catch {
    console.log(line);
    return;
  }
  if (entry.msg === "foreman listening") ready(String(entry.url));
  else if (entry.msg === "job ended") {
    const seconds = (ms: unknown) => `${(Number(ms) / 1000).toFixed(1)}s`;
    const swap = entry.swapped ? ", loaded the model first" : "";
    console.log(`  ${entry.outcome} ${entry.model}: waited ${seconds(entry.wait_ms)}, ran ${seconds(entry.run_ms)}${swap}`);
  } else if (entry.level === "warn" || entry.level === "error") console.log(`  ${entry.level}: ${entry.msg}`);
}

function banner(url: string): void {
  const auth = token ? ` -H "Authorization: Bearer $FOREMAN_TOKEN"` : "";
  const env = url === "http://127.0.0.1:8080" ? "" : `FOREMAN_URL=${url} `;
  console.log(`foreman is running at ${url}, in front of a fake Ollama at ${fake.url} (no GPU; database ${dbPath})
  models: ${MODELS.map((m) => `${m} (load ${TRY_MODELS[m as keyof typeof TRY_MODELS].loadMs / 1000} s)`).join(", ")}; 60 ms a token

dashboard: ${url}/ui
job API:   ${url}/swagger

try, in another terminal:
  curl${auth} ${url}/api/tags
  curl${auth} ${url}/api/generate -d '{"model": "llama3.2:1b", "prompt": "Why is the sky blue?"}'
  curl${auth} ${url}/v1/chat/completions -H 'content-type: application/json' -d '{"model": "qwen3:0.6b", "messages": [{"role": "user", "content": "Hi"}]}'
  ${env}bun src/main.ts submit --model gemma3:1b --prompt "Summarise this" --wait
  ${env}bun src/main.ts ps

Ctrl-C stops foreman and the fake.`);
}

/** Twelve jobs, the models interleaved (plus one at priority 10), through the job API. */
async function burst(url: string): Promise<void> {
  const headers = { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) };
  const jobs = Array.from({ length: 12 }, (_, i) => ({
    type: "generate",
    request: { model: MODELS[i % MODELS.length], prompt: `job ${i + 1}`, options: { num_predict: 15 + ((i * 7) % 20) } },
    ...(i === 10 ? { priority: 10 } : {}),
  }));
  for (const job of jobs) {
    const response = await fetch(`${url}/jobs`, { method: "POST", headers, body: JSON.stringify(job) });
    if (response.status !== 202) {
      console.log(`  the burst stopped: POST /jobs answered ${response.status} ${await response.text()}`);
      return;
    }
  }
  console.log(`
sent 12 jobs for ${MODELS.join(", ")}, interleaved, one at priority 10: watch ${url}/ui drain them model by model`);
}

let started = false;
let buffered = "";
foreman.stdout!.setEncoding("utf8");
foreman.stdout!.on("data", (chunk: string) => {
  buffered += chunk;
  const lines = buffered.split("\n");
  buffered = lines.pop()!;
  for (const line of lines) {
    show(line, (url) => {
      if (started) return;
      started = true;
      banner(url);
      if (!args["no-burst"]) setTimeout(() => void burst(url).catch(() => {}), 2000);
    });
  }
});
