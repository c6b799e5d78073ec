// One foreman node's runner, reduced to the queue: holds the lease of one target (the test wrote its row)
// and loops claim → a job of 1–3 ms → finish until the queue is empty, then prints what it ran as JSON.
// Usage: bun test/queue/pg-claimer.ts <url> <target> <token>
import { SQL } from "bun";
import type { ClaimPolicy } from "../../src/queue/claim-rules";
import { PgJobStore } from "../../src/queue/pg/job-store";

const [url, target, token] = process.argv.slice(2);
if (!url || !target || !token) throw new Error("usage: pg-claimer.ts <url> <target> <token>");
const sql = new SQL(url, { max: 2 });
const store = new PgJobStore(sql);
const fence = { target, token: Number(token) };
const spans: { id: string; start: number; end: number }[] = [];
const claimMs: number[] = [];
let resident: string[] = [];

for (;;) {
  const policy: ClaimPolicy = { schedule: "drain", residentKeys: resident, maxWaitMs: 120_000, target };
  const t0 = performance.now();
  const job = await store.claimNextJob(policy, fence);
  claimMs.push(performance.now() - t0);
  if (!job) {
    // Nothing runnable for us: done once nothing is queued (another claimer may hold the last jobs).
    if ((await store.queuedCount()) === 0) break;
    await Bun.sleep(1);
    continue;
  }
  const start = Date.now();
  resident = [job.modelKey];
  await Bun.sleep(1 + Math.floor(Math.random() * 3));
  const end = Date.now();
  const done = await store.finishJob(job.id, fence, "{}");
  if (!done) throw new Error(`finish of ${job.id} changed nothing`);
  spans.push({ id: job.id, start, end });
}
await sql.close();
process.stdout.write(JSON.stringify({ target, spans, claimMs }));
