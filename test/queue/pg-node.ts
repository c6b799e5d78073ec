// One foreman node's job loop on PostgreSQL, in its own process, for test/queue/pg-nodes.test.ts: the real
// runners (src/worker/targets.ts) over PgRunnerStore, running only the targets this node holds a lease on
// (LeaseKeeper), recovering a target's interrupted jobs when it takes the lease, and aborting its jobs there
// when it loses it. What the HTTP thread does for the worker in `serve` is done here by hand: each held
// target's /api/ps and /api/tags read every 200 ms (the inventory); jobs queued by any node wake its loops
// through JobQueuedListener (src/queue/pg/notify.ts).
// Prints JSON lines: {"event":"acquired"|"lost","target","token","t"}, {"event":"recovered","target","requeued"}.
// Usage: bun test/queue/pg-node.ts <url> <node> <ttlMs> <pollMs> <name=url>...
import { loadConfig } from "../../src/config";
import { createLogger } from "../../src/log";
import { normalizeModel } from "../../src/ollama/model-key";
import { openPg } from "../../src/queue/pg/db";
import { PgJobStore } from "../../src/queue/pg/job-store";
import { LeaseKeeper } from "../../src/queue/pg/leases";
import { JobQueuedListener } from "../../src/queue/pg/notify";
import { PgRunnerStore } from "../../src/queue/pg/runner-store";
import { workerSettings } from "../../src/worker/protocol";
import { TargetRunners } from "../../src/worker/targets";

const [url, node, ttl, poll, ...entries] = process.argv.slice(2);
if (!url || !node || !ttl || !poll || entries.length === 0)
  throw new Error("usage: pg-node.ts <url> <node> <ttlMs> <pollMs> <name=url>...");
const say = (event: Record<string, unknown>) => process.stdout.write(JSON.stringify({ ...event, t: Date.now() }) + "\n");

const sql = await openPg(url, { poolSize: 4 });
const pg = new PgJobStore(sql);
const tokens = new Map<string, number>();
/** Targets whose lease is held and whose previous holder's jobs are recovered: only these are claimed for. */
const ready = new Set<string>();
const store = new PgRunnerStore(pg, (target) =>
  ready.has(target) && keeper.valid(target) ? { target, token: tokens.get(target)! } : null,
);

const config = loadConfig({ FOREMAN_OLLAMA_URL: entries.join(","), FOREMAN_LOG_LEVEL: "error", FOREMAN_DB: ":memory:" });
const settings = workerSettings(config);
const log = createLogger("error", "worker", "json");
const runners = new TargetRunners(store, settings, () => {}, log);

const keeper = new LeaseKeeper({
  sql,
  node,
  targets: config.targets.map((t) => t.name),
  ttlMs: Number(ttl),
  pollMs: Number(poll),
  onAcquired(target, token) {
    tokens.set(target, token);
    say({ event: "acquired", target, token });
    void (async () => {
      // The previous holder's jobs on this target go back to the queue, and what the GPU has loaded is read,
      // before this node sends anything there.
      const { requeued } = await store.recoverTargets([{ target, token }]);
      await readInventory(target);
      if (tokens.get(target) !== token || !keeper.valid(target)) return;
      ready.add(target);
      say({ event: "recovered", target, token, requeued: requeued.length });
      runners.group.wakeAll();
    })().catch((error) => say({ event: "error", target, error: String(error) }));
  },
  onLost(target) {
    ready.delete(target);
    say({ event: "lost", target, token: tokens.get(target) ?? null });
    // Stop dispatching there: whatever runs on it is the next holder's to re-queue.
    const runner = runners.runner(target);
    for (const id of store.runningOn(target)) runner?.cancel(id);
  },
});

async function readInventory(target: string): Promise<void> {
  const entry = config.targets.find((t) => t.name === target)!;
  try {
    const [ps, tags] = await Promise.all([
      fetch(`${entry.url}/api/ps`).then((r) => r.json() as Promise<{ models: { name: string }[] }>),
      fetch(`${entry.url}/api/tags`).then((r) => r.json() as Promise<{ models: { name: string }[] }>),
    ]);
    const installed = tags.models.map((m) => normalizeModel(m.name));
    runners.runner(target)?.setInventory(
      ps.models.map((m) => normalizeModel(m.name)),
      true,
      installed,
    );
  } catch {
    runners.runner(target)?.setInventory([], false);
  }
}

const inventoryTimer = setInterval(() => {
  for (const target of ready) void readInventory(target);
}, 200);
// Jobs queued or put back by any node wake the loops; the listener's poll is the safety net.
const queued = new JobQueuedListener({ url, pollMs: 1000, onQueued: () => runners.group.wakeAll() });
await queued.start();

keeper.start();
const loops = runners.run(() => say({ event: "started" }));

process.on("SIGTERM", async () => {
  clearInterval(inventoryTimer);
  await queued.stop();
  runners.handle({ type: "shutdown", graceMs: 0 });
  await loops;
  await keeper.stop();
  await sql.close();
  process.exit(0);
});
