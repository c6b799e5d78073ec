// PgQueueStore (PgQueueReads and PgJobStore's lookups) against JobStore on SQLite: the same jobs answer every read alike. Random sequences of
// enqueues, claims and ends run on a JobStore, whose rows are then copied column for column into a throwaway
// PostgreSQL cluster (one per file, a fresh database per test); and a few edges by example (a page's byte
// budget, cursor paging, unknown ids, a count row left at 0, an aged job).
import { afterAll, beforeAll, beforeEach, describe, expect, test } from "bun:test";
import type { SQL } from "bun";
import type { Database } from "bun:sqlite";
import fc from "fast-check";
import { openDatabase } from "../../src/queue/db";
import { JOB_STATES, type JobSource } from "../../src/queue/job-states";
import { openPg } from "../../src/queue/pg/db";
import { PgJobStore } from "../../src/queue/pg/job-store";
import { PgQueueStore } from "../../src/queue/pg/queue-store";
import { type JobFilter, type JobRow, JobStore, type JobType, type NewJob } from "../../src/queue/store";
import { type PgCluster, startPgCluster } from "../pg-cluster";

let cluster: PgCluster;
let pg: SQL;
let reads: PgQueueStore;
let dbCount = 0;
const open: SQL[] = [];

beforeAll(async () => {
  cluster = await startPgCluster();
});
afterAll(async () => {
  for (const client of open) await client.close().catch(() => {});
  await cluster.stop();
});

beforeEach(async () => {
  const name = `t${++dbCount}`;
  await cluster.createDatabase(name);
  pg = await openPg(cluster.urlFor(name), { poolSize: 2 });
  open.push(pg);
  reads = new PgQueueStore(pg, new PgJobStore(pg));
});

const MINUTE = 60_000;

/**
 * The SQLite side's clock, only ever forward across the whole file: JobStore makes ids with a monotonic ULID
 * factory (one per process), so an enqueue earlier than the last one would get an id of the last one's time,
 * and SQLite's overdue count by id would no longer be its count by created_at (see PgQueueReads.queueGroups).
 */
let clock = 2_000_000_000_000;

/** Models as clients name them, and the model keys they drain under: two names share one key. */
const MODELS = [
  { model: "a", modelKey: "a:latest" },
  { model: "B", modelKey: "b:latest" },
  { model: "b:latest", modelKey: "b:latest" },
  { model: "été", modelKey: "été:latest" },
];
const KEYS = [null, "key_1", "key_2"];
const SOURCES: JobSource[] = ["jobs", "jobs", "batch", "openai", "ollama"];
const TYPES: JobType[] = ["chat", "generate"];

/** A body of about `chars` characters, multi-byte ones among them, so byte sizes are not lengths. */
const body = (chars: number, fill: string) => JSON.stringify({ text: fill.repeat(chars) });

type Op =
  | {
      op: "enqueue";
      model: number;
      priority: number;
      source: JobSource;
      keyId: string | null;
      type: JobType;
      size: number;
      later: number;
    }
  | { op: "claim"; schedule: "fifo" | "drain"; later: number }
  | { op: "working" | "finish" | "fail" | "requeue" | "cancel"; pick: number; later: number; size: number };

const later = fc.constantFrom(0, 0, 1, 700, 45_000, 3 * MINUTE);
const size = fc.constantFrom(0, 10, 300, 4_000);

const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({
      op: fc.constant("enqueue" as const),
      model: fc.nat({ max: MODELS.length - 1 }),
      priority: fc.integer({ min: -1, max: 2 }),
      source: fc.constantFrom(...SOURCES),
      keyId: fc.constantFrom(...KEYS),
      type: fc.constantFrom(...TYPES),
      size,
      later,
    }),
  },
  { weight: 3, arbitrary: fc.record({ op: fc.constant("claim" as const), schedule: fc.constantFrom("fifo", "drain"), later }) },
  {
    weight: 4,
    arbitrary: fc.record({
      op: fc.constantFrom("working" as const, "finish" as const, "fail" as const, "requeue" as const, "cancel" as const),
      pick: fc.nat(),
      later,
      size,
    }),
  },
);

