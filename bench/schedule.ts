// Scheduling against the fake GPU, on seeded traces:
// 1. an interleaved short-job trace (120 jobs over 4 equally costly models, all arriving while the GPU is
//    busy): FIFO against drain, with the GPU's utilisation and the dead time between two jobs;
// 2. an uneven-cost trace (four models loading in 0.3 s, 1 s, 3 s and 8 s with queues of different
//    lengths, plus a trickle of interactive jobs at a higher priority): FIFO, drain-oldest and the
//    cost-aware drain side by side, against the physical lower bound.
import { join } from "node:path";
import { loadConfig } from "../src/config";
import type { JobRow } from "../src/queue/store";
import { startServer } from "../src/server";
import type { FakeOllamaOptions, SeenRequest } from "../test/fake-ollama";
import { foremanEnv, tempDir } from "../test/harness";
import { median, quantile, seededRandom, table } from "./stats";

/** One job of a trace: when it arrives (ms after the first), its model, priority and output length. */
interface TraceJob {
  offset: number;
  model: string;
  priority?: number;
  /** Tokens the fake answers with (num_predict); default the fake's echo of the prompt. */
  tokens?: number;
}

interface Outcome {
  label: string;
  maxWaitMs: number;
  jobs: JobRow[];
  swaps: number;
  promotions: number;
  makespanMs: number;
  waits: number[];
  longestRunMs: number;
  /** The fake's busy time (loads included) over the span from its first request to its last answer. */
  utilisation: number;
  /** Dead time between one answer's end and the next request's arrival, ms, one per pair. */
  gaps: number[];
  /** Σ load of each model served once + Σ generation time: no schedule finishes sooner. */
  lowerBoundMs: number;
}

/** The fake in a process of its own, so its serving log is not delayed by foreman's HTTP thread. */
async function startFakeProcess(options: FakeOllamaOptions) {
  const child = Bun.spawn(["bun", join(import.meta.dir, "..", "test", "fake-ollama-main.ts")], {
    stdout: "pipe",
    stderr: "inherit",
    env: {
      ...process.env,
      FAKE_LOAD_MS: String(options.loadDelayMs ?? 0),
      FAKE_TOKEN_MS: String(options.tokenDelayMs ?? 0),
      FAKE_MODEL_DELAYS: JSON.stringify(options.modelDelays ?? {}),
    },
  });
  const { value } = await child.stdout.getReader().read();
  const url = `http://127.0.0.1:${Number(new TextDecoder().decode(value).trim())}`;
  return {
    url,
    log: async () =>
      (await (await fetch(`${url}/_fake/log`)).json()) as { swaps: number; maxInFlight: number; seen: SeenRequest[] },
    stop: () => child.kill(),
  };
}

