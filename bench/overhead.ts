// What foreman adds over calling Ollama directly: latency (non-streaming, instant fake) and the rate
// at which streamed chunks are relayed. Both paths are measured in the same run, interleaved.
import { join } from "node:path";
import { foremanEnv, spawnForeman, tempDir } from "../test/harness";
import { median, quantile, table, targets } from "./stats";

const LATENCY_ROUNDS = 10;
const LATENCY_PER_ROUND = 100;
/** Stream lengths: a short one shows the fixed cost per request, a long one the relay's throughput. */
const RELAY_TOKENS = [2_000, 20_000];
const RELAY_ROUNDS = 5;

/** One API's generation route, a small non-streaming request, and a long streaming one of `tokens` records. */
interface Surface {
  name: string;
  path: string;
  small: string;
  /** A small streaming request: the time to its first chunk. */
  smallStream: string;
  long: (tokens: number) => string;
  /** Bytes that end one streamed record: "\n" for NDJSON, the blank line of SSE. */
  recordEnd: string;
}

const SURFACES: Surface[] = [
  {
    name: "Ollama /api/chat (NDJSON)",
    path: "/api/chat",
    small: JSON.stringify({ model: "llama3.2", messages: [{ role: "user", content: "hi" }], stream: false }),
    smallStream: JSON.stringify({ model: "llama3.2", messages: [{ role: "user", content: "hi" }] }),
    long: (tokens) =>
      JSON.stringify({ model: "llama3.2", messages: [{ role: "user", content: "go" }], options: { num_predict: tokens } }),
    recordEnd: "\n",
  },
  {
    name: "OpenAI /v1/chat/completions (SSE)",
    path: "/v1/chat/completions",
    small: JSON.stringify({ model: "llama3.2", messages: [{ role: "user", content: "hi" }] }),
    smallStream: JSON.stringify({ model: "llama3.2", stream: true, messages: [{ role: "user", content: "hi" }] }),
    // The fake answers "You said: <prompt>" a word per chunk: a prompt of n words streams about n chunks.
    long: (tokens) =>
      JSON.stringify({ model: "llama3.2", stream: true, messages: [{ role: "user", content: "w ".repeat(tokens - 2) }] }),
    recordEnd: "\n\n",
  },
];

async function timeRequest(url: string, body: string, path: string): Promise<number> {
  const start = performance.now();
  const response = await fetch(`${url}${path}`, { method: "POST", body });
  await response.arrayBuffer();
  if (!response.ok) throw new Error(`HTTP ${response.status}`);
  return performance.now() - start;
}

/** Time to the first chunk of a streamed answer (the rest is read and dropped). */
async function timeFirstChunk(url: string, body: string, path: string): Promise<number> {
  const start = performance.now();
  const response = await fetch(`${url}${path}`, { method: "POST", body });
  const reader = response.body!.getReader();
  await reader.read();
  const elapsed = performance.now() - start;
  while (!(await reader.read()).done);
  if (!response.ok) throw new Error(`HTTP ${response.status}`);
  return elapsed;
}

const rate = (v: number) => Math.round(v).toLocaleString("en-US");

