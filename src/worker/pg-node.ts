import type { Logger } from "../log";
import { normalizeModel } from "../ollama/model-key";
import { openPg } from "../queue/pg/db";
import { PgJobStore } from "../queue/pg/job-store";
import { LeaseKeeper } from "../queue/pg/leases";
import { JobEndListener, JobQueuedListener } from "../queue/pg/notify";
import { PgRunnerStore } from "../queue/pg/runner-store";
import type { FromWorker, ToWorker, WorkerSettings } from "./protocol";
import { TargetRunners } from "./targets";

/** How often the targets this node does not hold are tried, as a share of the lease time. */
const LEASE_POLL_SHARE = 1 / 5;
/** The safety poll (ms) behind the queued-job notification: a missed one costs at most this much idle GPU. */
const QUEUED_POLL_MS = 1000;

/** A job loop on PostgreSQL, as the worker thread runs it: messages in (handle), and a promise of its stop. */
export interface PgNode {
  handle(message: Exclude<ToWorker, { type: "init" }>): void;
  /** Resolves once the loops stopped (after a shutdown message) and the connections are closed. */
  readonly stopped: Promise<void>;
}

/**
 * One foreman node's job loop on a PostgreSQL queue shared with other nodes: the runners (one per target, as
 * on SQLite) over PgRunnerStore, claiming only for the targets this node holds a lease on (LeaseKeeper). When
 * it takes a target's lease it re-queues what the previous holder left running there and reads what the GPU
 * has loaded before it sends anything; when it loses one it aborts its jobs there (the next holder re-queues
 * them). Jobs queued on any node wake its loops (JobQueuedListener); a job of its own that another node
 * canceled (a client there hung up, or an API cancel) has its call aborted, as a cancel message does here.
 */
export async function startPgNode(settings: WorkerSettings, post: (message: FromWorker) => void, log: Logger): Promise<PgNode> {
  const sql = await openPg(settings.dbPath, { poolSize: 4 });
  const pg = new PgJobStore(sql);
  pg.fairEnabled = settings.fairShare === "on";
  const tokens = new Map<string, number>();
  /** Targets whose lease is held and whose previous holder's jobs are recovered: only these are claimed for. */
  const ready = new Set<string>();
  const store = new PgRunnerStore(pg, (target) =>
    ready.has(target) && keeper.valid(target) ? { target, token: tokens.get(target)! } : null,
  );
  const runners = new TargetRunners(store, settings, post, log);

  const keeper: LeaseKeeper = new LeaseKeeper({
    sql,
    node: settings.nodeName,
    targets: settings.targets.map((t) => t.name),
    ttlMs: settings.leaseTtlMs,
    pollMs: Math.max(100, Math.round(settings.leaseTtlMs * LEASE_POLL_SHARE)),
    onAcquired(target, token) {
      tokens.set(target, token);
      void (async () => {
        // A dead node's last heartbeat is at least two thirds of a lease time old by now (its lease outlived it by a
        // lease time, renewed every third), a live one's at most a fifth (it beats five times a lease time): half tells them apart.
        const { requeued, failed, canceled } = await store.recoverTargets([{ target, token }], settings.leaseTtlMs / 2);
        await readInventory(target);
        if (tokens.get(target) !== token || !keeper.valid(target)) return;
        ready.add(target);
        log.info("runs target", {
          target,
          node: settings.nodeName,
          requeued: requeued.length,
          failed: failed.length,
          canceled: canceled.length,
        });
        for (const job of [...failed, ...canceled]) post({ type: "ended", jobId: job.id });
        runners.group.wakeAll();
      })().catch((error) => log.error("could not take over target", { target, error }));
    },
    onLost(target) {
      ready.delete(target);
      log.warn("lost target's lease: its jobs there are the next holder's to re-queue", { target, node: settings.nodeName });
      const runner = runners.runner(target);
      for (const id of store.runningOn(target)) runner?.cancel(id);
    },
    onError: (error, target) => log.debug("lease call failed (retrying)", { target, error }),
  });

  /** What the target has loaded and installed, read before this node sends it anything. */
  async function readInventory(target: string): Promise<void> {
    const entry = settings.targets.find((t) => t.name === target)!;
    const headers: Record<string, string> = entry.token ? { authorization: `Bearer ${entry.token}` } : {};
    try {
      const [ps, tags] = await Promise.all(
        ["/api/ps", "/api/tags"].map(async (path) => {
          const response = await fetch(`${entry.url}${path}`, { headers, signal: AbortSignal.timeout(5000) });
          return (await response.json()) as { models: { name: string }[] };
        }),
      );
      runners.runner(target)?.setInventory(
        ps!.models.map((m) => normalizeModel(m.name)),
        true,
        settings.targets.length > 1 ? tags!.models.map((m) => normalizeModel(m.name)) : undefined,
      );
    } catch {
      runners.runner(target)?.setInventory([], false);
    }
  }

  const queued = new JobQueuedListener({ sql, pollMs: QUEUED_POLL_MS, onQueued: () => runners.group.wakeAll() });
  // Ends written elsewhere of jobs running here: a canceled one is aborted (its end is already in the row).
  const ends = new JobEndListener({
    sql,
    onEnded(ids) {
      const mine = new Set(settings.targets.flatMap((t) => store.runningOn(t.name)));
      const here = ids.filter((id) => mine.has(id));
      if (here.length === 0) return;
      void sql
        .unsafe(`SELECT id FROM jobs WHERE id = ANY($1::text[]) AND state = 'canceled'`, [here])
        .then((rows: Array<{ id: string }>) => {
          for (const { id } of rows) runners.handle({ type: "cancel", jobId: id });
        })
        .catch((error: unknown) => log.warn("could not read canceled jobs", { error }));
    },
    onResync() {},
  });
  await Promise.all([queued.start(), ends.start()]);
  keeper.start();

  const stopped = runners
    .run(() => post({ type: "ready" }))
    .catch((error) => log.error("job loop crashed", { error }))
    .finally(async () => {
      await Promise.allSettled([queued.stop(), ends.stop()]);
      // Given up in the database too, so another node takes the targets over at once rather than after the lease time.
      await keeper.stop().catch(() => {});
      await sql.close().catch(() => {});
    });
  return { handle: (message) => runners.handle(message), stopped };
}
