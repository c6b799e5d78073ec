// Webhooks on the PostgreSQL queue: every end of a job with a webhook queues its delivery in the statement that
// ends it (and an end rolled back queues none); PgWebhookDeliveries' claims let several nodes' dispatchers share
// the rows, each attempt POSTed by one node at a time. A real throwaway cluster, a fresh database per test.
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test } from "bun:test";
import type { SQL } from "bun";
import { Webhook } from "standardwebhooks";
import { createLogger } from "../../src/log";
import { openPg } from "../../src/queue/pg/db";
import { type Fence, NODE_GONE, PgJobStore } from "../../src/queue/pg/job-store";
import { PgQueueStore } from "../../src/queue/pg/queue-store";
import type { ClaimPolicy, NewJob } from "../../src/queue/store";
import { parseAllowList } from "../../src/webhook/allow-list";
import { WebhookDispatcher } from "../../src/webhook/dispatcher";
import { PgWebhookDeliveries, WebhookDueListener } from "../../src/webhook/pg-deliveries";
import { until } from "../harness";
import { type PgCluster, startPgCluster } from "../pg-cluster";
import { newSecret } from "./receiver";

let cluster: PgCluster;
let url: string;
let sql: SQL;
let pg: PgJobStore;
let deliveries: PgWebhookDeliveries;
let fence: Fence;
let dbCount = 0;
/** What each test started, stopped after it whatever happened. */
let cleanups: Array<() => unknown> = [];

const GPU = "gpu0";
const log = createLogger("error", "webhook");