async function relayRate(url: string, body: string, surface: Surface): Promise<number> {
  const start = performance.now();
  const response = await fetch(`${url}${surface.path}`, { method: "POST", body });
  const text = await response.text();
  return text.split(surface.recordEnd).length / ((performance.now() - start) / 1000);
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
    const sections: string[] = [];
    const latencyRows: string[][] = [];
    const relayRows: string[][] = [];
    const firstChunkRows: string[][] = [];
    const ms = (v: number) => v.toFixed(3);
    let requests = 0;
    for (const surface of SURFACES) {
      const direct: number[] = [];
      const via: number[] = [];
      for (let i = 0; i < 50; i++)
        (await timeRequest(fake.url, surface.small, surface.path), await timeRequest(foreman.url, surface.small, surface.path)); // warm-up
      for (let round = 0; round < LATENCY_ROUNDS; round++) {
        for (let i = 0; i < LATENCY_PER_ROUND; i++) direct.push(await timeRequest(fake.url, surface.small, surface.path));
        for (let i = 0; i < LATENCY_PER_ROUND; i++) via.push(await timeRequest(foreman.url, surface.small, surface.path));
      }
      requests = direct.length;
      const directFirst: number[] = [];
      const viaFirst: number[] = [];
      for (let round = 0; round < LATENCY_ROUNDS / 2; round++) {
        for (let i = 0; i < LATENCY_PER_ROUND; i++)
          directFirst.push(await timeFirstChunk(fake.url, surface.smallStream, surface.path));
        for (let i = 0; i < LATENCY_PER_ROUND; i++)
          viaFirst.push(await timeFirstChunk(foreman.url, surface.smallStream, surface.path));
      }
      firstChunkRows.push([
        surface.name,
        ms(median(directFirst)),
        ms(median(viaFirst)),
        ms(median(viaFirst) - median(directFirst)),
        ms(quantile(viaFirst, 0.99) - quantile(directFirst, 0.99)),
      ]);
      const addedP50 = median(via) - median(direct);
      const addedP99 = quantile(via, 0.99) - quantile(direct, 0.99);
      targets.push(
        { target: `added latency p50, ${surface.name}`, figure: `${ms(addedP50)} ms`, goal: "≤ 0.5 ms", met: addedP50 <= 0.5 },
        { target: `added latency p99, ${surface.name}`, figure: `${ms(addedP99)} ms`, goal: "≤ 2 ms", met: addedP99 <= 2 },
      );
      const firstAdded = median(viaFirst) - median(directFirst);
      targets.push({
        target: `first streamed chunk, added p50, ${surface.name}`,
        figure: `${ms(firstAdded)} ms`,
        goal: "≤ 0.5 ms",
        met: firstAdded <= 0.5,
      });
      latencyRows.push(
        [surface.name, "direct", ms(median(direct)), ms(quantile(direct, 0.99))],
        [surface.name, "via foreman", ms(median(via)), ms(quantile(via, 0.99))],
        [surface.name, "added by foreman", ms(median(via) - median(direct)), ms(quantile(via, 0.99) - quantile(direct, 0.99))],
      );
      for (const tokens of RELAY_TOKENS) {
        const long = surface.long(tokens);
        const directRates: number[] = [];
        const viaRates: number[] = [];
        for (let round = 0; round < RELAY_ROUNDS; round++) {
          directRates.push(await relayRate(fake.url, long, surface));
          viaRates.push(await relayRate(foreman.url, long, surface));
        }
        const ratio = `${Math.round((median(viaRates) / median(directRates)) * 100)}%`;
        if (tokens === RELAY_TOKENS.at(-1)) {
          const share = median(viaRates) / median(directRates);
          targets.push({ target: `streamed relay vs direct, ${surface.name}`, figure: ratio, goal: "≥ 95%", met: share >= 0.95 });
        }
        relayRows.push([
          surface.name,
          (tokens + 1).toLocaleString("en-US"),
          rate(median(directRates)),
          rate(median(viaRates)),
          ratio,
        ]);
      }
    }
    sections.push(
      `### Overhead: foreman vs the target called directly (${requests} sequential non-streaming requests per path, instant fake)`,
      "",
      table(["API", "path", "p50 ms", "p99 ms"], latencyRows),
      "",
      `### First streamed chunk: time to the first chunk of a small streaming request (sequential, instant fake)`,
      "",
      table(["API", "direct p50 ms", "via foreman p50 ms", "added p50 ms", "added p99 ms"], firstChunkRows),
      "",
      `### Streamed relay: records per second over one stream, median of ${RELAY_ROUNDS} (fake in its own process, no token delay)`,
      "",
      table(["API", "records per stream", "direct records/s", "via foreman records/s", "foreman vs direct"], relayRows),
      "",
      "The short stream carries foreman's fixed cost per request (queue write, two thread hops, claim); the long one shows the relay's throughput.",
    );
    return sections.join("\n");
  } finally {
    foreman.process.kill("SIGTERM");
    await foreman.process.exited;
    fake.stop();
    dir.cleanup();
  }
}
