// PgJobStore against JobStore on SQLite, in one run: enqueue rate (one job per transaction, and 100 per
// enqueueMany) and claim latency with 100,000 queued over 4 models and 2 priorities. A throwaway local cluster
// (test/pg-cluster.ts: fsync off), so the figures are the engines' and the round trips', not a disk's.
// Usage: bun bench/pg-store.ts
import type { SQL } from "bun";
import { join } from "node:path";
import type { ClaimPolicy } from "../src/queue/claim-rules";
import { openDatabase } from "../src/queue/db";
import { openPg } from "../src/queue/pg/db";
import { type Fence, PgJobStore } from "../src/queue/pg/job-store";
import { JobStore, type NewJob } from "../src/queue/store";
import { startPgCluster } from "../test/pg-cluster";
import { tempDir } from "../test/harness";
import { median, quantile, seededRandom, table } from "./stats";

const QUEUED = 100_000;
const CLAIMS = 1_000;
const ENQUEUES = 2_000;
const MODELS = ["llama3.2", "qwen3", "mistral", "gemma3"];
const fence: Fence = { target: "gpu0", token: 1 };

const job = (i: number, random: () => number): NewJob => {
  const model = MODELS[Math.floor(random() * MODELS.length)]!;
  return {
    type: "chat",
    model,
    modelKey: `${model}:latest`,
    request: '{"model":"x"}',
    source: "jobs",
    priority: random() < 0.05 ? 1 : 0,
    maxAttempts: 3,
    idempotencyKey: i % 10 === 0 ? `k${i}` : undefined,
  };
};

/** The schedules measured: the loaded model's next job, and a model change (drain ranks the groups). */
const POLICIES: [string, ClaimPolicy][] = [
  ["fifo", { schedule: "fifo", residentKeys: [], maxWaitMs: 600_000 }],
  ["drain, loaded model", { schedule: "drain", residentKeys: ["qwen3:latest"], maxWaitMs: 600_000 }],
  ["drain, model change", { schedule: "drain", residentKeys: ["none:latest"], maxWaitMs: 600_000 }],
];

const us = (ms: number) => Math.round(ms * 1000);

async function timeAsync(n: number, run: (i: number) => Promise<unknown>): Promise<number[]> {
  const samples: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await run(i);
    samples.push(performance.now() - t0);
  }
  return samples;
}

function timeSync(n: number, run: (i: number) => unknown): number[] {
  return Array.from({ length: n }, (_, i) => {
    const t0 = performance.now();
    run(i);
    return performance.now() - t0;
  });
}

const rate = (samples: number[], perSample: number) =>
  Math.round((samples.length * perSample) / (samples.reduce((a, b) => a + b, 0) / 1000));

async function main() {
  const cluster = await startPgCluster();
  const dir = tempDir();
  let sql: SQL | undefined;
  try {
    sql = await openPg(cluster.url, { poolSize: 4 });
    const pg = new PgJobStore(sql);
    const db = openDatabase(join(dir.path, "bench.db"));
    const lite = new JobStore(db);
    await sql`INSERT INTO target_leases VALUES ('gpu0', 'bench', 1, now() + interval '1 hour')`;

    const rows: (string | number)[][] = [];
    let random = seededRandom(1);
    const pgOne = await timeAsync(ENQUEUES, (i) => pg.enqueue(job(i, random), 1e9));
    random = seededRandom(1);
    const liteOne = timeSync(ENQUEUES, (i) => lite.enqueue(job(i, random), 1e9));
    random = seededRandom(2);
    const batch = (base: number) => Array.from({ length: 100 }, (_, i) => job(ENQUEUES + base + i, random));
    const pgMany = await timeAsync(ENQUEUES / 100, (i) => pg.enqueueMany(batch(i * 100), 1e9));
    random = seededRandom(2);
    const liteMany = timeSync(ENQUEUES / 100, (i) => lite.enqueueMany(batch(i * 100), 1e9));
    rows.push(["enqueue, one per transaction", rate(liteOne, 1), rate(pgOne, 1), us(median(liteOne)), us(median(pgOne))]);
    rows.push([
      "enqueueMany, 100 per transaction",
      rate(liteMany, 100),
      rate(pgMany, 100),
      us(median(liteMany)),
      us(median(pgMany)),
    ]);

    // The rest of the 100,000 rows (the claim's depth), written in bulk on both sides.
    const fill = QUEUED - 2 * ENQUEUES;
    random = seededRandom(3);
    const bulk = Array.from({ length: fill }, (_, i) => job(10 * ENQUEUES + i, random));
    lite.enqueueMany(bulk, 1e9);
    for (let i = 0; i < bulk.length; i += 1000) await pg.enqueueMany(bulk.slice(i, i + 1000), 1e9);
    await sql`VACUUM ANALYZE`;

    const claims: (string | number)[][] = [];
    for (const [name, policy] of POLICIES) {
      const liteClaims = timeSync(CLAIMS, () => {
        const claimed = lite.claimNextJob(policy)!;
        lite.finishJob(claimed.id, "{}", []);
      });
      const pgClaims: number[] = [];
      for (let i = 0; i < CLAIMS; i++) {
        const t0 = performance.now();
        const claimed = (await pg.claimNextJob(policy, fence))!;
        pgClaims.push(performance.now() - t0);
        await pg.finishJob(claimed.id, fence, "{}");
      }
      claims.push([
        name,
        us(median(liteClaims)),
        us(quantile(liteClaims, 0.99)),
        us(median(pgClaims)),
        us(quantile(pgClaims, 0.99)),
      ]);
    }
    db.close();
    console.log(
      [
        `### Enqueue: ${ENQUEUES} jobs each way (a tenth with an idempotency key)`,
        "",
        table(["", "SQLite jobs/s", "PostgreSQL jobs/s", "SQLite median µs", "PostgreSQL median µs"], rows),
        "",
        `### Claim (and its job's finish, not timed) out of ${QUEUED.toLocaleString("en-US")} queued, ${CLAIMS} claims each`,
        "",
        table(["schedule", "SQLite median µs", "SQLite p99 µs", "PostgreSQL median µs", "PostgreSQL p99 µs"], claims),
      ].join("\n"),
    );
  } finally {
    await sql?.close();
    await cluster.stop();
    dir.cleanup();
  }
}

await main();
