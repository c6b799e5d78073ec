// Target leases on a real throwaway PostgreSQL cluster: TargetLeases' semantics on the database's clock,
// LeaseKeeper giving a lease up locally when its renews hang, and two keepers in separate processes that
// never hold one target at once and take over a killed node's targets within the lease time.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { SQL } from "bun";
import { join } from "node:path";
import { openPg } from "../../src/queue/pg/db";
import { LeaseKeeper, TargetLeases } from "../../src/queue/pg/leases";
import { type PgCluster, startPgCluster } from "../pg-cluster";

let cluster: PgCluster;
let dbCount = 0;
const open: SQL[] = [];

beforeAll(async () => {
  cluster = await startPgCluster();
});
afterAll(async () => {
  for (const client of open) await client.close().catch(() => {});
  await cluster.stop();
});

/** A fresh migrated database: its URL and a client. */
async function freshDatabase(): Promise<{ url: string; sql: SQL }> {
  const name = `l${++dbCount}`;
  await cluster.createDatabase(name);
  const url = cluster.urlFor(name);
  const sql = await openPg(url, { poolSize: 4 });
  open.push(sql);
  return { url, sql };
}

describe("TargetLeases", () => {
  test("one holder per target; renew only by the holder with its token; release frees it at once", async () => {
    const { sql } = await freshDatabase();
    const leases = new TargetLeases(sql);
    expect(await leases.acquire("a", "n1", 60_000)).toBe(1);
    expect(await leases.acquire("a", "n2", 60_000)).toBeNull();
    // A live lease is not handed out again even to its own node: its token may still fence writes in flight.
    expect(await leases.acquire("a", "n1", 60_000)).toBeNull();
    expect(await leases.acquire("b", "n2", 60_000)).toBe(1);

    expect(await leases.renew("a", "n1", 1, 60_000)).toBe(true);
    expect(await leases.renew("a", "n1", 2, 60_000)).toBe(false);
    expect(await leases.renew("a", "n2", 1, 60_000)).toBe(false);

    expect(await leases.release("a", "n2", 1)).toBe(false);
    expect(await leases.release("a", "n1", 1)).toBe(true);
    expect(await leases.renew("a", "n1", 1, 60_000)).toBe(false);
    expect(await leases.acquire("a", "n2", 60_000)).toBe(2);

    const holders = await leases.holders();
    expect(holders.map(({ target, node, token }) => ({ target, node, token }))).toEqual([
      { target: "a", node: "n2", token: 2 },
      { target: "b", node: "n2", token: 1 },
    ]);
    for (const h of holders) expect(h.expiresInMs).toBeGreaterThan(50_000);
  });

  test("a lease expires on the database's clock; each takeover increments the token; the stale token changes nothing", async () => {
    const { sql } = await freshDatabase();
    const leases = new TargetLeases(sql);
    expect(await leases.acquire("a", "n1", 300)).toBe(1);
    expect(await leases.acquire("a", "n2", 300)).toBeNull();
    await sql`SELECT pg_sleep(0.35)`;
    expect(await leases.acquire("a", "n2", 300)).toBe(2);
    expect(await leases.renew("a", "n1", 1, 60_000)).toBe(false);
    expect(await leases.release("a", "n1", 1)).toBe(false);
    await sql`SELECT pg_sleep(0.35)`;
    // The expired holder itself takes it over under a new token too.
    expect(await leases.acquire("a", "n2", 60_000)).toBe(3);
    expect(await leases.renew("a", "n2", 2, 60_000)).toBe(false);
    expect(await leases.renew("a", "n2", 3, 60_000)).toBe(true);
    const [row] = await leases.holders();
    expect(row).toMatchObject({ target: "a", node: "n2", token: 3 });

    // The expiry is the database's: a lease a second long is live for about a second of its clock.
    expect(await leases.acquire("c", "n1", 1_000)).toBe(1);
    const c = (await leases.holders()).find((h) => h.target === "c")!;
    expect(c.expiresInMs).toBeGreaterThan(0);
    expect(c.expiresInMs).toBeLessThanOrEqual(1_000);
  });

  test("tokens above 2^31 round-trip", async () => {
    const { sql } = await freshDatabase();
    const leases = new TargetLeases(sql);
    const big = 2 ** 40;
    await sql`INSERT INTO target_leases (target, node, token, expires_at) VALUES ('a', 'n1', ${big}::bigint, clock_timestamp())`;
    expect(await leases.acquire("a", "n2", 60_000)).toBe(big + 1);
    expect(await leases.renew("a", "n2", big + 1, 60_000)).toBe(true);
  });
});