async function run(
  label: string,
  trace: TraceJob[],
  fakeOptions: FakeOllamaOptions,
  env: Record<string, string>,
  maxWaitMs: number,
  warmup: TraceJob[] = [],
): Promise<Outcome> {
  const fake = await startFakeProcess(fakeOptions);
  const dir = tempDir();
  const foreman = await startServer(loadConfig(foremanEnv(fake.url, dir.path, { FOREMAN_POLL_INTERVAL: "1h", ...env })));
  const submit = async ({ model, priority, tokens }: TraceJob, i: number) => {
    const request = { model, prompt: `job ${i}`, ...(tokens ? { options: { num_predict: tokens } } : {}) };
    const response = await fetch(`${foreman.url}/jobs`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ type: "generate", request, priority: priority ?? 0 }),
    });
    if (response.status !== 202) throw new Error(`submit failed: ${response.status}`);
    return ((await response.json()) as { id: string }).id;
  };
  try {
    // Jobs run one by one before the trace, as a server that has run these models before: their costs learned.
    for (const [i, job] of warmup.entries()) {
      const id = await submit(job, -1 - i);
      while (foreman.jobs.store.getJob(id)!.state !== "done") await Bun.sleep(10);
    }
    const before = await fake.log();
    const warmIds = new Set(foreman.jobs.store.listJobs({ limit: 500 }).map((j) => j.id));
    const start = performance.now();
    // One at a time, each when its offset is due, so the queue's order is the trace's.
    const ids: string[] = [];
    for (const [i, job] of trace.entries()) {
      await Bun.sleep(Math.max(0, job.offset - (performance.now() - start)));
      ids.push(await submit(job, i));
    }
    // Each job's end is awaited, not polled for: a poll's reads would compete with the worker for the CPU.
    const ended = async (id: string) => {
      for await (const event of foreman.jobs.watch(id)) if (event.type === "ended") return;
    };
    await Promise.all(ids.map(ended));
    const store = foreman.jobs.store;
    const jobs: JobRow[] = store.listJobs({ limit: 500 }).filter((j) => !warmIds.has(j.id));
    if (jobs.length !== trace.length || jobs.some((j) => j.state !== "done")) throw new Error(`${label}: not every job is done`);
    jobs.sort((a, b) => a.startedAt! - b.startedAt!);
    // A promotion is a claim the starvation guard made: an overdue job that forced a model change.
    let promotions = 0;
    for (let i = 1; i < jobs.length; i++) {
      const job = jobs[i]!;
      if (job.modelKey !== jobs[i - 1]!.modelKey && job.startedAt! - job.createdAt > maxWaitMs) promotions++;
    }
    const log = await fake.log();
    if (log.maxInFlight > 1) throw new Error(`${label}: the fake served ${log.maxInFlight} requests at once`);
    const served = log.seen.slice(before.seen.length).sort((a, b) => a.arrivedMs - b.arrivedMs);
    const residentAtStart = before.seen.at(-1)?.key;
    const busy = served.reduce((sum, s) => sum + (s.servedMs! - s.arrivedMs), 0);
    const span = served.at(-1)!.servedMs! - served[0]!.arrivedMs;
    const gaps = served.slice(1).map((s, i) => s.arrivedMs - served[i]!.servedMs!);
    return {
      label,
      maxWaitMs,
      jobs,
      swaps: log.swaps - before.swaps,
      promotions,
      makespanMs: Math.max(...jobs.map((j) => j.finishedAt!)) - Math.min(...jobs.map((j) => j.createdAt)),
      waits: jobs.map((j) => j.startedAt! - j.createdAt),
      longestRunMs: Math.max(...jobs.map((j) => j.finishedAt! - j.startedAt!)),
      utilisation: busy / span,
      gaps,
      lowerBoundMs: lowerBound(served, fakeOptions, residentAtStart),
    };
  } finally {
    await foreman.stop();
    fake.stop();
    dir.cleanup();
  }
}

/**
 * Each model's load once (none for the one resident when the trace starts), plus every request's
 * generation (its serving time less the load it paid).
 */
function lowerBound(served: SeenRequest[], fake: FakeOllamaOptions, residentAtStart: string | undefined): number {
  const load = (s: SeenRequest) =>
    fake.modelDelays?.[s.model.includes(":") ? s.model : `${s.model}:latest`]?.loadMs ?? fake.loadDelayMs ?? 0;
  const models = new Map(served.filter((s) => s.key !== residentAtStart).map((s) => [s.key, load(s)]));
  const generation = served.reduce((sum, s) => sum + (s.servedMs! - s.arrivedMs) - (s.swapped ? load(s) : 0), 0);
  return [...models.values()].reduce((a, b) => a + b, 0) + generation;
}

const s = (ms: number) => (ms / 1000).toFixed(2);
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

// --- 1. The interleaved short-job trace -------------------------------------------------------------

const SHORT_JOBS = 120;
const SHORT_MODELS = ["llama3.2", "qwen3", "mistral", "gemma3"];
const SHORT_LOAD_MS = 250;
const SHORT_TOKEN_MS = 5;
const SHORT_WINDOW_MS = 200;

/** Job i arrives at offset ms, for model. The first arrives at 0 and starts the GPU. */
function shortTrace(): TraceJob[] {
  const random = seededRandom(2024);
  const jobs = Array.from({ length: SHORT_JOBS }, (_, i) => ({
    offset: i === 0 ? 0 : 1 + Math.floor(random() * SHORT_WINDOW_MS),
    model: SHORT_MODELS[Math.floor(random() * SHORT_MODELS.length)]!,
  }));
  return jobs.sort((a, b) => a.offset - b.offset);
}

/**
 * The floor for utilisation and gaps: the same jobs sent straight to the fake by a client that does
 * nothing between two requests but wait for one body to end and send the next (in drain's order: model
 * by model, first seen first), as the job API would send them (streaming).
 */
async function directBackToBack(trace: TraceJob[], fakeOptions: FakeOllamaOptions) {
  const fake = await startFakeProcess(fakeOptions);
  try {
    const order = [...new Set(trace.map((job) => job.model))].flatMap((model) =>
      trace.flatMap((job, i) => (job.model === model ? [{ model, prompt: `job ${i}` }] : [])),
    );
    for (const body of order) {
      const response = await fetch(`${fake.url}/api/generate`, { method: "POST", body: JSON.stringify(body) });
      await response.arrayBuffer();
    }
    const served = (await fake.log()).seen.filter((seen) => seen.servedMs !== undefined);
    served.sort((a, b) => a.arrivedMs - b.arrivedMs);
    const busy = served.reduce((sum, seen) => sum + (seen.servedMs! - seen.arrivedMs), 0);
    const span = served.at(-1)!.servedMs! - served[0]!.arrivedMs;
    const gaps = served.slice(1).map((seen, i) => seen.arrivedMs - served[i]!.servedMs!);
    return { utilisation: busy / span, gaps };
  } finally {
    fake.stop();
  }
}

