// What the node hop costs a streaming client (issue #22): two foreman nodes (the compiled binary at its
// defaults) on one throwaway PostgreSQL cluster and one fake GPU in a process of its own; the same streamed
// chat asked of the node running the GPU's lease and of the other node, interleaved. The other node's client
// is relayed the records node to node (src/nodes/), so the hop's cost is the difference: at the first record
// (time to first token) and at the last.
import type { ForemanProcess } from "../test/harness";
import { spawnForeman, until } from "../test/harness";
import { pgBinDir, startPgCluster } from "../test/pg-cluster";
import { median, quantile, table } from "./stats";

const ROUNDS = 40;
const TOKEN_MS = 5;
const WORDS = 20;

/** Time to the first and to the last record of one streamed chat, in ms. */
async function streamTimes(url: string, body: string): Promise<{ first: number; last: number }> {
  const start = performance.now();
  const response = await fetch(`${url}/api/chat`, { method: "POST", body });
  if (!response.ok) throw new Error(`HTTP ${response.status}`);
  let first = 0;
  for await (const _ of response.body!) first ||= performance.now() - start;
  return { first, last: performance.now() - start };
}

export async function benchNodeHop(): Promise<string> {
  const lines = ["### The node hop (PostgreSQL, two nodes)", ""];
  if (!pgBinDir()) return [...lines, "Skipped: no PostgreSQL binaries here (Debian's `postgresql` package)."].join("\n");
  const cluster = await startPgCluster();
  const fakeProcess = Bun.spawn(["bun", `${import.meta.dir}/../test/fake-ollama-main.ts`], {
    stdout: "pipe",
    stderr: "inherit",
    env: { ...process.env, FAKE_TOKEN_MS: String(TOKEN_MS) },
  });
  const { value } = await fakeProcess.stdout.getReader().read();
  const fakeUrl = `http://127.0.0.1:${Number(new TextDecoder().decode(value).trim())}`;
  const nodes: ForemanProcess[] = [];
  try {
    for (const name of ["holder", "other"]) {
      const node = await spawnForeman({ FOREMAN_DB: cluster.url, FOREMAN_OLLAMA_URL: fakeUrl, FOREMAN_NODE: name });
      nodes.push(node);
      if (nodes.length === 1) await until(() => node.stdout().includes("runs target"), 20_000, "the first node's lease");
    }
    const [holder, other] = nodes as [ForemanProcess, ForemanProcess];
    const body = JSON.stringify({
      model: "llama3.2",
      messages: [{ role: "user", content: Array.from({ length: WORDS }, (_, i) => `w${i}`).join(" ") }],
    });
    // Warm both paths (the model's load, connections, the relay's first lookup).
    for (let i = 0; i < 3; i++) for (const node of nodes) await streamTimes(node.url, body);
    const local = { first: [] as number[], last: [] as number[] };
    const hop = { first: [] as number[], last: [] as number[] };
    for (let round = 0; round < ROUNDS; round++) {
      const order = round % 2 === 0 ? [holder, other] : [other, holder];
      for (const node of order) {
        const times = await streamTimes(node.url, body);
        const into = node === holder ? local : hop;
        into.first.push(times.first);
        into.last.push(times.last);
      }
    }
    const row = (label: string, samples: { first: number[]; last: number[] }) => [
      label,
      median(samples.first).toFixed(2),
      quantile(samples.first, 0.9).toFixed(2),
      median(samples.last).toFixed(2),
      quantile(samples.last, 0.9).toFixed(2),
    ];
    lines.push(
      `${ROUNDS} streamed chats of ${WORDS + 2} records (${TOKEN_MS} ms a token) per path, interleaved, one at a time.`,
      "",
      table(
        ["client on", "first record p50 (ms)", "p90", "last record p50 (ms)", "p90"],
        [row("the node running the GPU", local), row("the other node (relayed)", hop)],
      ),
      "",
      `The hop adds ${(median(hop.first) - median(local.first)).toFixed(2)} ms to the first record (median) and ` +
        `${(median(hop.last) - median(local.last)).toFixed(2)} ms to the last.`,
    );
    return lines.join("\n");
  } finally {
    for (const node of nodes) {
      node.process.kill();
      await node.process.exited;
    }
    fakeProcess.kill();
    await cluster.stop();
  }
}