/** Applies one operation to the SQLite store at the clock's time (a claim at least 1 ms after the last: starts never tie). */
function apply(db: Database, store: JobStore, op: Op): void {
  const all = db.query<{ id: string; state: string }, []>("SELECT id, state FROM jobs ORDER BY id").all();
  const pick = (states: string[], n: number) => {
    const some = all.filter((j) => states.includes(j.state));
    return some[n % Math.max(1, some.length)]?.id;
  };
  switch (op.op) {
    case "enqueue": {
      const { model, modelKey } = MODELS[op.model]!;
      const job: NewJob = {
        type: op.type,
        model,
        modelKey,
        request: body(op.size, "é"),
        source: op.source,
        priority: op.priority,
        maxAttempts: 3,
      };
      if (op.keyId) job.owner = { keyId: op.keyId, name: op.keyId, maxJobs: null, dailyTokens: null };
      store.enqueue(job, 1e9, (clock += op.later));
      return;
    }
    case "claim":
      clock += Math.max(1, op.later);
      store.claimNextJob({ schedule: op.schedule, residentKeys: ["a:latest"], maxWaitMs: 2 * MINUTE }, clock);
      return;
    default: {
      clock += op.later;
      const running = ["loading", "working"];
      const id =
        op.op === "working"
          ? pick(["loading"], op.pick)
          : pick(op.op === "fail" || op.op === "cancel" ? ["queued", ...running] : running, op.pick);
      if (!id) return;
      if (op.op === "working") store.markWorking(id);
      else if (op.op === "finish")
        store.finishJob(id, body(op.size, "ü"), [], { promptTokens: 12, outputTokens: 34, loadMs: 1.5, evalMs: 250.25 }, clock);
      else if (op.op === "fail") store.failJob(id, "boom", 502, [], clock);
      else if (op.op === "requeue") store.requeueJob(id, clock + op.later, "again", 503, op.size === 0);
      else store.cancelJob(id, { error: "request canceled", status: 499 }, clock);
    }
  }
}

/**
 * SQLite's jobs, column for column, into PostgreSQL's table: inserted queued, then moved to their states in
 * one update, so the triggers count them in and out and leave a group that drained at n = 0, as a live
 * queue's count rows are.
 */
async function copyJobs(db: Database): Promise<void> {
  await pg`TRUNCATE jobs, queued_counts CASCADE`;
  const rows = db.query<Record<string, string | number | null>, []>("SELECT * FROM jobs").all();
  if (rows.length === 0) return;
  await pg`INSERT INTO jobs ${pg(rows.map((row) => ({ ...row, state: "queued" })))}`;
  const ids = pg.array(
    rows.map((row) => row.id),
    "TEXT",
  );
  const states = pg.array(
    rows.map((row) => row.state),
    "TEXT",
  );
  await pg`UPDATE jobs SET state = moved.state FROM unnest(${ids}::text[], ${states}::text[]) AS moved (id, state)
    WHERE jobs.id = moved.id AND moved.state <> 'queued'`;
}

/** Every page of a listing, following the cursor to its end, as each engine answers it. */
async function walkPages(filter: JobFilter, list: (f: JobFilter) => Promise<JobRow[] | { rows: JobRow[]; more: boolean }>) {
  const pages: unknown[] = [];
  let cursor: string | undefined;
  for (let page = 0; page < 100; page++) {
    const answer = await list({ ...filter, cursor });
    pages.push(answer);
    const rows = Array.isArray(answer) ? answer : answer.rows;
    const more = Array.isArray(answer) ? rows.length === filter.limit : answer.more;
    if (!more || rows.length === 0) break;
    cursor = rows[rows.length - 1]!.id;
  }
  return pages;
}

