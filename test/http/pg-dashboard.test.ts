// The dashboard on PostgreSQL: the same jobs and keys in a SQLite file and in a PostgreSQL database give the same
// snapshot, for an admin and for a client key, from SQLite's synchronous reads and from PostgreSQL's fetched ahead
// (PgDashboardQueries.prefetch). A real throwaway cluster; the rows are written to both as they are.
import { afterAll, beforeAll, expect, test } from "bun:test";
import type { SQL } from "bun";
import { DEFAULT_LIMITS, SnapshotBuilder, sqliteDashboardReads } from "../../src/dashboard/snapshot";
import { KeyStore } from "../../src/keys/key-store";
import { OPEN_ADMIN, keyPrincipal } from "../../src/keys/principal";
import { utcDay } from "../../src/keys/usage";
import { DashboardQueries } from "../../src/queue/dashboard-queries";
import { openDatabase } from "../../src/queue/db";
import { PgDashboardQueries } from "../../src/queue/pg/dashboard-queries";
import { openPg } from "../../src/queue/pg/db";
import { PgQueueReads } from "../../src/queue/pg/queue-reads";
import { planQueue } from "../../src/queue/start-estimate";
import { JobStore } from "../../src/queue/store";
import { seededRandom } from "../../bench/stats";
import { type PgCluster, startPgCluster } from "../pg-cluster";

let cluster: PgCluster;
let sql: SQL;

beforeAll(async () => {
  cluster = await startPgCluster();
  sql = await openPg(cluster.url, { poolSize: 4 });
});
afterAll(async () => {
  await sql.close();
  await cluster.stop();
});

const REQUESTS = [
  (i: number) => ({ model: "m", prompt: `generate prompt number ${i} with some words` }),
  (i: number) => ({
    model: "m",
    messages: [
      { role: "system", content: "sys" },
      { role: "user", content: `chat ${i}` },
    ],
  }),
  (i: number) => ({ model: "m", input: [{ role: "user", content: [{ type: "input_text", text: `responses ${i}` }] }] }),
  (i: number) => ({ model: "m", messages: [{ role: "user", content: [{ type: "text", text: `parts ${i} é "quoted"` }] }] }),
];

test("the same queue gives the same dashboard snapshot on both engines, for an admin and for a client key", async () => {
  const db = openDatabase(":memory:");
  const store = new JobStore(db);
  const keys = new KeyStore(db);
  const now = Date.now();
  const alice = keys.create("alice", "client", {}, now - 60_000).key;
  const bob = keys.create("bob", "client", {}, now - 60_000).key;
  const random = seededRandom(22);
  const rows: Array<Record<string, string | number | null>> = [];
  for (let i = 0; i < 90; i++) {
    const model = ["llama3.2", "qwen3", "mistral"][i % 3]!;
    const state = i < 50 ? "queued" : i === 50 ? "working" : ["done", "done", "failed", "canceled"][i % 4]!;
    const created = now - 3_000_000 + i * 20_000;
    const started = state === "queued" || (state === "canceled" && i % 8 === 3) ? null : created + 1_000;
    const finished = state === "queued" || state === "working" ? null : now - Math.floor(random() * 3_000_000);
    const key = [alice.id, bob.id, null][i % 3 === 0 ? 2 : Math.floor(random() * 3)]!;
    rows.push({
      id: `01JOB${String(i).padStart(4, "0")}`,
      type: ["generate", "chat", "responses", "chat"][i % 4]!,
      model,
      model_key: `${model}:latest`,
      request: JSON.stringify(REQUESTS[i % 4]!(i)),
      source: "jobs",
      state,
      priority: i % 5 === 0 ? 5 : 0,
      attempts: started === null ? 0 : 1,
      max_attempts: 3,
      run_after: created,
      error: state === "failed" ? "boom" : null,
      created_at: created,
      started_at: started,
      finished_at: finished === null ? null : Math.max(finished, created + 2_000),
      swapped: started === null ? null : i % 6 === 0 ? 1 : 0,
      output_tokens: state === "done" ? 40 + i : null,
      eval_ms: state === "done" ? 400 + i : null,
      load_ms: started === null ? null : 120,
      key_id: key,
    });
  }
  const columns = Object.keys(rows[0]!);
  const insert = db.query(`INSERT INTO jobs (${columns.join(", ")}) VALUES (${columns.map(() => "?").join(", ")})`);
  db.transaction(() => {
    for (const row of rows) insert.run(...(columns.map((c) => row[c]) as never[]));
  })();
  const day = utcDay(now);
  db.run(`INSERT INTO key_usage (key_id, day, prompt_tokens, output_tokens, jobs, gpu_ms) VALUES (?, ?, 10, 20, 3, 4500)`, [
    alice.id,
    day,
  ]);
  // The same rows in PostgreSQL: queued first (its counts are kept by triggers), then each moved to its state.
  const keyRows = db.query("SELECT * FROM keys").all() as Array<Record<string, unknown>>;
  await sql`INSERT INTO keys ${sql(keyRows.map((k) => ({ ...k, secret_hash: Buffer.from(k.secret_hash as Uint8Array) })))}`;
  await sql`INSERT INTO key_usage ${sql(db.query("SELECT * FROM key_usage").all() as Record<string, unknown>[])}`;
  await sql`INSERT INTO jobs ${sql(rows.map((row) => ({ ...row, state: "queued" })))}`;
  for (const row of rows) if (row.state !== "queued") await sql`UPDATE jobs SET state = ${row.state} WHERE id = ${row.id}`;

  const inventory = {
    snapshot: { models: [], running: [{ name: "llama3.2:latest" }], degraded: false, updatedAt: now },
    several: false,
    targets: [],
    residentKeys: () => ["llama3.2:latest"],
  } as never;
  // The plan from SQLite's groups (the same queue): each listed job's expected start is read off it on both engines.
  const plan = planQueue({
    groups: store.queueGroups(now - 600_000),
    costs: new Map(),
    running: store.runningJob(),
    residentKeys: ["llama3.2:latest"],
    schedule: "drain",
    now,
    overdueBefore: now - 600_000,
  });
  const lite = new SnapshotBuilder(
    sqliteDashboardReads(store, new DashboardQueries(db), () => plan),
    inventory,
  );
  const pg = new SnapshotBuilder(null, inventory);
  const queries = new PgDashboardQueries(sql, new PgQueueReads(sql));
  const live = () => ({ tokens: 3, tokensPerS: null });
  for (const viewer of [OPEN_ADMIN, keyPrincipal(alice), keyPrincipal(bob)]) {
    const fromLite = lite.build(live, now, viewer);
    const fromPg = pg.build(live, now, viewer, await queries.prefetch(now, viewer, DEFAULT_LIMITS, () => plan));
    expect(fromPg).toEqual(fromLite);
    // Not an empty picture agreeing with another: the queue, previews, the recent list, the hour and the timeline are there.
    expect(fromLite.queue.total).toBeGreaterThan(0);
    expect(fromLite.recent.length).toBeGreaterThan(0);
    if (viewer === OPEN_ADMIN) {
      expect(fromLite.queue.groups[0]!.jobs[0]!.preview).not.toBe("");
      expect(fromLite.running?.preview).toBe("responses 50");
      expect(fromLite.timeline.jobs.length).toBeGreaterThan(0);
      expect(fromLite.hour.done.some((n) => n > 0)).toBe(true);
      expect(fromLite.keys?.map((k) => k.name)).toEqual(["alice", "bob"]);
      expect(fromLite.queue.groups.some((g) => g.jobs.some((j) => j.estimatedStartAt !== null))).toBe(true);
    }
  }
  db.close();
});