async function benchInterleaved(): Promise<string> {
  const fake = { loadDelayMs: SHORT_LOAD_MS, tokenDelayMs: SHORT_TOKEN_MS };
  const outcomes = [
    await run("fifo", shortTrace(), fake, { FOREMAN_SCHEDULE: "fifo" }, 120_000),
    await run("drain (max wait 2m, the default)", shortTrace(), fake, { FOREMAN_SCHEDULE: "drain" }, 120_000),
    await run("drain (max wait 1s)", shortTrace(), fake, { FOREMAN_SCHEDULE: "drain", FOREMAN_MAX_WAIT: "1s" }, 1_000),
  ];
  const fifo = outcomes[0]!;
  const floor = await directBackToBack(shortTrace(), fake);
  return [
    `### Scheduling: ${SHORT_JOBS} short jobs over ${SHORT_MODELS.length} models arriving within ${SHORT_WINDOW_MS} ms while the GPU is busy (swap ${SHORT_LOAD_MS} ms, ${SHORT_TOKEN_MS} ms/token)`,
    "",
    table(
      [
        "policy",
        "swaps",
        "guard promotions",
        "swap bound (models + promotions)",
        "makespan s",
        "vs fifo",
        "wait p50 s",
        "wait p95 s",
        "wait max s",
        "max wait + longest job s",
        "GPU utilisation",
        "gap p50 ms",
        "gap p95 ms",
      ],
      outcomes.map((o) => [
        o.label,
        o.swaps,
        o.label === "fifo" ? "-" : o.promotions,
        o.label === "fifo" ? "-" : SHORT_MODELS.length + o.promotions,
        s(o.makespanMs),
        `${Math.round((o.makespanMs / fifo.makespanMs) * 100)}%`,
        s(median(o.waits)),
        s(quantile(o.waits, 0.95)),
        s(Math.max(...o.waits)),
        o.label === "fifo" ? "-" : s(o.maxWaitMs + o.longestRunMs),
        o.utilisation.toFixed(3),
        median(o.gaps).toFixed(2),
        quantile(o.gaps, 0.95).toFixed(2),
      ]),
    ),
    "",
    "GPU utilisation is the fake's serving time (loads included) over the span it served in; a gap is the time from one",
    "answer's last record leaving the fake to the next request reaching its handler, the transport both ways included (the",
    "next job is claimed when the final record arrives, sent when the body ends, and the finished job recorded after that).",
    "The 1 s row sets the guard below what this burst needs to drain: nearly every job becomes overdue, and overdue jobs run",
    "oldest first (the rule), so drain falls back towards FIFO. FOREMAN_MAX_WAIT belongs above the queue's usual drain time.",
    "",
    `The floor on this machine: the same jobs sent straight to the fake, model by model, each the moment the previous body`,
    `ended (no foreman, no queue): GPU utilisation ${floor.utilisation.toFixed(3)}, gap p50 ${median(floor.gaps).toFixed(2)} ms,` +
      ` p95 ${quantile(floor.gaps, 0.95).toFixed(2)} ms.`,
  ].join("\n");
}

// --- 2. The uneven-cost trace ----------------------------------------------------------------------

/** Real load times ÷ SCALE, so the run stays short; every time in the table is scaled alike. */
const SCALE = 10;
/** Four models from small to large: real load 0.3 s, 1 s, 3 s, 8 s; larger ones also generate slower. */
const UNEVEN = [
  { model: "llama3.2", loadMs: 300 / SCALE, tokenMs: 1, batch: 40 },
  { model: "qwen3", loadMs: 1000 / SCALE, tokenMs: 2, batch: 24 },
  { model: "mistral", loadMs: 3000 / SCALE, tokenMs: 3, batch: 14 },
  { model: "gemma3", loadMs: 8000 / SCALE, tokenMs: 5, batch: 8 },
];
const UNEVEN_WINDOW_MS = 20;
const INTERACTIVE_EVERY_MS = 50;
const INTERACTIVE_COUNT = 8;
const UNEVEN_MAX_WAIT = "5s";

