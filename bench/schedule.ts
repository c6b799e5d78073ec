// Drain-by-model against FIFO on one seeded trace: 120 jobs over 4 models, all arriving while the
// GPU is busy, against a fake whose model swap (load) costs far more than a generation.
import type { JobRow } from "../src/queue/store";
import { startStack } from "../test/harness";
import { median, quantile, seededRandom, table } from "./stats";

const JOBS = 120;
const MODELS = ["llama3.2", "qwen3", "mistral", "gemma3"];
const LOAD_MS = 250;
const TOKEN_MS = 5;
const ARRIVAL_WINDOW_MS = 200;

/** The trace: job i arrives at offset ms, for model. The first arrives at 0 and starts the GPU. */
function trace(): Array<{ offset: number; model: string }> {
  const random = seededRandom(2024);
  const jobs = Array.from({ length: JOBS }, (_, i) => ({
    offset: i === 0 ? 0 : 1 + Math.floor(random() * ARRIVAL_WINDOW_MS),
    model: MODELS[Math.floor(random() * MODELS.length)]!,
  }));
  return jobs.sort((a, b) => a.offset - b.offset);
}

interface Outcome {
  label: string;
  maxWaitMs: number;
  swaps: number;
  promotions: number;
  makespanMs: number;
  waits: number[];
  longestRunMs: number;
}

async function run(label: string, env: Record<string, string>, maxWaitMs: number): Promise<Outcome> {
  const stack = await startStack({
    fake: { loadDelayMs: LOAD_MS, tokenDelayMs: TOKEN_MS },
    env: { FOREMAN_POLL_INTERVAL: "1h", ...env },
  });
  try {
    const start = performance.now();
    await Promise.all(
      trace().map(async ({ offset, model }, i) => {
        await Bun.sleep(Math.max(0, offset - (performance.now() - start)));
        const response = await fetch(`${stack.foreman.url}/jobs`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ type: "generate", request: { model, prompt: `job ${i}` } }),
        });
        if (response.status !== 202) throw new Error(`submit failed: ${response.status}`);
      }),
    );
    const store = stack.foreman.jobs.store;
    let jobs: JobRow[] = [];
    for (;;) {
      jobs = store.listJobs({ limit: 500 });
      if (jobs.length === JOBS && jobs.every((j) => j.state === "done")) break;
      await Bun.sleep(50);
    }
    jobs.sort((a, b) => a.startedAt! - b.startedAt!);
    // A promotion is a claim the starvation guard made: an overdue job that forced a model change.
    let promotions = 0;
    for (let i = 1; i < jobs.length; i++) {
      const job = jobs[i]!;
      if (job.modelKey !== jobs[i - 1]!.modelKey && job.startedAt! - job.createdAt > maxWaitMs) promotions++;
    }
    return {
      label,
      maxWaitMs,
      swaps: stack.fake.swaps,
      promotions,
      makespanMs: Math.max(...jobs.map((j) => j.finishedAt!)) - Math.min(...jobs.map((j) => j.createdAt)),
      waits: jobs.map((j) => j.startedAt! - j.createdAt),
      longestRunMs: Math.max(...jobs.map((j) => j.finishedAt! - j.startedAt!)),
    };
  } finally {
    await stack.stop();
  }
}

export async function benchSchedule(): Promise<string> {
  const outcomes = [
    await run("fifo", { FOREMAN_SCHEDULE: "fifo" }, 120_000),
    await run("drain (max wait 2m, the default)", { FOREMAN_SCHEDULE: "drain" }, 120_000),
    await run("drain (max wait 1s)", { FOREMAN_SCHEDULE: "drain", FOREMAN_MAX_WAIT: "1s" }, 1_000),
  ];
  const s = (ms: number) => (ms / 1000).toFixed(2);
  const fifo = outcomes[0]!;
  return [
    `### Scheduling: ${JOBS} jobs over ${MODELS.length} models arriving within ${ARRIVAL_WINDOW_MS} ms while the GPU is busy (swap ${LOAD_MS} ms, ${TOKEN_MS} ms/token)`,
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
      ],
      outcomes.map((o) => [
        o.label,
        o.swaps,
        o.label === "fifo" ? "-" : o.promotions,
        o.label === "fifo" ? "-" : MODELS.length + o.promotions,
        s(o.makespanMs),
        `${Math.round((o.makespanMs / fifo.makespanMs) * 100)}%`,
        s(median(o.waits)),
        s(quantile(o.waits, 0.95)),
        s(Math.max(...o.waits)),
        o.label === "fifo" ? "-" : s(o.maxWaitMs + o.longestRunMs),
      ]),
    ),
    "",
    "The 1 s row sets the guard below what this burst needs to drain: nearly every job becomes overdue, and overdue jobs run",
    "oldest first (the rule), so drain falls back towards FIFO. FOREMAN_MAX_WAIT belongs above the queue's usual drain time.",
  ].join("\n");
}
