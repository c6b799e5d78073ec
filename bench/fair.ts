// Fair share between API keys (issue #20 item 4), against the fake GPU in a process of its own: key A
// floods FLOOD jobs of one model at once; key B sends one job every B_EVERY_MS, alternately for the same
// model and for another. The same trace with FOREMAN_FAIR_SHARE=on and =off (drain-by-model alone), side
// by side: B's waits against 2 × (one job + one load), makespan and swaps of both, and the largest gap
// between two waiting keys' counters, sampled through the run.
//
// Scale: real times ÷ 10. A job of ~0.2 s (10 tokens at 20 ms), a load of 3 s, B one job a second become
// 10 tokens at 2 ms, loads of 300 ms, and B every 100 ms.
import { join } from "node:path";
import { loadConfig } from "../src/config";
import type { JobRow } from "../src/queue/store";
import { startServer } from "../src/server";
import { foremanEnv, tempDir } from "../test/harness";
import { quantile, table, targets } from "./stats";

const SAME = "llama3.2:latest";
const OTHER = "qwen3:latest";
const LOAD_MS = 300;
const TOKEN_MS = 2;
const TOKENS = 10;
const FLOOD = 500;
const B_JOBS = 100;
const B_EVERY_MS = 100;
const TOKEN = "bench-admin-token";
/** FOREMAN_FAIR_SLACK values run beside the default (2). */
const SLACK_SWEEP = [1, 4, 8];

async function startFake() {
  const child = Bun.spawn(["bun", join(import.meta.dir, "..", "test", "fake-ollama-main.ts")], {
    stdout: "pipe",
    stderr: "inherit",
    env: {
      ...process.env,
      FAKE_MODEL_DELAYS: JSON.stringify({
        [SAME]: { loadMs: LOAD_MS, tokenMs: TOKEN_MS },
        [OTHER]: { loadMs: LOAD_MS, tokenMs: TOKEN_MS },
      }),
    },
  });
  const { value } = await child.stdout.getReader().read();
  const url = `http://127.0.0.1:${Number(new TextDecoder().decode(value).trim())}`;
  return {
    url,
    swaps: async () => ((await (await fetch(`${url}/_fake/log`)).json()) as { swaps: number }).swaps,
    stop: () => child.kill(),
  };
}

interface Outcome {
  label: string;
  makespanMs: number;
  swaps: number;
  /** B's waits (claimed − queued), ms: all of them, and those of the other model alone. */
  bWaits: number[];
  bSameWaits: number[];
  bOtherWaits: number[];
  aLastFinishMs: number;
  /** The largest counter gap (GPU-ms) between two keys with jobs waiting, sampled every 10 ms; null when off. */
  maxGapMs: number | null;
  /** 2 × (one job + one load), from the costs this run learned. */
  boundMs: number;
}

