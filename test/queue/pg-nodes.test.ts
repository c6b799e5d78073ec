// Several foreman nodes on one PostgreSQL queue, each its own process running the real job loop
// (test/queue/pg-node.ts: TargetRunners over PgRunnerStore under LeaseKeeper), in front of two fake GPUs:
// every job runs exactly once, no GPU ever serves two generations at once, drain-by-model holds per GPU,
// and kill -9 of the node holding the GPUs hands them to the survivor within the lease time.
import { afterAll, beforeAll, expect, test } from "bun:test";
import type { Subprocess } from "bun";
import { modelKey } from "../../src/ollama/model-key";
import { openPg } from "../../src/queue/pg/db";
import { PgJobStore } from "../../src/queue/pg/job-store";
import { FakeOllama } from "../fake-ollama";
import { until } from "../harness";
import { type PgCluster, startPgCluster } from "../pg-cluster";

let cluster: PgCluster;
let databases = 0;
beforeAll(async () => {
  cluster = await startPgCluster();
});
afterAll(async () => {
  await cluster?.stop();
});

const TTL_MS = 600;
const POLL_MS = 100;
const MODELS = ["llama3.2", "qwen3", "mistral", "gemma3"];
const NODE = new URL("./pg-node.ts", import.meta.url).pathname;

interface NodeEvent {
  event: string;
  target?: string;
  token?: number;
  requeued?: number;
  t: number;
}

/** A node process, and the events it printed so far. */
class Node {
  readonly events: NodeEvent[] = [];
  readonly proc: Subprocess<"ignore", "pipe", "pipe">;
  /** `only`: the GPUs (by index) this node may run; all of them by default. */
  constructor(url: string, name: string, fakes: FakeOllama[], only?: number[]) {
    const targets = fakes.flatMap((fake, i) => (only && !only.includes(i) ? [] : [`gpu${i + 1}=http://127.0.0.1:${fake.port}`]));
    this.proc = Bun.spawn([process.execPath, NODE, url, name, String(TTL_MS), String(POLL_MS), ...targets], {
      stdin: "ignore",
      stdout: "pipe",
      stderr: "pipe",
    });
    const stdout = this.proc.stdout;
    void (async () => {
      let buffered = "";
      for await (const chunk of stdout) {
        buffered += new TextDecoder().decode(chunk);
        let newline;
        while ((newline = buffered.indexOf("\n")) >= 0) {
          this.events.push(JSON.parse(buffered.slice(0, newline)) as NodeEvent);
          buffered = buffered.slice(newline + 1);
        }
      }
    })();
  }
  /** Targets this node holds and has recovered, by its own events. */
  holding(): Set<string> {
    const held = new Set<string>();
    for (const e of this.events) {
      if (e.event === "recovered") held.add(e.target!);
      if (e.event === "lost") held.delete(e.target!);
    }
    return held;
  }
  async stop(): Promise<void> {
    this.proc.kill("SIGTERM");
    const timer = setTimeout(() => this.proc.kill("SIGKILL"), 5000);
    await this.proc.exited;
    clearTimeout(timer);
  }
}

/** A seeded trace: `n` jobs over the four models in runs of random length (a model's jobs come in bursts). */
function trace(n: number, seed: number): string[] {
  let state = seed >>> 0;
  const random = () => (state = (state * 1664525 + 1013904223) >>> 0) / 2 ** 32;
  const models: string[] = [];
  while (models.length < n) {
    const model = MODELS[Math.floor(random() * MODELS.length)]!;
    for (let run = 1 + Math.floor(random() * 6); run > 0 && models.length < n; run--) models.push(model);
  }
  return models;
}

async function freshQueue(): Promise<{ url: string; pg: PgJobStore; close: () => Promise<void> }> {
  const name = `nodes_${++databases}`;
  await cluster.createDatabase(name);
  const url = cluster.urlFor(name);
  const sql = await openPg(url, { poolSize: 2 });
  return { url, pg: new PgJobStore(sql), close: () => sql.close() };
}

