// What foreman adds over calling Ollama directly: latency (non-streaming, instant fake) and the rate
// at which streamed chunks are relayed. Both paths are measured in the same run, interleaved.
import { join } from "node:path";
import { foremanEnv, spawnForeman, tempDir } from "../test/harness";
import { median, quantile, table } from "./stats";

const LATENCY_ROUNDS = 10;
const LATENCY_PER_ROUND = 100;
/** Stream lengths: a short one shows the fixed cost per request, a long one the relay's throughput. */
const RELAY_TOKENS = [2_000, 20_000];
const RELAY_ROUNDS = 5;

async function timeRequest(url: string, body: string): Promise<number> {
  const start = performance.now();
  const response = await fetch(`${url}/api/chat`, { method: "POST", body });
  await response.arrayBuffer();
  if (!response.ok) throw new Error(`HTTP ${response.status}`);
  return performance.now() - start;
}

const rate = (v: number) => Math.round(v).toLocaleString("en-US");

async function relayRate(url: string, body: string): Promise<number> {
  const start = performance.now();
  const response = await fetch(`${url}/api/chat`, { method: "POST", body });
  let lines = 0;
  for await (const chunk of response.body!) for (const byte of chunk) if (byte === 10) lines++;
  return lines / ((performance.now() - start) / 1000);
}

/** The fake in a process of its own, so neither path shares a thread with it. */
async function startFakeProcess() {
  const child = Bun.spawn(["bun", join(import.meta.dir, "..", "test", "fake-ollama-main.ts")], {
    stdout: "pipe",
    stderr: "inherit",
  });
  const reader = child.stdout.getReader();
  const { value } = await reader.read();
  const port = Number(new TextDecoder().decode(value).trim());
  return { url: `http://127.0.0.1:${port}`, stop: () => child.kill() };
}

export async function benchOverhead(): Promise<string> {
  const fake = await startFakeProcess();
  const dir = tempDir();
  const foreman = await spawnForeman(foremanEnv(fake.url, dir.path, { FOREMAN_POLL_INTERVAL: "1h" }));
  try {
    const small = JSON.stringify({ model: "llama3.2", messages: [{ role: "user", content: "hi" }], stream: false });
    const direct: number[] = [];
    const via: number[] = [];
    for (let i = 0; i < 50; i++) (await timeRequest(fake.url, small), await timeRequest(foreman.url, small)); // warm-up
    for (let round = 0; round < LATENCY_ROUNDS; round++) {
      for (let i = 0; i < LATENCY_PER_ROUND; i++) direct.push(await timeRequest(fake.url, small));
      for (let i = 0; i < LATENCY_PER_ROUND; i++) via.push(await timeRequest(foreman.url, small));
    }
    const relayRows: string[][] = [];
    for (const tokens of RELAY_TOKENS) {
      const long = JSON.stringify({
        model: "llama3.2",
        messages: [{ role: "user", content: "go" }],
        options: { num_predict: tokens },
      });
      const directRates: number[] = [];
      const viaRates: number[] = [];
      for (let round = 0; round < RELAY_ROUNDS; round++) {
        directRates.push(await relayRate(fake.url, long));
        viaRates.push(await relayRate(foreman.url, long));
      }
      const ratio = `${Math.round((median(viaRates) / median(directRates)) * 100)}%`;
      relayRows.push([(tokens + 1).toLocaleString("en-US"), rate(median(directRates)), rate(median(viaRates)), ratio]);
    }
    const ms = (v: number) => v.toFixed(3);
    return [
      `### Overhead: foreman vs the target called directly (${direct.length} sequential non-streaming chats each, instant fake)`,
      "",
      table(
        ["path", "p50 ms", "p99 ms"],
        [
          ["direct", ms(median(direct)), ms(quantile(direct, 0.99))],
          ["via foreman", ms(median(via)), ms(quantile(via, 0.99))],
          ["added by foreman", ms(median(via) - median(direct)), ms(quantile(via, 0.99) - quantile(direct, 0.99))],
        ],
      ),
      "",
      `### Streamed relay: chunks per second over one stream, median of ${RELAY_ROUNDS} (fake in its own process, no token delay)`,
      "",
      table(["chunks per stream", "direct chunks/s", "via foreman chunks/s", "foreman vs direct"], relayRows),
      "",
      "The short stream carries foreman's fixed cost per request (queue write, two thread hops, claim); the long one shows the relay's throughput.",
    ].join("\n");
  } finally {
    foreman.process.kill("SIGTERM");
    await foreman.process.exited;
    fake.stop();
    dir.cleanup();
  }
}