async function run(fairShare: "on" | "off", slackLoads = 2): Promise<Outcome> {
  const fake = await startFake();
  const dir = tempDir();
  const foreman = await startServer(
    loadConfig(
      foremanEnv(fake.url, dir.path, {
        FOREMAN_POLL_INTERVAL: "1h",
        FOREMAN_TOKEN: TOKEN,
        FOREMAN_MAX_QUEUE: "5000",
        FOREMAN_FAIR_SHARE: fairShare,
        FOREMAN_FAIR_SLACK: String(slackLoads),
      }),
    ),
  );
  const post = async (path: string, secret: string, body: unknown) => {
    const response = await fetch(`${foreman.url}${path}`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${secret}` },
      body: JSON.stringify(body),
    });
    if (response.status >= 300) throw new Error(`${path}: ${response.status} ${await response.text()}`);
    return (await response.json()) as { id: string; secret: string };
  };
  const submit = (secret: string, model: string, prompt: string) =>
    post("/jobs", secret, { type: "generate", request: { model, prompt, options: { num_predict: TOKENS } } }).then((r) => r.id);
  const ended = async (id: string) => {
    for await (const event of foreman.jobs.watch(id)) if (event.type === "ended") return;
  };
  try {
    const a = (await post("/admin/keys", TOKEN, { name: "flood", role: "client" })).secret;
    const b = (await post("/admin/keys", TOKEN, { name: "trickle", role: "client" })).secret;
    // Two jobs per model, the flood's model last: costs learned and SAME resident, as on a server in use.
    for (const model of [OTHER, SAME, OTHER, SAME]) await ended(await submit(TOKEN, model, "warm-up"));
    const swapsBefore = await fake.swaps();
    const store = foreman.jobs.store;
    const warm = new Set(store.listJobs({ limit: 100 }).map((j) => j.id));

    let maxGap = 0;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        const waiting = store.fair.waiting();
        if (waiting.length >= 2) maxGap = Math.max(maxGap, waiting.at(-1)!.counter - waiting[0]!.counter);
        await Bun.sleep(10);
      }
    })();

    const aIds = await Promise.all(Array.from({ length: FLOOD }, (_, i) => submit(a, SAME, `a ${i}`)));
    const start = performance.now();
    const bIds: string[] = [];
    for (let i = 0; i < B_JOBS; i++) {
      await Bun.sleep(Math.max(0, i * B_EVERY_MS - (performance.now() - start)));
      bIds.push(await submit(b, i % 2 === 0 ? SAME : OTHER, `b ${i}`));
    }
    await Promise.all([...aIds, ...bIds].map(ended));
    sampling = false;
    await sampler;

    const jobs = store.listJobs({ limit: 1000 }).filter((j) => !warm.has(j.id));
    if (jobs.length !== FLOOD + B_JOBS || jobs.some((j) => j.state !== "done"))
      throw new Error(`fair share ${fairShare}: not every job is done`);
    const byId = new Map(jobs.map((j) => [j.id, j]));
    const wait = (j: JobRow) => j.startedAt! - j.createdAt;
    const bJobs = bIds.map((id) => byId.get(id)!);
    const first = Math.min(...jobs.map((j) => j.createdAt));
    const costs = [SAME, OTHER].map((m) => store.costs.get(m)!);
    const jobMs = Math.max(...costs.map((c) => c.runMs ?? 0));
    const loadMs = Math.max(...costs.map((c) => c.loadMs ?? 0));
    return {
      label:
        fairShare === "off"
          ? "drain-by-model alone (FOREMAN_FAIR_SHARE=off)"
          : `fair share, slack ${slackLoads} loads${slackLoads === 2 ? " (default)" : ""}`,
      makespanMs: Math.max(...jobs.map((j) => j.finishedAt!)) - first,
      swaps: (await fake.swaps()) - swapsBefore,
      bWaits: bJobs.map(wait),
      bSameWaits: bJobs.filter((j) => j.modelKey === SAME).map(wait),
      bOtherWaits: bJobs.filter((j) => j.modelKey === OTHER).map(wait),
      aLastFinishMs: Math.max(...aIds.map((id) => byId.get(id)!.finishedAt!)) - first,
      maxGapMs: fairShare === "on" ? maxGap : null,
      boundMs: 2 * (jobMs + loadMs),
    };
  } finally {
    await foreman.stop();
    fake.stop();
    dir.cleanup();
  }
}

const s = (ms: number) => (ms / 1000).toFixed(2);

export async function benchFair(): Promise<string> {
  const off = await run("off");
  const on = await run("on");
  // The slack's trade: fewer loads of slack, shorter waits for B's other model and more swaps.
  const sweep = [];
  for (const slack of SLACK_SWEEP) sweep.push(await run("on", slack));
  const p95 = (o: Outcome) => quantile(o.bWaits, 0.95);
  const bound = on.boundMs;
  const makespanRatio = on.makespanMs / off.makespanMs;
  const swapRatio = on.swaps / Math.max(1, off.swaps);
  targets.push({
    target: "fair share: B's p95 wait ≤ 2 × (job + load)",
    figure: `${s(p95(on))} s (off: ${s(p95(off))} s)`,
    goal: `≤ ${s(bound)} s`,
    met: p95(on) <= bound,
  });
  targets.push({
    target: "fair share: makespan vs drain-by-model",
    figure: makespanRatio.toFixed(3),
    goal: "≤ 1.1",
    met: makespanRatio <= 1.1,
  });
  targets.push({
    target: "fair share: swaps vs drain-by-model",
    figure: `${on.swaps} vs ${off.swaps}`,
    goal: "≤ 1.1×",
    met: swapRatio <= 1.1,
  });
  return [
    `### Fair share: key A floods ${FLOOD} jobs of ${SAME.split(":")[0]}; key B sends one job every ${B_EVERY_MS} ms (${B_JOBS}), alternately ${SAME.split(":")[0]} and ${OTHER.split(":")[0]}`,
    "",
    `Real times ÷ 10: loads ${LOAD_MS} ms, ${TOKENS} tokens at ${TOKEN_MS} ms a job (plus foreman's and the fake's overhead), B every ${B_EVERY_MS} ms.`,
    `Bound for B: 2 × (one job + one load) = ${s(bound)} s, from the costs the run learned.`,
    "",
    table(
      [
        "schedule",
        "makespan s",
        "A done at s",
        "swaps",
        "B wait p50 s",
        "B wait p95 s",
        "B same-model p95 s",
        "B other-model p95 s",
        "B wait max s",
        "max counter gap s",
      ],
      [off, on, ...sweep].map((o) => [
        o.label,
        s(o.makespanMs),
        s(o.aLastFinishMs),
        o.swaps,
        s(quantile(o.bWaits, 0.5)),
        s(p95(o)),
        s(quantile(o.bSameWaits, 0.95)),
        s(quantile(o.bOtherWaits, 0.95)),
        s(Math.max(...o.bWaits)),
        o.maxGapMs === null ? "-" : s(o.maxGapMs),
      ]),
    ),
    "",
    `With the default slack: makespan ${Math.round(makespanRatio * 100)}% and swaps ${on.swaps} against ${off.swaps} of drain-by-model alone.`,
    "Every visit to B's other model during the flood costs two loads (there and back); the slack sets how often one comes,",
    "so it trades B's other-model wait against swaps and makespan. The counter gap stays within slack + one job.",
  ].join("\n");
}
