// What foreman adds over calling Ollama directly: latency (non-streaming, instant fake) and the rate
// at which streamed chunks are relayed. Every path is measured in the same run, interleaved. foreman
// runs as users run it (the default log level and format, stdout a pipe that is read) and, labelled
// apart, with logging off, so logging's cost is a figure of its own; Portkey's gateway (stateless, no
// queue, on Bun, routed to the same fake as an Ollama provider) is the peer for the OpenAI route.
import { join } from "node:path";
import { type ForemanProcess, foremanEnv, freePort, spawnForeman, tempDir } from "../test/harness";
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
  /** Whether Portkey's gateway serves this route for an Ollama provider (it speaks OpenAI's API only). */
  portkey: boolean;
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
    portkey: false,
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
    portkey: true,
  },
];

async function timeRequest(url: string, body: string, path: string, headers: Record<string, string> = {}): Promise<number> {
  const start = performance.now();
  const response = await fetch(`${url}${path}`, { method: "POST", body, headers });
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

/**
 * Portkey's gateway (@portkey-ai/gateway) on Bun, headless, its output read and dropped. A request names
 * the provider and the fake's address in headers (see PORTKEY_HEADERS).
 */
async function startPortkey() {
  const port = await freePort();
  const child = Bun.spawn(
    [
      "bun",
      join(import.meta.dir, "..", "node_modules", "@portkey-ai", "gateway", "build", "start-server.js"),
      `--port=${port}`,
      "--headless",
    ],
    { stdout: "pipe", stderr: "pipe" },
  );
  void new Response(child.stdout).text();
  void new Response(child.stderr).text();
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    try {
      await fetch(url);
      return { url, stop: () => child.kill() };
    } catch {
      await Bun.sleep(50);
    }
  }
  child.kill();
  throw new Error("Portkey's gateway did not start");
}

/** Routes a Portkey request to the fake as an Ollama provider (its chat completions go to /v1/chat/completions). */
const portkeyHeaders = (fakeUrl: string) => ({
  "content-type": "application/json",
  "x-portkey-provider": "ollama",
  "x-portkey-custom-host": fakeUrl,
});

/** foreman as users run it: the default log level and format, its stdout a pipe the harness reads. */
function defaultsEnv(fakeUrl: string, dir: string): Record<string, string> {
  const env = foremanEnv(fakeUrl, dir, { FOREMAN_POLL_INTERVAL: "1h" });
  delete env.FOREMAN_LOG_LEVEL;
  return env;
}

async function stopForeman(foreman: ForemanProcess) {
  foreman.process.kill("SIGTERM");
  await foreman.process.exited;
}

export async function benchOverhead(): Promise<string> {
  const fake = await startFakeProcess();
  const dir = tempDir();
  const quietDir = tempDir();
  const foreman = await spawnForeman(defaultsEnv(fake.url, dir.path));
  // Logging off: only errors are written, and a request writes none.
  const quiet = await spawnForeman(
    foremanEnv(fake.url, quietDir.path, { FOREMAN_POLL_INTERVAL: "1h", FOREMAN_LOG_LEVEL: "error" }),
  );
  const portkey = await startPortkey();
  const toPortkey = portkeyHeaders(fake.url);
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
      const viaQuiet: number[] = [];
      const viaPortkey: number[] = [];
      const peers: Array<[string, number[], () => Promise<number>]> = [
        ["direct", direct, () => timeRequest(fake.url, surface.small, surface.path)],
        ["via foreman", via, () => timeRequest(foreman.url, surface.small, surface.path)],
        ["via foreman, logging off", viaQuiet, () => timeRequest(quiet.url, surface.small, surface.path)],
      ];
      if (surface.portkey)
        peers.push(["via Portkey", viaPortkey, () => timeRequest(portkey.url, surface.small, surface.path, toPortkey)]);
      for (let i = 0; i < 50; i++) for (const [, , time] of peers) await time(); // warm-up
      for (let round = 0; round < LATENCY_ROUNDS; round++) {
        for (const [, samples, time] of peers) for (let i = 0; i < LATENCY_PER_ROUND; i++) samples.push(await time());
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
      const added = (samples: number[]) => [
        ms(median(samples) - median(direct)),
        ms(quantile(samples, 0.99) - quantile(direct, 0.99)),
      ];
      for (const [name, samples] of peers) {
        const ratio = name === "direct" ? "" : `${(median(samples) / median(direct)).toFixed(1)}×`;
        latencyRows.push([
          surface.name,
          name,
          ms(median(samples)),
          ms(quantile(samples, 0.99)),
          ...(name === "direct" ? ["", ""] : added(samples)),
          ratio,
        ]);
      }
      const quietAdded = median(viaQuiet) - median(direct);
      targets.push({
        target: `cost of logging (default vs off), added p50, ${surface.name}`,
        figure: `${ms(addedP50 - quietAdded)} ms`,
        goal: "-",
        met: true,
      });
      if (surface.portkey) {
        const portkeyAdded = median(viaPortkey) - median(direct);
        targets.push({
          target: `added p50 vs Portkey's added p50, ${surface.name}`,
          figure: `${ms(addedP50)} / ${ms(portkeyAdded)} ms = ${(addedP50 / portkeyAdded).toFixed(2)}`,
          goal: "≤ 0.5",
          met: addedP50 <= 0.5 * portkeyAdded,
        });
      }
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
      table(["API", "path", "p50 ms", "p99 ms", "added p50 ms", "added p99 ms", "p50 vs direct"], latencyRows),
      "",
      "via foreman: as users run it (log level info, JSON lines to a pipe the bench reads); logging off: FOREMAN_LOG_LEVEL=error.",
      "Portkey: @portkey-ai/gateway on Bun, headless, provider ollama with the fake as its custom host (OpenAI's route only).",
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
    await stopForeman(foreman);
    await stopForeman(quiet);
    portkey.stop();
    fake.stop();
    dir.cleanup();
    quietDir.cleanup();
  }
}
