// What foreman adds over calling Ollama directly: latency (non-streaming, instant fake) and the rate
// at which streamed chunks are relayed. Both paths are measured in the same run, interleaved.
import { FakeOllama } from "../test/fake-ollama";
import { foremanEnv, spawnForeman, tempDir } from "../test/harness";
import { median, quantile, table } from "./stats";

const LATENCY_ROUNDS = 10;
const LATENCY_PER_ROUND = 100;
const RELAY_TOKENS = 5000;
const RELAY_ROUNDS = 5;

async function timeRequest(url: string, body: string): Promise<number> {
  const start = performance.now();
  const response = await fetch(`${url}/api/chat`, { method: "POST", body });
  await response.arrayBuffer();
  if (!response.ok) throw new Error(`HTTP ${response.status}`);
  return performance.now() - start;
}

async function relayRate(url: string, body: string): Promise<number> {
  const start = performance.now();
  const response = await fetch(`${url}/api/chat`, { method: "POST", body });
  let lines = 0;
  for await (const chunk of response.body!) for (const byte of chunk) if (byte === 10) lines++;
  return lines / ((performance.now() - start) / 1000);
}

export async function benchOverhead(): Promise<string> {
  const fake = new FakeOllama().start();
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
    const long = JSON.stringify({
      model: "llama3.2",
      messages: [{ role: "user", content: "go" }],
      options: { num_predict: RELAY_TOKENS },
    });
    const directRates: number[] = [];
    const viaRates: number[] = [];
    for (let round = 0; round < RELAY_ROUNDS; round++) {
      directRates.push(await relayRate(fake.url, long));
      viaRates.push(await relayRate(foreman.url, long));
    }
    const ms = (v: number) => v.toFixed(3);
    const rate = (v: number) => Math.round(v).toLocaleString("en-US");
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
      `### Streamed relay: ${RELAY_TOKENS + 1} chunks per stream, median of ${RELAY_ROUNDS}`,
      "",
      table(
        ["path", "chunks/s", "vs direct"],
        [
          ["direct", rate(median(directRates)), "100%"],
          ["via foreman", rate(median(viaRates)), `${Math.round((median(viaRates) / median(directRates)) * 100)}%`],
        ],
      ),
    ].join("\n");
  } finally {
    foreman.process.kill("SIGTERM");
    await foreman.process.exited;
    await fake.stop();
    dir.cleanup();
  }
}
