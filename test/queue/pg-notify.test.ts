// Job-end notifications on a real throwaway PostgreSQL cluster: ids from one connection's transaction reach
// a listener on another (on commit only, chunked under the payload limit), and a listener whose backend is
// terminated subscribes again, re-syncs and receives what is sent after.
import { afterAll, beforeAll, expect, test } from "bun:test";
import type { SQL } from "bun";
import { monotonicFactory } from "ulid";
import { openPg } from "../../src/queue/pg/db";
import { JobEndListener, jobEndPayloads, notifyJobEnded } from "../../src/queue/pg/notify";
import { type PgCluster, startPgCluster } from "../pg-cluster";

let cluster: PgCluster;
let sql: SQL;
const listeners: JobEndListener[] = [];

beforeAll(async () => {
  cluster = await startPgCluster();
  sql = await openPg(cluster.url, { poolSize: 4 });
});
afterAll(async () => {
  for (const l of listeners) await l.stop();
  await sql.close();
  await cluster.stop();
});

/** A started listener on its own connection, and what it saw. */
async function listen(extra: { pollMs?: number } = {}) {
  const seen = { ended: [] as string[][], resyncs: 0, polls: 0 };
  let wake: (() => void) | null = null;
  const listener = new JobEndListener({
    url: cluster.url,
    onEnded(ids) {
      seen.ended.push(ids);
      wake?.();
    },
    onResync() {
      seen.resyncs++;
      wake?.();
    },
    pollMs: extra.pollMs,
    onPoll: () => seen.polls++,
  });
  listeners.push(listener);
  await listener.start();
  /** Resolves once `done()` holds (re-checked on every callback), or throws after `timeoutMs`. */
  const until = async (done: () => boolean, timeoutMs = 5_000) => {
    const deadline = Date.now() + timeoutMs;
    while (!done()) {
      if (Date.now() > deadline) throw new Error(`listener: not there within ${timeoutMs} ms: ${JSON.stringify(seen)}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 50);
        wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  };
  return { listener, seen, until };
}

test("ids ended in one connection's transaction reach a listener on another, on commit only", async () => {
  const { seen, until, listener } = await listen();
  await until(() => seen.resyncs === 1);
  await sql
    .begin(async (tx) => {
      await notifyJobEnded(tx, ["01A", "01B"]);
      throw new Error("rolled back");
    })
    .catch(() => {});
  await sql.begin((tx) => notifyJobEnded(tx, ["01C", "01D"]));
  await until(() => seen.ended.length > 0);
  // The same connection's order: had the rolled-back one been sent, it would have come first.
  await sql`SELECT pg_sleep(0.1)`;
  expect(seen.ended).toEqual([["01C", "01D"]]);
  await listener.stop();
});

test("1,000 ids travel in chunks under the payload limit, all of them in order", async () => {
  const ulid = monotonicFactory();
  const ids = Array.from({ length: 1_000 }, () => ulid());
  const payloads = jobEndPayloads(ids);
  expect(payloads.length).toBeGreaterThan(1);
  for (const p of payloads) expect(Buffer.byteLength(p)).toBeLessThan(8_000);
  expect(() => jobEndPayloads(["a,b"])).toThrow();

  const { seen, until, listener } = await listen();
  await sql.begin((tx) => notifyJobEnded(tx, ids));
  await until(() => seen.ended.flat().length >= ids.length);
  expect(seen.ended.length).toBe(payloads.length);
  expect(seen.ended.flat()).toEqual(ids);
  await listener.stop();
});

test("a terminated LISTEN connection comes back: onResync again, and later ends arrive", async () => {
  const { seen, until, listener } = await listen();
  await until(() => seen.resyncs === 1);
  const killed = await sql`SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity WHERE query ILIKE 'LISTEN%'`;
  expect(killed.length).toBe(1);
  await until(() => seen.resyncs === 2, 10_000);
  await sql.begin((tx) => notifyJobEnded(tx, ["01E"]));
  await until(() => seen.ended.length > 0);
  expect(seen.ended).toEqual([["01E"]]);

  // Twice more: the reconnect is not a one-off.
  for (let round = 3; round <= 4; round++) {
    await sql`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query ILIKE 'LISTEN%'`;
    await until(() => seen.resyncs === round, 10_000);
  }
  await sql.begin((tx) => notifyJobEnded(tx, ["01F"]));
  await until(() => seen.ended.length > 1);
  expect(seen.ended).toEqual([["01E"], ["01F"]]);
  await listener.stop();
});

test("the safety poll runs on its own, and stops with the listener", async () => {
  const { seen, until, listener } = await listen({ pollMs: 30 });
  await until(() => seen.polls >= 3);
  await listener.stop();
  const polls = seen.polls;
  await Bun.sleep(100);
  expect(seen.polls).toBe(polls);
});
