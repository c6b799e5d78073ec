// ForemanMetrics over the queue on PostgreSQL (PgQueueStore): the scrape-time gauges agree with the same queue's
// reads and with SQLite's JobStore given the same jobs, the exposition passes promtool, and job ends fed through
// jobEndReporter (whose store answers with Promises there) move the counters and histograms, each node counting
// the ends it made while the gauges agree on every node. The SQLite path stays synchronous: nothing is awaited.
// A real throwaway cluster, one per file, a fresh database per test.
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test } from "bun:test";
import type { SQL } from "bun";
import type { Database } from "bun:sqlite";
import { jobEndReporter } from "../../src/job-ended";
import type { Logger } from "../../src/log";
import { ForemanMetrics, type MetricsSources } from "../../src/metrics";
import { openDatabase } from "../../src/queue/db";
import { openPg } from "../../src/queue/pg/db";
import { type Fence, PgJobStore } from "../../src/queue/pg/job-store";
import { PgQueueStore } from "../../src/queue/pg/queue-store";
import type { QueueStore } from "../../src/queue/queue-store";
import { CLIENT_CANCELED, type ClaimPolicy, type JobRow, JobStore, type JobUsage, type NewJob } from "../../src/queue/store";
import { type PgCluster, pgBinDir, startPgCluster } from "../pg-cluster";

const GPU = "gpu0";
const GPU1 = "gpu1";
const HOUR = 3_600_000;

/** A logger that keeps its lines. */
function keptLog(): Logger & { lines: Array<{ level: string; message: string; fields: Record<string, unknown> }> } {
  const lines: Array<{ level: string; message: string; fields: Record<string, unknown> }> = [];
  const at =
    (level: string) =>
    (message: string, fields: Record<string, unknown> = {}) =>
      lines.push({ level, message, fields });
  return { lines, debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error"), enabled: () => true };
}

/** The exposition's samples, by series (name and labels as printed). */
function samples(text: string): Map<string, number> {
  const result = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const space = line.lastIndexOf(" ");
    result.set(line.slice(0, space), Number(line.slice(space + 1)));
  }
  return result;
}

/** The samples of the named metrics (a name and its _sum, _count, _bucket), the rest left out. */
function only(all: Map<string, number>, names: readonly string[], suffixes = [""]): Record<string, number> {
  const kept: Record<string, number> = {};
  for (const [series, value] of all) {
    const name = series.split("{")[0]!;
    if (names.some((n) => suffixes.some((s) => name === n + s))) kept[series] = value;
  }
  return kept;
}

const GAUGES = ["foreman_queue_depth", "foreman_queue_jobs"] as const;
/** The job-end series that do not depend on how long anything took: compared across engines. */
const TIMELESS = [
  "foreman_jobs_ended_total",
  "foreman_model_swaps_total",
  "foreman_tokens_generated_total",
  "foreman_prompt_tokens_total",
] as const;
const HISTOGRAMS = ["foreman_job_wait_seconds", "foreman_job_run_seconds", "foreman_tokens_per_second"] as const;