describe("LeaseKeeper", () => {
  test("a keeper whose renews hang calls onLost before the database's lease ends, then takes the target again", async () => {
    const { url, sql } = await freshDatabase();
    const ttlMs = 1_000;
    const events: Array<{ event: string; token?: number; expiresInMs?: number; valid?: boolean }> = [];
    const acquired: Array<PromiseWithResolvers<number>> = [Promise.withResolvers(), Promise.withResolvers()];
    const lost = Promise.withResolvers<void>();
    const observer = new Bun.SQL(url, { max: 1 });
    open.push(observer);
    const watcher = new TargetLeases(observer);
    const keeper: LeaseKeeper = new LeaseKeeper({
      sql,
      node: "n1",
      targets: ["a"],
      ttlMs,
      pollMs: 50,
      onAcquired(_target, token) {
        events.push({ event: "acquired", token });
        acquired[events.filter((e) => e.event === "acquired").length - 1]?.resolve(token);
      },
      onLost() {
        const valid = keeper.valid("a");
        events.push({ event: "lost", valid });
        // Read from a connection the lock does not block: the database must still give the lease time.
        watcher.holders().then(([row]) => {
          events.push({ event: "db", expiresInMs: row!.expiresInMs });
          lost.resolve();
        });
      },
    });
    keeper.start();
    try {
      expect(await acquired[0]!.promise).toBe(1);
      expect(keeper.valid("a")).toBe(true);
      expect(keeper.token("a")).toBe(1);

      // Another connection holds the lease row: the keeper's next renew UPDATE waits on the lock.
      const locked = Promise.withResolvers<void>();
      const unlock = Promise.withResolvers<void>();
      const blocker = new Bun.SQL(url, { max: 1 });
      open.push(blocker);
      const lockTx = blocker.begin(async (tx) => {
        await tx`SELECT 1 FROM target_leases WHERE target = 'a' FOR UPDATE`;
        locked.resolve();
        await unlock.promise;
      });
      await locked.promise;
      await lost.promise;
      expect(events[1]).toEqual({ event: "lost", valid: false });
      expect(events[2]!.expiresInMs!).toBeGreaterThan(0);
      expect(keeper.valid("a")).toBe(false);
      expect(keeper.token("a")).toBeNull();

      // The lock goes: the late renew is not used; the target comes back under a new token.
      unlock.resolve();
      await lockTx;
      expect(await acquired[1]!.promise).toBe(2);
      expect(keeper.token("a")).toBe(2);
    } finally {
      await keeper.stop();
    }
    // stop() released it: another node takes it at once, under the next token.
    expect(await new TargetLeases(sql).acquire("a", "n2", 60_000)).toBe(3);
  });

  test("stop() calls onLost and releases every held lease", async () => {
    const { sql } = await freshDatabase();
    const got = new Set<string>();
    const lostOnes: string[] = [];
    const both = Promise.withResolvers<void>();
    const keeper = new LeaseKeeper({
      sql,
      node: "n1",
      targets: ["a", "b"],
      ttlMs: 60_000,
      pollMs: 50,
      onAcquired(target) {
        got.add(target);
        if (got.size === 2) both.resolve();
      },
      onLost: (target) => lostOnes.push(target),
    });
    keeper.start();
    await both.promise;
    await keeper.stop();
    expect(lostOnes.sort()).toEqual(["a", "b"]);
    const holders = await new TargetLeases(sql).holders();
    for (const h of holders) expect(h.expiresInMs).toBeLessThanOrEqual(0);
  });
});

interface NodeEvent {
  event: "started" | "acquired" | "lost";
  target: string;
  token: number | null;
  t: number;
}