/** Both engines' answers to every read: each job's lookups and places, the queue's counts and groups, listings. */
async function expectSameReads(db: Database, store: JobStore, filters: JobFilter[], budgets: number[]): Promise<void> {
  const now = clock;
  const ids = db
    .query<{ id: string }, []>("SELECT id FROM jobs ORDER BY id")
    .all()
    .map((r) => r.id);
  const jobs = ids.map((id) => store.getJob(id)!);
  const cutoffs = [now - 2 * MINUTE, now - 30_000, now + 1, ...jobs.slice(0, 2).flatMap((j) => [j.createdAt, j.createdAt + 1])];

  expect(await reads.queuedCount()).toBe(store.queuedCount());
  expect(await reads.queuedCountByModel()).toEqual(store.queuedCountByModel());
  expect(await reads.runningJob()).toEqual(store.runningJob());
  expect(await reads.runningJobs()).toEqual(store.runningJobs());
  expect(await reads.queueGroups()).toEqual(store.queueGroups());
  const groupsAt = new Map<number, ReturnType<JobStore["queueGroups"]>>();
  for (const cutoff of cutoffs) {
    groupsAt.set(cutoff, store.queueGroups(cutoff));
    expect({ cutoff, groups: await reads.queueGroups(cutoff) }).toEqual({ cutoff, groups: groupsAt.get(cutoff)! });
  }

  for (const id of [...ids, "nope"]) {
    expect(await reads.getJob(id)).toEqual(store.getJob(id));
    expect(await reads.getJobHead(id)).toEqual(store.getJobHead(id));
  }
  for (const job of jobs) {
    expect({ id: job.id, position: await reads.queuePosition(job) }).toEqual({ id: job.id, position: store.queuePosition(job) });
    expect({ id: job.id, overdueRank: await reads.overdueRank(job) }).toEqual({
      id: job.id,
      overdueRank: store.overdueRank(job),
    });
    for (const cutoff of cutoffs) {
      const group = groupsAt.get(cutoff)!.find((g) => g.priority === job.priority && g.modelKey === job.modelKey);
      // Asked of queued jobs, with their group's size, as JobService.queuePlace asks.
      if (job.state === "queued" && group)
        expect({ id: job.id, rank: await reads.rankInGroup(job, group.queued) }).toEqual({
          id: job.id,
          rank: store.rankInGroup(job, group.queued),
        });
      // 0 overdue in the group answers 0 uncounted; 1 for a group with none makes both engines count.
      const groupOverdue = group?.overdue || 1;
      expect({ id: job.id, cutoff, ahead: await reads.overdueAheadInGroup(job, cutoff, groupOverdue) }).toEqual({
        id: job.id,
        cutoff,
        ahead: store.overdueAheadInGroup(job, cutoff, groupOverdue),
      });
    }
  }

  for (const filter of filters) {
    expect({ filter, pages: await walkPages(filter, (f) => reads.listJobs(f)) }).toEqual({
      filter,
      pages: await walkPages(filter, async (f) => store.listJobs(f)),
    });
    const withBodies = filter.withBodies ?? { request: true, result: true };
    for (const budget of budgets) {
      const paged = { ...filter, withBodies };
      expect({ filter, budget, pages: await walkPages(paged, (f) => reads.listJobPage({ ...f, withBodies }, budget)) }).toEqual({
        filter,
        budget,
        pages: await walkPages(paged, async (f) => store.listJobPage({ ...f, withBodies }, budget)),
      });
    }
  }
}

const filterArb: fc.Arbitrary<JobFilter> = fc.record(
  {
    state: fc.constantFrom(...JOB_STATES),
    model: fc.constantFrom(...MODELS.map((m) => m.model)),
    type: fc.constantFrom(...TYPES),
    keyId: fc.constantFrom("key_1", "key_2"),
    limit: fc.constantFrom(1, 3, 100),
    withBodies: fc.record({ request: fc.boolean(), result: fc.boolean() }),
  },
  { requiredKeys: ["limit"] },
);

test(
  "every read answers as JobStore's over the same jobs, after random enqueues, claims, ends and re-queues",
  async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(opArb, { minLength: 10, maxLength: 60, size: "max" }),
        fc.array(filterArb, { minLength: 1, maxLength: 3 }),
        fc.array(fc.constantFrom(0, 500, 10_000), { minLength: 1, maxLength: 2 }),
        async (ops, filters, budgets) => {
          clock += 24 * 60 * MINUTE;
          const db = openDatabase(":memory:");
          try {
            const store = new JobStore(db);
            for (const op of ops) apply(db, store, op);
            await copyJobs(db);
            await expectSameReads(db, store, [{ limit: 1000 }, ...filters], budgets);
          } finally {
            db.close();
          }
        },
      ),
      { seed: 33, numRuns: 40 },
    );
  },
  { timeout: 60_000 },
);