beforeAll(async () => {
  cluster = await startPgCluster();
});
afterAll(async () => {
  await cluster.stop();
});
beforeEach(async () => {
  const name = `w${++dbCount}`;
  await cluster.createDatabase(name);
  url = cluster.urlFor(name);
  sql = await openPg(url, { poolSize: 4 });
  pg = new PgJobStore(sql);
  deliveries = new PgWebhookDeliveries(sql);
  await sql`INSERT INTO target_leases (target, node, token, expires_at) VALUES (${GPU}, 'test', 1, now() + interval '1 hour')`;
  fence = { target: GPU, token: 1 };
  cleanups = [() => sql.close()];
});
afterEach(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

let models = 0;
const job = (extra: Partial<NewJob> = {}): NewJob => {
  const model = extra.model ?? `m${++models}`;
  return { type: "chat", model, modelKey: `${model}:latest`, request: "{}", source: "jobs", maxAttempts: 3, ...extra };
};

/** Queues a job and claims it on the test's target (it is running). */
async function running(extra: Partial<NewJob> = {}, store = pg, on = fence) {
  const queued = (await store.enqueue(job(extra), 1000)).job;
  const policy: ClaimPolicy = {
    schedule: "fifo",
    residentKeys: [],
    maxWaitMs: 3_600_000,
    target: on.target,
    eligible: (key) => key === queued.modelKey,
  };
  const claimed = await store.claimNextJob(policy, on);
  expect(claimed?.id).toBe(queued.id);
  return claimed!;
}

async function rows() {
  return [
    ...(await sql`SELECT id, job_id AS "jobId", url, secret, state, attempts, key_id AS "keyId", claims,
      next_attempt_at::float8 AS "nextAttemptAt", created_at::float8 AS "createdAt" FROM webhook_deliveries ORDER BY job_id`),
  ];
}

/**
 * A receiver that checks each POST's signature, answers after `delayMs` (slow, so overlapping attempts would
 * show), fails each message's first `failFirst` attempts, and keeps every attempt's start and end by message.
 */
class SlowReceiver {
  readonly attempts: Array<{ id: string; start: number; end: number; status: number; body: any }> = [];
  /** Attempts of one message seen in flight at the same time: must stay empty. */
  readonly overlaps: string[] = [];
  readonly #open = new Map<string, number>();
  #server: ReturnType<typeof Bun.serve> | undefined;

  constructor(
    readonly secret: string,
    readonly delayMs = 0,
    readonly failFirst = 0,
  ) {}

  start(): this {
    this.#server = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: (request) => this.#handle(request) });
    return this;
  }

  get url(): string {
    return `http://127.0.0.1:${this.#server!.port}/hook`;
  }

  stop() {
    return this.#server?.stop(true);
  }

  /** Messages answered 2xx, each as many times as it was. */
  delivered(): Map<string, number> {
    const counts = new Map<string, number>();
    for (const a of this.attempts) if (a.status === 204) counts.set(a.id, (counts.get(a.id) ?? 0) + 1);
    return counts;
  }

  async #handle(request: Request): Promise<Response> {
    const start = Date.now();
    const payload = await request.text();
    const headers = Object.fromEntries(request.headers);
    const id = headers["webhook-id"] ?? "";
    const open = (this.#open.get(id) ?? 0) + 1;
    this.#open.set(id, open);
    if (open > 1) this.overlaps.push(id);
    try {
      new Webhook(this.secret).verify(payload, headers);
    } catch {
      this.#open.set(id, this.#open.get(id)! - 1);
      return new Response("bad signature", { status: 401 });
    }
    await Bun.sleep(this.delayMs);
    const earlier = this.attempts.filter((a) => a.id === id).length;
    const status = earlier < this.failFirst ? 500 : 204;
    this.attempts.push({ id, start, end: Date.now(), status, body: JSON.parse(payload) });
    this.#open.set(id, this.#open.get(id)! - 1);
    return new Response(status === 204 ? null : "not yet", { status });
  }
}

/** A node's dispatcher over its own connection pool: PgQueueStore for the payloads, its wakes on the channel. */
async function node(
  name: string,
  options: { backoff?: number[]; secret?: string; pollMs?: number; attemptTimeoutMs?: number } = {},
) {
  const own = await openPg(url, { poolSize: 3 });
  const jobs = new PgJobStore(own);
  jobs.node = name;
  const dispatcher = new WebhookDispatcher(
    new PgQueueStore(own, jobs),
    new PgWebhookDeliveries(own),
    {
      webhookBackoffMs: options.backoff ?? [100, 200, 400],
      webhookSecret: options.secret,
      webhookAllow: parseAllowList(["127.0.0.1"]),
    },
    log,
    { attemptTimeoutMs: options.attemptTimeoutMs ?? 5000 },
  );
  const wakes = new WebhookDueListener({ sql: own, onDue: () => dispatcher.wake(), pollMs: options.pollMs ?? 0 });
  let posted = 0;
  dispatcher.onDelivery = () => posted++;
  await wakes.start();
  dispatcher.start();
  const stop = async () => {
    dispatcher.stop();
    await wakes.stop();
    await dispatcher.idle();
    await own.close();
  };
  cleanups.push(stop);
  return { dispatcher, jobs, stop, posted: () => posted };
}

describe("the ends of jobs queue their deliveries", () => {
  test("every way a job with a webhook ends queues one delivery, with its job's url, secret and key; none without", async () => {
    const hook = (n: number) => ({ webhook: { url: `http://127.0.0.1:9/${n}`, secret: `whsec_${n}` } });
    const done = await running({ ...hook(1), owner: { keyId: "key_1", name: "one", maxJobs: null, dailyTokens: null } });
    // Its key's usage, its artifacts and its delivery: three writes of one statement, their parameters numbered on.
    const usage = { promptTokens: 3, outputTokens: 5, loadMs: null, evalMs: null };
    const stored = [{ name: "result.json", contentType: "application/json", data: '{"ok":1}' }];
    expect(await pg.finishJob(done.id, fence, "{}", usage, stored)).toMatchObject({ state: "done" });
    expect(new TextDecoder().decode((await pg.artifacts.get(done.id, "result.json"))!.data)).toBe('{"ok":1}');
    const [charged] = await sql`SELECT prompt_tokens::int AS p, output_tokens::int AS o FROM key_usage WHERE key_id = 'key_1'`;
    expect(charged).toEqual({ p: 3, o: 5 });
    const failed = await running(hook(2));
    expect(await pg.failJob(failed.id, fence, "boom", 500)).toMatchObject({ state: "failed" });
    const canceledRunning = await running(hook(3));
    expect(await pg.cancelJob(canceledRunning.id, undefined, fence)).toMatchObject({ state: "canceled" });
    const canceledQueued = (await pg.enqueue(job(hook(4)), 1000)).job;
    expect(await pg.cancelJob(canceledQueued.id)).toMatchObject({ state: "canceled" });
    const many = [(await pg.enqueue(job(hook(5)), 1000)).job, (await pg.enqueue(job(hook(6)), 1000)).job];
    const plain = (await pg.enqueue(job(), 1000)).job;
    expect(await pg.cancelJobs([...many.map((j) => j.id), plain.id])).toHaveLength(3);
    // A dead node's client requests (cancelOrphans), and recovery's failed and canceled jobs.
    const orphanStore = new PgJobStore(sql);
    orphanStore.node = "gone";
    await orphanStore.heartbeat("gone");
    const orphan = (await orphanStore.enqueue(job({ source: "openai", ...hook(7) }), 1000)).job;
    await sql`UPDATE nodes SET seen_at = now() - interval '1 hour' WHERE name = 'gone'`;
    expect((await pg.cancelOrphans(60_000, NODE_GONE)).map((j) => j.id)).toEqual([orphan.id]);
    const exhausted = await running({ maxAttempts: 1, ...hook(8) });
    const client = await running({ source: "ollama", ...hook(9) });
    const requeued = await running(hook(10));
    await sql`UPDATE target_leases SET token = 2 WHERE target = ${GPU}`;
    const recovered = await pg.recoverInterruptedJobs([{ target: GPU, token: 2 }]);
    expect(recovered.failed.map((j) => j.id)).toEqual([exhausted.id]);
    expect(recovered.canceled.map((j) => j.id)).toEqual([client.id]);
    expect(recovered.requeued.map((j) => j.id)).toEqual([requeued.id]);

    const ended = [done, failed, canceledRunning, canceledQueued, ...many, orphan, exhausted, client];
    const byJob = new Map((await rows()).map((row) => [row.jobId, row]));
    expect([...byJob.keys()].sort()).toEqual(ended.map((j) => j.id).sort());
    for (const [i, ended_] of ended.entries()) {
      const row = byJob.get(ended_.id)!;
      const end = await pg.getJobHead(ended_.id);
      expect(row.id).toMatch(/^msg_[0-9A-HJKMNP-TV-Z]{26}$/);
      expect(row).toMatchObject({
        url: `http://127.0.0.1:9/${i + 1}`,
        secret: `whsec_${i + 1}`,
        state: "pending",
        attempts: 0,
        claims: 0,
        keyId: i === 0 ? "key_1" : null,
      });
      // Queued at the end's instant, by the database's clock: due at once.
      expect(row.createdAt).toBe(end!.finishedAt!);
      expect(row.nextAttemptAt).toBe(end!.finishedAt!);
      expect(await deliveries.status(ended_.id)).toEqual({ state: "pending", attempts: 0, lastStatus: null, lastError: null });
    }
    // Not ended (re-queued), or without a webhook: no row.
    expect(await deliveries.status(requeued.id)).toBeNull();
    expect(await deliveries.status(plain.id)).toBeNull();
    // An end that changed nothing (already ended, a stale fence) queues nothing more.
    expect(await pg.cancelJob(done.id)).toBeNull();
    expect((await rows()).length).toBe(ended.length);
  });

  test("jobs without a webhook write no row", async () => {
    const a = await running();
    await pg.finishJob(a.id, fence, "{}");
    const b = await running();
    await pg.failJob(b.id, fence, "no", 400);
    await pg.cancelJob((await pg.enqueue(job(), 1000)).job.id);
    expect(await rows()).toEqual([]);
    expect(await deliveries.nextDue()).toBeNull();
  });

  test("an end rolled back leaves no delivery and wakes nobody", async () => {
    let woken = 0;
    const wakes = new WebhookDueListener({ sql, onDue: () => woken++, pollMs: 0 });
    await wakes.start();
    cleanups.push(() => wakes.stop());
    await until(() => woken === 1, 5000, "the subscription's resync");
    // The commit fails, every write of the end made (the delivery's too): a check deferred to the commit refuses it.
    await sql.unsafe(`CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'disk full'; END $$;
      CREATE CONSTRAINT TRIGGER refuse AFTER UPDATE ON jobs DEFERRABLE INITIALLY DEFERRED
        FOR EACH ROW WHEN (NEW.state IN ('done', 'canceled')) EXECUTE FUNCTION refuse();`);
    const hooked = await running({ webhook: { url: "http://127.0.0.1:9/x" } });
    const queued = (await pg.enqueue(job({ webhook: { url: "http://127.0.0.1:9/y" } }), 1000)).job;
    await expect(
      pg.finishJob(hooked.id, fence, "{}", undefined, [{ name: "result.json", contentType: "application/json", data: "{}" }]),
    ).rejects.toThrow("disk full");
    await expect(pg.cancelJobs([queued.id])).rejects.toThrow("disk full");
    expect(await pg.jobState(hooked.id)).toBe("loading");
    expect(await pg.jobState(queued.id)).toBe("queued");
    expect(await rows()).toEqual([]);
    await Bun.sleep(200);
    expect(woken).toBe(1);
    // Once it can, each end commits with its delivery, and the commit wakes the listener.
    await sql`DROP TRIGGER refuse ON jobs`;
    expect(await pg.finishJob(hooked.id, fence, "{}")).toMatchObject({ state: "done" });
    expect((await rows()).map((row) => row.jobId)).toEqual([hooked.id]);
    await until(() => woken === 2, 5000, "the delivery's notification");
    expect(await pg.cancelJobs([queued.id])).toHaveLength(1);
    await until(() => woken === 3, 5000, "the second delivery's notification");
    expect((await rows()).map((row) => row.jobId)).toEqual([hooked.id, queued.id]);
  });
});

describe("delivering from PostgreSQL", () => {
  test("a job ended on PG gets one signed delivery, and its status shows delivered", async () => {
    const secret = newSecret();
    const receiver = new SlowReceiver(secret).start();
    cleanups.push(() => receiver.stop());
    await node("a");
    const ran = await running({ webhook: { url: receiver.url, secret } });
    await pg.finishJob(ran.id, fence, JSON.stringify({ message: { role: "assistant", content: "hi" } }));
    await until(async () => (await deliveries.status(ran.id))?.state === "delivered", 10_000, "the delivery");
    expect(await deliveries.status(ran.id)).toEqual({ state: "delivered", attempts: 1, lastStatus: 204, lastError: null });
    await Bun.sleep(300);
    expect(receiver.attempts).toHaveLength(1);
    const [{ id: message }] = await sql`SELECT id FROM webhook_deliveries WHERE job_id = ${ran.id}`;
    expect(receiver.attempts[0]).toMatchObject({
      id: message,
      status: 204,
      body: { type: "job.done", data: { id: ran.id, state: "done", result: { message: { content: "hi" } } } },
    });
    expect(JSON.stringify(receiver.attempts[0]!.body)).not.toContain(secret);
    const [row] = await sql`SELECT finished_at::float8 AS f, claims FROM webhook_deliveries`;
    expect(row.f).toBeGreaterThan(0);
    expect(row.claims).toBe(1);
    expect(await deliveries.nextDue()).toBeNull();
  });

  test("a receiver that fails gets retries, backing off by FOREMAN_WEBHOOK_BACKOFF; the schedule's end fails it", async () => {
    const secret = newSecret();
    const flaky = new SlowReceiver(secret, 0, 2).start();
    const down = new SlowReceiver(secret, 0, 99).start();
    cleanups.push(
      () => flaky.stop(),
      () => down.stop(),
    );
    await node("a", { backoff: [150, 300], secret });
    const recovers = await running({ webhook: { url: flaky.url } });
    const never = await running({ webhook: { url: down.url } });
    await pg.finishJob(recovers.id, fence, "{}");
    await pg.failJob(never.id, fence, "no", 500);
    await until(async () => (await deliveries.status(recovers.id))?.state === "delivered", 10_000, "the third attempt");
    await until(async () => (await deliveries.status(never.id))?.state === "failed", 10_000, "the schedule's end");
    expect(await deliveries.status(recovers.id)).toEqual({ state: "delivered", attempts: 3, lastStatus: 204, lastError: null });
    expect(await deliveries.status(never.id)).toEqual({ state: "failed", attempts: 3, lastStatus: 500, lastError: "HTTP 500" });
    for (const receiver of [flaky, down]) {
      const starts = receiver.attempts.map((a) => a.start);
      expect(starts).toHaveLength(3);
      // ±20% jitter around each step (and a timer's lateness, never its earliness).
      expect(starts[1]! - starts[0]!).toBeGreaterThanOrEqual(150 * 0.8 - 5);
      expect(starts[2]! - starts[1]!).toBeGreaterThanOrEqual(300 * 0.8 - 5);
      expect(starts[2]! - starts[1]!).toBeLessThan(300 * 1.2 + 1000);
    }
    expect(down.attempts.map((a) => a.status)).toEqual([500, 500, 500]);
  });

  test("two nodes deliver each of N deliveries exactly once, never two attempts of one at a time", async () => {
    const secret = newSecret();
    // Slow, so that a second node POSTing a delivery another is still POSTing would be caught in the act.
    const receiver = new SlowReceiver(secret, 150).start();
    cleanups.push(() => receiver.stop());
    const a = await node("a", { secret });
    const b = await node("b", { secret });
    const N = 24;
    const ids: string[] = [];
    // Ended on this test's own store (a third node, with no dispatcher): the deliveries reach a and b by the channel alone.
    for (let i = 0; i < N; i++) {
      const ran = await running({ webhook: { url: receiver.url } });
      ids.push(ran.id);
      if (i % 2 === 0) await pg.finishJob(ran.id, fence, "{}");
      else await pg.failJob(ran.id, fence, "no", 500);
    }
    await until(
      async () => {
        const [row] = await sql`SELECT count(*)::int AS n FROM webhook_deliveries WHERE state = 'delivered'`;
        return row.n === N;
      },
      30_000,
      "every delivery",
    );
    await Bun.sleep(500);
    expect(receiver.overlaps).toEqual([]);
    const delivered = receiver.delivered();
    expect(delivered.size).toBe(N);
    expect([...delivered.values()].every((n) => n === 1)).toBe(true);
    expect(receiver.attempts).toHaveLength(N);
    const messages = await sql`SELECT id, job_id AS "jobId" FROM webhook_deliveries`;
    expect(new Set(delivered.keys())).toEqual(new Set(messages.map((row: { id: string }) => row.id)));
    expect(new Set(messages.map((row: { jobId: string }) => row.jobId))).toEqual(new Set(ids));
    // Both nodes took part (each attempts 4 at once; the receiver takes 150 ms each).
    expect(a.posted() + b.posted()).toBe(N);
    expect(a.posted()).toBeGreaterThan(0);
    expect(b.posted()).toBeGreaterThan(0);
    const claims = await sql`SELECT DISTINCT claims FROM webhook_deliveries`;
    expect(claims.map((row: { claims: number }) => row.claims)).toEqual([1]);
  });

  test("claims are exclusive; a node that died mid-attempt leaves its row to another once its claim runs out", async () => {
    const secret = newSecret();
    const receiver = new SlowReceiver(secret).start();
    cleanups.push(() => receiver.stop());
    const ended: string[] = [];
    for (let i = 0; i < 6; i++) {
      const ran = await running({ webhook: { url: receiver.url, secret } });
      await pg.finishJob(ran.id, fence, "{}");
      ended.push(ran.id);
    }
    // Two nodes claiming at once get disjoint rows; nothing is left due for a third.
    const other = await openPg(url, { poolSize: 2 });
    cleanups.push(() => other.close());
    const [first, second] = await Promise.all([deliveries.due(0, 4, 60_000), new PgWebhookDeliveries(other).due(0, 4, 60_000)]);
    expect(first.length + second.length).toBe(6);
    expect(new Set([...first, ...second].map((d) => d.id)).size).toBe(6);
    expect(await deliveries.due(0, 10, 60_000)).toEqual([]);
    // The "dead" node's claims: given up early here (a short claim, nothing recorded).
    await sql`UPDATE webhook_deliveries SET next_attempt_at = next_attempt_at - 60000 + 400`;
    const start = Date.now();
    await node("survivor");
    await until(async () => receiver.delivered().size === 6, 10_000, "the survivor's deliveries");
    expect(Date.now() - start).toBeGreaterThanOrEqual(300);
    for (const id of ended) expect(await deliveries.status(id)).toMatchObject({ state: "delivered", attempts: 1 });
    // The dead node's outcome, recorded late under its old claim, changes nothing.
    const stale = first[0] ?? second[0]!;
    expect(stale.claim).toBe(1);
    expect(await deliveries.record(stale.id, "failed", 1, 500, "HTTP 500", Date.now(), stale.claim)).toBe(false);
    expect(await deliveries.status(stale.jobId!)).toMatchObject({ state: "delivered", lastStatus: 204 });
    expect(receiver.overlaps).toEqual([]);
  });

  test("a delivery whose notification was lost is found by the node's poll", async () => {
    const secret = newSecret();
    const receiver = new SlowReceiver(secret).start();
    cleanups.push(() => receiver.stop());
    await node("a", { secret, pollMs: 200 });
    await sql`ALTER TABLE webhook_deliveries DISABLE TRIGGER webhook_deliveries_queued`;
    const ran = await running({ webhook: { url: receiver.url } });
    await pg.finishJob(ran.id, fence, "{}");
    await until(async () => (await deliveries.status(ran.id))?.state === "delivered", 5000, "the poll's delivery");
    expect([...receiver.delivered().values()]).toEqual([1]);
  });
});