/**
 * One long llama3.2 job (200 tokens) holds the GPU while each model's batch (priority 0, 5 to 15 tokens) is submitted
 * as a block within 20 ms, the largest model's first (so the oldest waiting job is always the most
 * expensive group's); and one interactive job (priority 5, 4 tokens, llama3.2) every 50 ms.
 */
function unevenTrace(): TraceJob[] {
  const random = seededRandom(7);
  const batch = [...UNEVEN]
    .reverse()
    .flatMap(({ model, batch }) =>
      Array.from({ length: model === "llama3.2" ? batch - 1 : batch }, () => ({ model, tokens: 5 + Math.floor(random() * 11) })),
    );
  const jobs: TraceJob[] = [
    { offset: 0, model: "llama3.2", tokens: 200 },
    ...batch.map((job, i) => ({ ...job, offset: 1 + Math.floor((i * UNEVEN_WINDOW_MS) / batch.length) })),
  ];
  for (let i = 0; i < INTERACTIVE_COUNT; i++) {
    jobs.push({ offset: (i + 1) * INTERACTIVE_EVERY_MS, model: "llama3.2", priority: 5, tokens: 4 });
  }
  // Stable: a block keeps its order.
  return jobs.sort((a, b) => a.offset - b.offset);
}

async function benchUneven(): Promise<string> {
  const fake: FakeOllamaOptions = {
    modelDelays: Object.fromEntries(UNEVEN.map((m) => [`${m.model}:latest`, { loadMs: m.loadMs, tokenMs: m.tokenMs }])),
  };
  const env = { FOREMAN_MAX_WAIT: UNEVEN_MAX_WAIT };
  // Two jobs per model, largest first (so the small one is resident at the start), teach the costs.
  const warmup = [...UNEVEN].reverse().flatMap(({ model }) => [0, 1].map(() => ({ offset: 0, model, tokens: 10 })));
  const maxWaitMs = 5_000;
  const outcomes = [
    await run("fifo", unevenTrace(), fake, { ...env, FOREMAN_SCHEDULE: "fifo" }, maxWaitMs, warmup),
    await run("drain-oldest", unevenTrace(), fake, { ...env, FOREMAN_SCHEDULE: "drain-oldest" }, maxWaitMs, warmup),
    await run("drain (cost-aware, the default)", unevenTrace(), fake, { ...env, FOREMAN_SCHEDULE: "drain" }, maxWaitMs, warmup),
  ];
  const oldest = outcomes[1]!;
  const interactive = (o: Outcome) => o.jobs.filter((j) => j.priority > 0).map((j) => j.startedAt! - j.createdAt);
  return [
    `### Scheduling with uneven costs: ${UNEVEN.map((m) => `${m.batch} × ${m.model} (load ${m.loadMs} ms, ${m.tokenMs} ms/token)`).join(", ")}`,
    `submitted block by block within ${UNEVEN_WINDOW_MS} ms, largest model first, plus ${INTERACTIVE_COUNT} interactive jobs (priority 5, llama3.2) one every ${INTERACTIVE_EVERY_MS} ms; FOREMAN_MAX_WAIT ${UNEVEN_MAX_WAIT}.`,
    `Times are real ones ÷ ${SCALE} (loads of 0.3 s, 1 s, 3 s, 8 s). Before the trace, two jobs per model (largest first) teach`,
    "foreman the costs, as on a server that has run these models before; llama3.2 is loaded when the trace starts.",
    "",
    table(
      [
        "policy",
        "swaps",
        "makespan s",
        "lower bound s",
        "makespan / bound",
        "wait mean s",
        "vs drain-oldest",
        "wait p95 s",
        "wait max s",
        "max wait + longest job s",
        "interactive wait max s",
        "GPU utilisation",
      ],
      outcomes.map((o) => [
        o.label,
        o.swaps,
        s(o.makespanMs),
        s(o.lowerBoundMs),
        (o.makespanMs / o.lowerBoundMs).toFixed(3),
        s(mean(o.waits)),
        `${Math.round((mean(o.waits) / mean(oldest.waits)) * 100)}%`,
        s(quantile(o.waits, 0.95)),
        s(Math.max(...o.waits)),
        o.label === "fifo" ? "-" : s(o.maxWaitMs + o.longestRunMs),
        s(Math.max(...interactive(o))),
        o.utilisation.toFixed(3),
      ]),
    ),
    "",
    "The lower bound is each model's load once plus every job's generation time, as the fake served them: no order beats it.",
    "An interactive job for a model other than the loaded one costs a swap there and back, which the bound does not count.",
  ].join("\n");
}

export async function benchSchedule(): Promise<string> {
  return [await benchInterleaved(), await benchUneven()].join("\n\n");
}