/** Enqueues one job per model, prompts `${tag} ${first + i}`. */
async function enqueueTrace(pg: PgJobStore, models: string[], tag: string, first = 0): Promise<string[]> {
  const jobs = models.map((model, i) => ({
    type: "generate" as const,
    model,
    modelKey: modelKey(model, undefined),
    request: JSON.stringify({ model, prompt: `${tag} ${first + i}`, stream: false }),
    source: "jobs" as const,
    maxAttempts: 3,
  }));
  const ids: string[] = [];
  for (let i = 0; i < jobs.length; i += 200) {
    for (const added of await pg.enqueueMany(jobs.slice(i, i + 200), 100_000)) {
      if (added instanceof Error) throw added;
      ids.push(added.job.id);
    }
  }
  return ids;
}

const fakeOptions = { loadDelayMs: 15, tokenDelayMs: 0 };
const WAVE = 200;

async function allEnded(pg: PgJobStore, ids: readonly string[], timeoutMs: number): Promise<void> {
  await until(
    async () =>
      (await pg.queuedCount()) === 0 && (await Promise.all(ids.map((id) => pg.jobState(id)))).every((s) => s === "done"),
    timeoutMs,
    "every job done",
  );
}

/** What the fakes saw: each job's prompt, run once, and no GPU with two generations at once. */
function expectRunOnce(fakes: FakeOllama[], prompts: readonly string[]): void {
  const seen = fakes.flatMap((fake) => fake.seen.map((s) => s.body.prompt as string));
  expect(seen.length).toBe(prompts.length);
  expect(new Set(seen)).toEqual(new Set(prompts));
  for (const fake of fakes) {
    expect(fake.violations).toEqual([]);
    expect(fake.maxInFlight).toBeLessThanOrEqual(1);
  }
}

test("two nodes, two GPUs, 2,000 jobs: each runs once, one generation per GPU at a time, swaps as with one node", async () => {
  const models = trace(2000, 22);
  const swaps: Record<string, number> = {};
  for (const nodes of [1, 2]) {
    const fakes = [
      new FakeOllama({ ...fakeOptions, tokenDelayMs: 1 }).start(),
      new FakeOllama({ ...fakeOptions, tokenDelayMs: 1 }).start(),
    ];
    const queue = await freshQueue();
    // With two nodes, each runs one GPU: the first may run only gpu1, and once it holds it the second (which
    // may run both) takes gpu2 and stands by for gpu1. Leases go first come, first served, so without
    // this the first node could hold both and leave the second nothing to claim for.
    const running = [new Node(queue.url, "node-1", fakes, nodes === 2 ? [0] : undefined)];
    try {
      if (nodes === 2) {
        await until(() => running[0]!.holding().has("gpu1"), 10_000, "node-1 holding gpu1");
        running.push(new Node(queue.url, "node-2", fakes));
        await until(() => running[1]!.holding().has("gpu2"), 10_000, "node-2 holding gpu2");
      }
      // In ten waves of 200, each sent once the last has drained: the queue holds a mix to drain each time,
      // and the swaps each wave costs depend on the placement, not on when jobs happened to arrive.
      const ids: string[] = [];
      for (let i = 0; i < models.length; i += WAVE) {
        const wave = await enqueueTrace(queue.pg, models.slice(i, i + WAVE), `run${nodes}`, i);
        await allEnded(queue.pg, wave, 30_000);
        ids.push(...wave);
      }
      await allEnded(queue.pg, ids, 90_000);
      const rows = await Promise.all(ids.map((id) => queue.pg.getJobHead(id)));
      expect(rows.filter((row) => row?.state !== "done" || row.attempts !== 1)).toEqual([]);
      expectRunOnce(
        fakes,
        models.map((_, i) => `run${nodes} ${i}`),
      );
      swaps[nodes] = fakes.reduce((sum, fake) => sum + fake.swaps, 0);
      if (nodes === 2) expect(fakes.map((fake) => fake.seen.length > 0)).toEqual([true, true]);
    } finally {
      await Promise.all(running.map((node) => node.stop()));
      await Promise.all(fakes.map((fake) => fake.stop()));
      await queue.close();
    }
  }
  // Drain-by-model per GPU: the two nodes between them swap about as often as one node running both GPUs,
  // and far less often than the trace changes model (what sending the jobs in order would cost). Measured
  // 1.06-1.10 times one node's swaps: a node's placement sees only the GPUs it holds (the other's resident
  // model is not shared through the database yet), so the bound here has room for that and for timing.
  const changes = models.filter((model, i) => i > 0 && model !== models[i - 1]).length;
  if (process.env.FOREMAN_REPORT)
    console.log(`swaps: one node ${swaps[1]}, two nodes ${swaps[2]}, the trace's model changes ${changes}`);
  expect(swaps[2]!).toBeLessThanOrEqual(Math.ceil(swaps[1]! * 1.2) + 2);
  expect(swaps[2]!).toBeLessThan(changes / 4);
}, 240_000);