/** A lease keeper in its own process (test/queue/pg-lease-node.ts), its events as they arrive. */
function startNode(url: string, node: string, ttlMs: number, pollMs: number, targets: string[]) {
  const proc = Bun.spawn(
    ["bun", join(import.meta.dir, "pg-lease-node.ts"), url, node, String(ttlMs), String(pollMs), ...targets],
    {
      stdout: "pipe",
      stderr: "inherit",
    },
  );
  const events: NodeEvent[] = [];
  const waiters: Array<() => void> = [];
  (async () => {
    const decoder = new TextDecoder();
    let buffer = "";
    for await (const chunk of proc.stdout) {
      buffer += decoder.decode(chunk, { stream: true });
      let nl: number;
      while ((nl = buffer.indexOf("\n")) >= 0) {
        events.push(JSON.parse(buffer.slice(0, nl)));
        buffer = buffer.slice(nl + 1);
        for (const w of waiters.splice(0)) w();
      }
    }
  })();
  /** Resolves once the node holds every one of `targets` (by its events), with the events that said so. */
  const holding = async (wanted: string[], timeoutMs: number): Promise<NodeEvent[]> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const last = new Map<string, NodeEvent>();
      for (const e of events) if (e.event !== "started") last.set(e.target, e);
      const held = wanted.map((t) => last.get(t));
      if (held.every((e) => e?.event === "acquired")) return held as NodeEvent[];
      const left = deadline - Date.now();
      if (left <= 0)
        throw new Error(`${node} did not hold ${wanted.join(", ")} within ${timeoutMs} ms: ${JSON.stringify(events)}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  };
  return { node, proc, events, holding, killedAt: null as number | null };
}
type Node = ReturnType<typeof startNode>;

/**
 * Each node's spans of holding a target, from its events: acquired to lost, or to its kill (a killed
 * process dispatches nothing more), or to now for one still running.
 */
function spans(nodes: Node[], target: string): Array<{ node: string; from: number; to: number }> {
  const out: Array<{ node: string; from: number; to: number }> = [];
  for (const n of nodes) {
    let from: number | null = null;
    for (const e of n.events) {
      if (e.target !== target) continue;
      if (e.event === "acquired") from = e.t;
      if (e.event === "lost" && from !== null) {
        out.push({ node: n.node, from, to: e.t });
        from = null;
      }
    }
    if (from !== null) out.push({ node: n.node, from, to: n.killedAt ?? Date.now() });
  }
  return out.sort((a, b) => a.from - b.from);
}

describe("two nodes in separate processes", () => {
  test("at most one holds each target; a killed holder's targets move to the other within the lease time, 5 times", async () => {
    const { url } = await freshDatabase();
    const ttlMs = 600;
    const pollMs = 100;
    const targets = ["a", "b"];
    const nodes: Node[] = [];
    const takeovers: number[] = [];
    try {
      let holder = startNode(url, "n0", ttlMs, pollMs, targets);
      nodes.push(holder);
      let last = await holder.holding(targets, 10_000);
      let standby = startNode(url, "n1", ttlMs, pollMs, targets);
      nodes.push(standby);
      for (let cycle = 0; cycle < 5; cycle++) {
        // The standby is up and trying (its first tries failed: the holder holds both).
        while (!standby.events.some((e) => e.event === "started")) await Bun.sleep(10);
        await Bun.sleep(2 * pollMs);
        expect(standby.events.filter((e) => e.event === "acquired")).toEqual([]);

        holder.killedAt = Date.now();
        holder.proc.kill(9);
        const taken = await standby.holding(targets, 10_000);
        const took = Math.max(...taken.map((e) => e.t)) - holder.killedAt;
        takeovers.push(took);
        expect(took).toBeLessThan(ttlMs + pollMs + 1_500);
        for (let i = 0; i < targets.length; i++) expect(taken[i]!.token!).toBeGreaterThan(last[i]!.token!);
        last = taken;

        holder = standby;
        standby = startNode(url, `n${cycle + 2}`, ttlMs, pollMs, targets);
        nodes.push(standby);
      }
      await Bun.sleep(2 * pollMs);
      for (const target of targets) {
        const held = spans(nodes, target);
        for (let i = 1; i < held.length; i++) expect(held[i]!.from).toBeGreaterThanOrEqual(held[i - 1]!.to);
      }
      if (process.env.FOREMAN_TEST_VERBOSE) console.log(`takeover ms: ${takeovers.join(", ")}`);
    } finally {
      for (const n of nodes) n.proc.kill(9);
      await Promise.all(nodes.map((n) => n.proc.exited));
    }
  }, 60_000);
});