describe("by example", () => {
  /** A job row in PostgreSQL directly, queued unless told; its id sorts by `n`. */
  async function insert(n: number, extra: { state?: string; request?: string; result?: string; createdAt?: number } = {}) {
    const id = `job-${String(n).padStart(3, "0")}`;
    await pg`INSERT INTO jobs (id, type, model, model_key, request, source, state, priority, max_attempts, run_after, created_at, result)
      VALUES (${id}, 'chat', 'm', 'm:latest', ${extra.request ?? "{}"}, 'jobs', ${extra.state ?? "queued"}, 0, 3, 0,
        ${extra.createdAt ?? 1_000 + n}::bigint, ${extra.result ?? null})`;
    return id;
  }

  test("a page with bodies holds its first job whatever its size, and ends before the job that would pass the budget", async () => {
    await insert(1, { request: "a".repeat(100) });
    await insert(2, { request: "b".repeat(100), result: "é".repeat(50) });
    const huge = await insert(3, { request: "c".repeat(1_000_000) });
    const all = { request: true, result: true };
    const first = await reads.listJobPage({ limit: 10, withBodies: all }, 1_000);
    expect(first.more).toBe(true);
    expect(first.rows.map((j) => [j.id, j.request.length])).toEqual([[huge, 1_000_000]]);
    // The next job's 100 + 100 bytes (é is two) fit 250, the one after them does not.
    const second = await reads.listJobPage({ limit: 10, withBodies: all, cursor: huge }, 250);
    expect(second).toMatchObject({ more: true, rows: [{ id: "job-002", result: "é".repeat(50) }] });
    expect((await reads.listJobPage({ limit: 10, withBodies: all, cursor: "job-002" }, 250)).more).toBe(false);
    // Only what is asked is measured: without the result, both fit.
    const requests = await reads.listJobPage({ limit: 10, withBodies: { request: true, result: false }, cursor: huge }, 250);
    expect(requests.rows.map((j) => [j.id, j.result])).toEqual([
      ["job-002", null],
      ["job-001", null],
    ]);
    expect(requests.more).toBe(false);
    expect(await reads.listJobPage({ limit: 10, withBodies: all, cursor: "job-001" }, 250)).toEqual({ rows: [], more: false });
  });

  test("cursor paging goes newest first to the end; a filter and the bodies left out as listJobs leaves them", async () => {
    for (let n = 1; n <= 7; n++) await insert(n, { state: n % 2 ? "queued" : "done", request: `{"n":${n}}` });
    const seen: string[] = [];
    let cursor: string | undefined;
    for (;;) {
      const page = await reads.listJobs({ limit: 3, cursor, withBodies: { request: false, result: false } });
      seen.push(...page.map((j) => j.id));
      expect(page.every((j) => j.request === "{}" && j.result === null)).toBe(true);
      if (page.length < 3) break;
      cursor = page[page.length - 1]!.id;
    }
    expect(seen).toEqual(["job-007", "job-006", "job-005", "job-004", "job-003", "job-002", "job-001"]);
    const done = await reads.listJobs({ limit: 10, state: "done" });
    expect(done.map((j) => [j.id, j.request])).toEqual([
      ["job-006", '{"n":6}'],
      ["job-004", '{"n":4}'],
      ["job-002", '{"n":2}'],
    ]);
  });

  test("an unknown id is null; a job not queued has no position", async () => {
    expect(await reads.getJob("nope")).toBeNull();
    expect(await reads.getJobHead("nope")).toBeNull();
    const id = await insert(1, { state: "done", request: '{"big":true}', result: "{}" });
    const job = (await reads.getJob(id))!;
    expect(job).toMatchObject({ state: "done", request: '{"big":true}', result: "{}", createdAt: 1_001 });
    expect(await reads.getJobHead(id)).toMatchObject({ id, request: "", result: null });
    expect(await reads.queuePosition(job)).toBeNull();
  });

  test("a group whose count row went back to 0 is no group, and no model in the counts", async () => {
    const id = await insert(1);
    await pg`UPDATE jobs SET state = 'canceled' WHERE id = ${id}`;
    expect((await pg`SELECT n FROM queued_counts`).map((r: { n: number }) => r.n)).toEqual([0]);
    expect(await reads.queueGroups(Number.MAX_SAFE_INTEGER)).toEqual([]);
    expect(await reads.queuedCountByModel()).toEqual([]);
    expect(await reads.queuedCount()).toBe(0);
  });

  test("a job is overdue by its created_at, the time the starvation guard compares, whatever its id's time", async () => {
    await insert(1, { createdAt: 50_000 });
    // Made later (its id sorts after), but created earlier: SQLite's count by id would leave it out.
    const aged = await insert(2, { createdAt: 1_000 });
    const [group] = await reads.queueGroups(10_000);
    expect(group).toMatchObject({ queued: 2, oldestId: "job-001", overdue: 1, overdueOldestAt: 1_000, overdueNewestAt: 1_000 });
    expect(await reads.overdueRank((await reads.getJob(aged))!)).toBe(0);
  });
});