test("kill -9 of the node holding both GPUs, 20 times: the survivor takes both over within the lease time, and every job ends once", async () => {
  const fakes = [
    new FakeOllama({ ...fakeOptions, tokenDelayMs: 1 }).start(),
    new FakeOllama({ ...fakeOptions, tokenDelayMs: 1 }).start(),
  ];
  const queue = await freshQueue();
  const takeovers: number[] = [];
  let survivor = new Node(queue.url, "node-0", fakes);
  const nodes = [survivor];
  try {
    for (let round = 0; round < 20; round++) {
      // The holder: a node started first holds both GPUs; the newcomer waits as a standby.
      await until(() => survivor.holding().size === 2, 10_000, "one node holding both GPUs");
      const standby = new Node(queue.url, `node-${round + 1}`, fakes);
      nodes.push(standby);
      await until(() => standby.events.some((e) => e.event === "started"), 10_000, "the standby started");
      const models = trace(60, round);
      const ids = await enqueueTrace(queue.pg, models, `round${round}`);
      // Mid-run: some jobs done, some still queued.
      await until(
        async () => (await Promise.all(ids.map((id) => queue.pg.jobState(id)))).filter((s) => s === "done").length >= 15,
        20_000,
        "a quarter of the round done",
      );
      const killedAt = Date.now();
      survivor.proc.kill("SIGKILL");
      await survivor.proc.exited;
      await until(() => standby.holding().size === 2, 10_000, "the standby holding both GPUs");
      const tookOver = Math.max(...standby.events.filter((e) => e.event === "recovered").map((e) => e.t)) - killedAt;
      takeovers.push(tookOver);
      await allEnded(queue.pg, ids, 30_000);
      survivor = standby;
    }
    for (const fake of fakes) {
      expect(fake.violations).toEqual([]);
      expect(fake.maxInFlight).toBeLessThanOrEqual(1);
    }
    // Each job seen at most twice (a run a kill cut short, then its re-run), and finished by the survivor.
    const counts = new Map<string, number>();
    for (const prompt of fakes.flatMap((fake) => fake.seen.map((s) => s.body.prompt as string)))
      counts.set(prompt, (counts.get(prompt) ?? 0) + 1);
    expect([...counts.values()].filter((n) => n > 2)).toEqual([]);
    expect(counts.size).toBe(20 * 60);
    // Within the lease time plus one poll (and the recovery's statements), with slack for this shared machine.
    takeovers.sort((a, b) => a - b);
    expect(takeovers[takeovers.length - 1]!).toBeLessThan(TTL_MS + POLL_MS + 1500);
    if (process.env.FOREMAN_REPORT) console.log(`takeover ms: median ${takeovers[10]}, max ${takeovers[19]}`);
  } finally {
    await Promise.all(nodes.filter((node) => node.proc.exitCode === null && !node.proc.killed).map((node) => node.stop()));
    await Promise.all(fakes.map((fake) => fake.stop()));
    await queue.close();
  }
}, 300_000);