async function promtoolCheck(text: string): Promise<{ code: number; output: string }> {
  const child = Bun.spawn(["promtool", "check", "metrics"], { stdin: new Blob([text]), stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([
    new Response(child.stdout).text(),
    new Response(child.stderr).text(),
    child.exited,
  ]);
  return { code, output: out + err };
}

/** The queue as /metrics should show it, from the store's own reads (GET /queue's). */
async function expectedGauges(store: MetricsSources["store"], several: boolean): Promise<Record<string, number>> {
  const expected: Record<string, number> = { foreman_queue_depth: await store.queuedCount() };
  for (const { model, n } of await store.queuedCountByModel())
    expected[`foreman_queue_jobs{model="${model}",state="queued"}`] = n;
  const running = several ? await store.runningJobs() : [await store.runningJob()].filter((job) => job !== null);
  for (const job of running) {
    const series = `foreman_queue_jobs{model="${job!.model}",state="${job!.state}"}`;
    expected[series] = (expected[series] ?? 0) + 1;
  }
  return expected;
}

/** One engine's queue as the scenario drives it: the runner's side by target, the client's cancel. */
interface Queue {
  store: MetricsSources["store"] & Pick<QueueStore, "getJobHead">;
  enqueue(job: NewJob): Promise<string>;
  claim(target: string): Promise<string | null>;
  working(id: string, target: string): Promise<void>;
  finish(id: string, target: string, usage: JobUsage): Promise<void>;
  fail(id: string, target: string): Promise<void>;
  requeue(id: string, target: string): Promise<void>;
  cancel(id: string): Promise<void>;
}

const fifo = (target: string): ClaimPolicy => ({ schedule: "fifo", residentKeys: [], maxWaitMs: HOUR, target });

function sqliteQueue(store: JobStore): Queue {
  const ok = <T>(row: T | null): void => {
    expect(row).not.toBeNull();
  };
  return {
    store,
    enqueue: async (job) => store.enqueue(job, 1000).job.id,
    claim: async (target) => store.claimNextJob(fifo(target))?.id ?? null,
    working: async (id) => ok(store.markWorking(id)),
    finish: async (id, _target, usage) => ok(store.finishJob(id, "{}", [], usage)),
    fail: async (id) => ok(store.failJob(id, "upstream said no", 400)),
    requeue: async (id) => ok(store.requeueJob(id, Date.now() + 60_000, "busy", 503)),
    cancel: async (id) => ok(store.cancelJob(id, CLIENT_CANCELED)),
  };
}

function pgQueue(store: PgQueueStore, fences: Record<string, Fence>): Queue {
  const pg = store.jobs;
  const ok = <T>(row: T | null): void => {
    expect(row).not.toBeNull();
  };
  return {
    store,
    enqueue: async (job) => (await pg.enqueue(job, 1000)).job.id,
    claim: async (target) => (await pg.claimNextJob(fifo(target), fences[target]!))?.id ?? null,
    working: async (id, target) => ok(await pg.markWorking(id, fences[target]!)),
    finish: async (id, target, usage) => ok(await pg.finishJob(id, fences[target]!, "{}", usage)),
    fail: async (id, target) => ok(await pg.failJob(id, fences[target]!, "upstream said no", 400)),
    requeue: async (id, target) => ok(await pg.requeueJob(id, fences[target]!, 60_000, "busy", 503)),
    cancel: async (id) => ok(await pg.cancelJob(id, CLIENT_CANCELED)),
  };
}

const line = (model: string, priority: number, modelKey = `${model}:latest`): NewJob => ({
  type: "chat",
  model,
  modelKey,
  request: "{}",
  source: "jobs",
  priority,
  maxAttempts: 3,
});

/**
 * The same jobs on either engine: queued across models (two names of one model key among them) and
 * priorities, then claimed in fifo order and run, finished, failed, put back for a retry, left running; one
 * canceled while queued. With `several`, a second target claims one more and leaves it loading. Returns the
 * ids of the jobs that ended (in order), and of those queued and running at the end.
 */
async function scenario(queue: Queue, several: boolean): Promise<{ ended: string[]; queued: string[]; running: string[] }> {
  const ids: string[] = [];
  for (const job of [
    line("a", 0),
    line("B", 0, "b:latest"),
    line("b:latest", 2),
    line("été", 0),
    line("a", -1),
    line("a", 0),
    line("B", 1, "b:latest"),
    line("été", 2),
  ])
    ids.push(await queue.enqueue(job));
  const next = async (target = GPU) => {
    const id = await queue.claim(target);
    expect(id).not.toBeNull();
    return id!;
  };
  // fifo: priority 2 first (oldest first), then 1, then 0, then -1.
  const done = await next();
  expect(done).toBe(ids[2]!);
  await queue.working(done, GPU);
  await queue.finish(done, GPU, { promptTokens: 7, outputTokens: 21, loadMs: 120, evalMs: 300 });
  const failed = await next();
  expect(failed).toBe(ids[7]!);
  await queue.fail(failed, GPU);
  const retried = await next();
  expect(retried).toBe(ids[6]!);
  await queue.requeue(retried, GPU);
  const running = await next();
  expect(running).toBe(ids[0]!);
  await queue.working(running, GPU);
  await queue.cancel(ids[3]!);
  const ended = [done, failed, ids[3]!];
  if (!several) return { ended, queued: [retried, ids[1]!, ids[4]!, ids[5]!], running: [running] };
  const loading = await next(GPU1);
  expect(loading).toBe(ids[1]!);
  return { ended, queued: [retried, ids[4]!, ids[5]!], running: [running, loading] };
}

const inventory = { snapshot: { degraded: false } };
const twoTargets = () => [
  { name: GPU, up: true },
  { name: GPU1, up: true },
];
const metricsOver = (store: MetricsSources["store"], several: boolean) =>
  new ForemanMetrics({ store, inventory, targets: several ? twoTargets : undefined });

/** A gauge's collect, called as prom-client calls it: what it returns (a Promise only for an async store). */
function collectOf(metrics: ForemanMetrics, name: string): unknown {
  const metric = metrics.registry.getSingleMetric(name) as unknown as { collect(): unknown };
  return metric.collect();
}

describe.skipIf(!pgBinDir())("/metrics over PostgreSQL", () => {
  let cluster: PgCluster;
  let url: string;
  let sql: SQL;
  let store: PgQueueStore;
  let fences: Record<string, Fence>;
  let db: Database;
  let lite: JobStore;
  let dbCount = 0;
  const open: SQL[] = [];

  beforeAll(async () => {
    cluster = await startPgCluster();
  });
  afterAll(async () => {
    for (const client of open) await client.close().catch(() => {});
    await cluster?.stop();
  });
  beforeEach(async () => {
    const name = `m${++dbCount}`;
    await cluster.createDatabase(name);
    url = cluster.urlFor(name);
    sql = await openPg(url, { poolSize: 4 });
    open.push(sql);
    store = new PgQueueStore(sql, new PgJobStore(sql));
    fences = {};
    for (const target of [GPU, GPU1]) {
      await sql`INSERT INTO target_leases (target, node, token, expires_at) VALUES (${target}, 'test', 1, now() + interval '1 minute')`;
      fences[target] = { target, token: 1 };
    }
    db = openDatabase(":memory:");
    lite = new JobStore(db);
  });
  afterEach(() => db.close());

  for (const several of [false, true]) {
    const label = several ? "several targets" : "one target";

    test(`${label}: the gauges agree with the queue's reads, and the exposition passes promtool`, async () => {
      const { queued, running } = await scenario(pgQueue(store, fences), several);
      const metrics = metricsOver(store, several);
      // Over PostgreSQL a gauge's collect is a Promise, which registry.metrics() awaits.
      expect(collectOf(metrics, "foreman_queue_depth")).toBeInstanceOf(Promise);
      const text = await metrics.registry.metrics();
      const gauges = only(samples(text), GAUGES);
      expect(gauges).toEqual(await expectedGauges(store, several));
      // And that is the queue the scenario left: what it queued and runs.
      expect(gauges.foreman_queue_depth).toBe(queued.length);
      const runningSeries = Object.entries(gauges).filter(([series]) => /state="(loading|working)"/.test(series));
      expect(runningSeries.reduce((n, [, value]) => n + value, 0)).toBe(running.length);
      expect(await promtoolCheck(text)).toEqual({ code: 0, output: "" });
    });

    test(`${label}: the same jobs on SQLite and on PostgreSQL give the same gauges, and the same job-end counts`, async () => {
      const onPg = await scenario(pgQueue(store, fences), several);
      const onLite = await scenario(sqliteQueue(lite), several);
      const pgMetrics = metricsOver(store, several);
      const liteMetrics = metricsOver(lite, several);
      const [pgReport, liteReport] = [jobEndReporter(store, pgMetrics, keptLog()), jobEndReporter(lite, liteMetrics, keptLog())];
      for (const id of onPg.ended) await pgReport(id);
      for (const id of onLite.ended) liteReport(id);
      const [pgText, liteText] = [await pgMetrics.registry.metrics(), await liteMetrics.registry.metrics()];
      const [pgAll, liteAll] = [samples(pgText), samples(liteText)];
      expect(only(pgAll, GAUGES)).toEqual(only(liteAll, GAUGES));
      expect(Object.keys(only(pgAll, GAUGES)).length).toBeGreaterThan(3);
      expect(only(pgAll, TIMELESS)).toEqual(only(liteAll, TIMELESS));
      expect(only(pgAll, HISTOGRAMS, ["_count"])).toEqual(only(liteAll, HISTOGRAMS, ["_count"]));
      // Every series either shows (the exposition's shape), timings aside; running jobs started in the same
      // millisecond may come in either order.
      const shape = (text: string) =>
        text
          .replace(/ [-+\d.e]+$/gm, "")
          .replace(/^process_.*$/gm, "")
          .split("\n")
          .sort()
          .join("\n");
      expect(shape(pgText)).toBe(shape(liteText));
    });
  }

  test("a job end fed through the reporter moves the counters and histograms, and logs its line", async () => {
    const { ended } = await scenario(pgQueue(store, fences), false);
    const metrics = metricsOver(store, false);
    const log = keptLog();
    const report = jobEndReporter(store, metrics, log);
    const before = samples(await metrics.registry.metrics());
    expect(only(before, ["foreman_jobs_ended_total"])).toEqual({});
    const [done, failed, canceled] = ended as [string, string, string];
    const reported = report(done);
    expect(reported).toBeInstanceOf(Promise);
    await reported;
    let after = samples(await metrics.registry.metrics());
    const row = (await store.getJobHead(done))!;
    expect(only(after, ["foreman_jobs_ended_total"])).toEqual({
      [`foreman_jobs_ended_total{type="chat",model="${row.model}",outcome="done",source="jobs"}`]: 1,
    });
    expect(after.get(`foreman_job_wait_seconds_count{model="${row.model}"}`)).toBe(1);
    expect(after.get(`foreman_job_run_seconds_count{model="${row.model}"}`)).toBe(1);
    expect(after.get(`foreman_job_run_seconds_sum{model="${row.model}"}`)).toBe((row.finishedAt! - row.startedAt!) / 1000);
    expect(after.get(`foreman_tokens_generated_total{model="${row.model}"}`)).toBe(21);
    expect(after.get(`foreman_prompt_tokens_total{model="${row.model}"}`)).toBe(7);
    // 21 tokens over Ollama's 300 ms of eval.
    expect(after.get(`foreman_tokens_per_second_count{model="${row.model}"}`)).toBe(1);
    expect(after.get(`foreman_tokens_per_second_sum{model="${row.model}"}`)).toBe(70);
    expect(after.get(`foreman_model_swaps_total{model="${row.model}"}`)).toBe(1);
    expect(log.lines).toEqual([
      {
        level: "info",
        message: "job ended",
        fields: expect.objectContaining({ job: done, model: row.model, outcome: "done", attempts: 1, target: GPU }),
      },
    ]);

    await report(failed);
    await report(canceled);
    // An id with no row: nothing counted, nothing logged.
    await report("no-such-job");
    after = samples(await metrics.registry.metrics());
    const ends = only(after, ["foreman_jobs_ended_total"]);
    expect(Object.values(ends).reduce((a, b) => a + b, 0)).toBe(3);
    for (const id of [failed, canceled]) {
      const job = (await store.getJobHead(id))!;
      expect(ends[`foreman_jobs_ended_total{type="chat",model="${job.model}",outcome="${job.state}",source="jobs"}`]).toBe(1);
    }
    expect(log.lines.map((l) => [l.message, l.fields.job, l.fields.outcome])).toEqual([
      ["job ended", done, "done"],
      ["job ended", failed, "failed"],
      ["job ended", canceled, "canceled"],
    ]);
    expect(await promtoolCheck(await metrics.registry.metrics())).toEqual({ code: 0, output: "" });
  });

  test("a row that cannot be read is logged at warn, the end uncounted, and the reporter's Promise does not reject", async () => {
    const metrics = metricsOver(store, false);
    const log = keptLog();
    const report = jobEndReporter({ getJobHead: () => Promise.reject(new Error("connection lost")) }, metrics, log);
    await report("job-1");
    expect(log.lines).toEqual([
      { level: "warn", message: "job end not reported", fields: { job: "job-1", error: new Error("connection lost") } },
    ]);
    expect(only(samples(await metrics.registry.metrics()), ["foreman_jobs_ended_total"])).toEqual({});
  });

  test("two nodes on one queue: the gauges agree on both, and each counts the job ends it reported", async () => {
    const { ended } = await scenario(pgQueue(store, fences), false);
    // Node B: its own connections to the same database, its own stores and metrics.
    const sqlB = await openPg(url, { poolSize: 2 });
    open.push(sqlB);
    const storeB = new PgQueueStore(sqlB, new PgJobStore(sqlB));
    const [a, b] = [metricsOver(store, false), metricsOver(storeB, false)];
    const [reportA, reportB] = [jobEndReporter(store, a, keptLog()), jobEndReporter(storeB, b, keptLog())];
    // Node A ended the job it ran and the one that failed there; node B the cancel made through it.
    await reportA(ended[0]!);
    await reportA(ended[1]!);
    await reportB(ended[2]!);
    const [onA, onB] = [samples(await a.registry.metrics()), samples(await b.registry.metrics())];
    expect(only(onA, GAUGES)).toEqual(only(onB, GAUGES));
    expect(only(onA, GAUGES)).toEqual(await expectedGauges(store, false));
    const total = (all: Map<string, number>) =>
      Object.values(only(all, ["foreman_jobs_ended_total"])).reduce((sum, n) => sum + n, 0);
    expect([total(onA), total(onB)]).toEqual([2, 1]);
    // Summed across the nodes, as Prometheus would: every end once.
    expect(total(onA) + total(onB)).toBe(ended.length);
  });

  test("a model whose jobs all left the queue drops out; overlapping scrapes each show the whole queue", async () => {
    await scenario(pgQueue(store, fences), false);
    const metrics = metricsOver(store, false);
    const first = only(samples(await metrics.registry.metrics()), GAUGES);
    expect(first['foreman_queue_jobs{model="a",state="queued"}']).toBeGreaterThan(0);
    // Every queued job of model "a" canceled.
    const queuedA = (await store.listJobs({ state: "queued", model: "a", limit: 100 })).map((job: JobRow) => job.id);
    expect(queuedA.length).toBeGreaterThan(0);
    await store.cancelJobs(queuedA, CLIENT_CANCELED);
    const scrapes = await Promise.all([0, 1, 2, 3].map(() => metrics.registry.metrics()));
    const expected = await expectedGauges(store, false);
    expect(expected['foreman_queue_jobs{model="a",state="queued"}']).toBeUndefined();
    for (const text of scrapes) expect(only(samples(text), GAUGES)).toEqual(expected);
  });
});

test("over SQLite's JobStore the gauges' collect and the reporter answer synchronously: nothing is awaited", () => {
  const db = openDatabase(":memory:");
  try {
    const lite = new JobStore(db);
    const first = lite.enqueue(line("a", 0), 1000).job;
    lite.enqueue(line("B", 1, "b:latest"), 1000);
    for (const several of [false, true]) {
      const metrics = metricsOver(lite, several);
      expect(collectOf(metrics, "foreman_queue_depth")).toBeUndefined();
      expect(collectOf(metrics, "foreman_queue_jobs")).toBeUndefined();
      const gauges = metrics.registry.getSingleMetric("foreman_queue_jobs") as unknown as {
        hashMap: Record<string, { labels: Record<string, string>; value: number }>;
      };
      // Set in that same call.
      expect(Object.values(gauges.hashMap).map(({ labels, value }) => [labels.model, labels.state, value])).toEqual([
        ["B", "queued", 1],
        ["a", "queued", 1],
      ]);
    }
    const claimed = lite.claimNextJob(fifo(GPU))!;
    lite.finishJob(claimed.id, "{}", [], { promptTokens: 1, outputTokens: 2, loadMs: null, evalMs: null });
    const metrics = metricsOver(lite, false);
    const log = keptLog();
    expect(jobEndReporter(lite, metrics, log)(claimed.id)).toBeUndefined();
    // Counted and logged before the reporter returned.
    expect(log.lines.map((l) => l.fields.job)).toEqual([claimed.id]);
    expect(first.id).not.toBe(claimed.id);
  } finally {
    db.close();
  }
});
