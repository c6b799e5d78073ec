import type { Database } from "bun:sqlite";
import type { SQL, Server } from "bun";
import { mkdirSync } from "node:fs";
import { hostname as osHostname } from "node:os";
import { dirname, resolve } from "node:path";
import { type Config, isLoopback, unknownSettings } from "./config";
import { apiForPath, errorResponse } from "./adapters/error-shapes";
import { composeForeman, composePgForeman } from "./compose";
import { openPg } from "./queue/pg/db";
import type { PgQueueStore } from "./queue/pg/queue-store";
import { isPostgresUrl } from "./queue/pg/url";
import type { JobService } from "./job-service";
import { type Logger, createLogger } from "./log";
import type { OllamaClient } from "./ollama/client";
import { type IdleTimeout, onKeepOpen } from "./http/long-lived";
import { logRequests } from "./http/request-log";
import { ConnectionLimit, closingAfter, warnIfFewDescriptors } from "./http/connection-limit";
import { openDatabase } from "./queue/db";
import { tightenDatabaseFiles, trackCreatedFiles } from "./queue/db-files";
import { PRIVATE_FOLDER_MODE } from "./queue/private-files";
import { type DatabaseLock, lockDatabase, lockPathFor } from "./queue/lock";
import { KeyStore } from "./keys/key-store";
import { WorkerBridge } from "./worker/bridge";
import { workerSettings } from "./worker/protocol";
import { type DatabaseStep, StartupError, databaseStartupError, listenStartupError } from "./startup-error";
import { openJobTables } from "./tables";
import type { JobStore } from "./queue/store";

/** A running foreman: its address and how to stop it. */
export interface RunningServer {
  url: string;
  port: number;
  /** The jobs on SQLite (tests read the store through it); on PostgreSQL, see PgRunningServer. */
  jobs: JobService<JobStore>;
  /** Stops accepting, lets the running job finish (or re-queues it), closes the database. */
  stop(): Promise<void>;
}

/** `foreman serve`: startServer on SQLite, startPgServer with FOREMAN_DB=postgres://. */
export function startNode(config: Config): Promise<{ url: string; stop(): Promise<void> }> {
  return isPostgresUrl(config.dbPath) ? startPgServer(config) : startServer(config);
}

/** Opens the store, starts the worker, the inventory poller and the webhook loop, and listens. */
export async function startServer(config: Config): Promise<RunningServer> {
  const { log, server } = beginStart(config);
  let owned: { db: Database; lock: DatabaseLock | undefined };
  try {
    owned = openOwnedDatabase(config, log);
  } catch (error) {
    await server.stop(true);
    throw error;
  }
  const { db, lock } = owned;
  // API keys close foreman as FOREMAN_TOKEN does (a revoked one too: revoking never opens it).
  if (!isLoopback(config.listen.hostname) && !config.token && new KeyStore(db).count() === 0) {
    log.warn("listening beyond this machine without FOREMAN_TOKEN or API keys: anyone who can reach it can use it", {
      listen: `${config.listen.hostname}:${config.listen.port}`,
    });
  }
  const tables = openJobTables(db, config.fairShare);
  // Resolved from this file so that, compiled, it names the worker entry point bundled beside main.
  const workerUrl = new URL("./worker/index.ts", import.meta.url).href;
  const bridge = new WorkerBridge(workerUrl, workerSettings(config), createLogger(config.logLevel, "worker", config.logFormat));
  const { ollama, inventory, jobs, webhooks, batches, handle } = composeForeman(config, db, tables, bridge, (scope) =>
    scope === "http" ? log : createLogger(config.logLevel, scope, config.logFormat),
  );

  await bridge.ready;
  await inventory.start();
  webhooks.start();
  batches.start();
  // Pinned on each target that has it (one target: the one), so embeddings find it resident wherever they go.
  if (config.embedModel) {
    const model = config.embedModel;
    const views = inventory.several ? inventory.targets.filter((t) => t.inventory.has(model)) : inventory.targets;
    for (const view of views) void warmEmbedModel(view.client, model, log);
  }

  const url = serve(server, config, handle, log);
  logListening(log, config, url, { db: config.dbPath });

  let stopping: Promise<void> | undefined;
  return {
    url,
    port: server.port!,
    jobs,
    stop() {
      stopping ??= (async () => {
        log.info("shutting down: no new requests; the running job may finish", { grace_ms: config.shutdownGraceMs });
        jobs.shuttingDown = true;
        void server.stop();
        inventory.stop();
        jobs.storage.stop();
        webhooks.stop();
        batches.stop();
        // Clients still waiting in the queue are told to come back (503) now; the running job gets the
        // grace period, and whoever still waits after it is told the same.
        jobs.releaseWaitingClients(true);
        await bridge.shutdown(config.shutdownGraceMs);
        jobs.releaseWaitingClients(false);
        // Give responses that the last job completed a moment to flush before the sockets close.
        await Bun.sleep(50);
        await server.stop(true);
        db.close();
        lock?.release();
        log.info("stopped");
      })();
      return stopping;
    },
  };
}

/** A foreman node on a PostgreSQL queue shared with other nodes. */
export interface PgRunningServer {
  url: string;
  port: number;
  jobs: JobService<PgQueueStore>;
  stop(): Promise<void>;
}

/**
 * startServer with FOREMAN_DB=postgres://: the database is migrated (PostgreSQL's own migrations, under an
 * advisory lock, so nodes starting together migrate once), the worker runs this node's share of the targets
 * (leases: see src/worker/pg-node.ts), and the HTTP side serves the jobs surface (composePgForeman). No file
 * lock: any number of nodes may share the database, and one runner per target is the leases' rule.
 */
export async function startPgServer(config: Config): Promise<PgRunningServer> {
  const { log, server } = beginStart(config);
  let sql: SQL;
  try {
    sql = await openPg(config.dbPath, { poolSize: 8 });
  } catch (error) {
    await server.stop(true);
    throw new StartupError(`could not open the PostgreSQL queue (FOREMAN_DB): ${error instanceof Error ? error.message : error}`);
  }
  const workerUrl = new URL("./worker/index.ts", import.meta.url).href;
  const bridge = new WorkerBridge(workerUrl, workerSettings(config), createLogger(config.logLevel, "worker", config.logFormat));
  const nodeUrl = config.nodeUrl ?? defaultNodeUrl(config.listen.hostname, server.port!);
  const { inventory, jobs, keys, remoteEnds, heartbeat, relay, webhooks, webhookWakes, handle } = composePgForeman(
    config,
    sql,
    bridge,
    (scope) => (scope === "http" ? log : createLogger(config.logLevel, scope, config.logFormat)),
    nodeUrl,
  );
  try {
    await keys.start();
    if (!isLoopback(config.listen.hostname) && !config.token && keys.count() === 0) {
      log.warn("listening beyond this machine without FOREMAN_TOKEN or API keys: anyone who can reach it can use it", {
        listen: `${config.listen.hostname}:${config.listen.port}`,
      });
    }
    // Alive before any client of this node is queued: its waiters are never taken for a dead node's.
    await heartbeat.start();
    await remoteEnds.start();
    await relay.start();
    await bridge.ready;
    await inventory.start();
    await webhookWakes.start();
    webhooks.start();
  } catch (error) {
    // The database went away between its migration and here: nothing started stays behind (timers, the
    // worker, the connections, the port), and the start fails with why.
    keys.stop();
    heartbeat.stop();
    inventory.stop();
    webhooks.stop();
    await relay.stop();
    await remoteEnds.stop().catch(() => {});
    await webhookWakes.stop().catch(() => {});
    await bridge.shutdown(0).catch(() => {});
    await server.stop(true);
    await sql.close().catch(() => {});
    throw new StartupError(
      `could not start on the PostgreSQL queue (FOREMAN_DB): ${error instanceof Error ? error.message : error}`,
    );
  }
  const url = serve(server, config, handle, log);
  logListening(log, config, url, { db: "postgres", node: config.nodeName, node_url: nodeUrl });
  let stopping: Promise<void> | undefined;
  return {
    url,
    port: server.port!,
    jobs,
    stop() {
      stopping ??= (async () => {
        log.info("shutting down: no new requests; the running job may finish", { grace_ms: config.shutdownGraceMs });
        jobs.shuttingDown = true;
        void server.stop();
        inventory.stop();
        webhooks.stop();
        await jobs.releaseWaitingClients(true);
        // The worker gives its leases up as it stops: another node takes the targets over at once.
        await bridge.shutdown(config.shutdownGraceMs);
        await jobs.releaseWaitingClients(false);
        await Bun.sleep(50);
        await server.stop(true);
        heartbeat.stop();
        keys.stop();
        await relay.stop();
        await remoteEnds.stop().catch(() => {});
        await webhookWakes.stop().catch(() => {});
        await webhooks.idle(); // attempts under way finish (within their timeout) and are recorded
        await sql.close().catch(() => {});
        log.info("stopped");
      })();
      return stopping;
    },
  };
}

/**
 * Where the other nodes reach this one when FOREMAN_NODE_URL does not say: the address it listens on, or this
 * machine's name when it listens on every address (0.0.0.0, ::), which the others cannot connect to as such.
 */
function defaultNodeUrl(hostname: string, port: number): string {
  const host = hostname === "0.0.0.0" || hostname === "::" ? osHostname() : hostname;
  return `http://${host.includes(":") ? `[${host}]` : host}:${port}`;
}

/** The start's last line on either engine: where it listens, what it fronts, which queue (`store`). */
function logListening(log: Logger, config: Config, url: string, store: Record<string, string>): void {
  log.info("foreman listening", {
    url,
    ollama: config.ollamaUrl,
    ...(config.targets.length > 1 ? { targets: config.targets.map((t) => `${t.name}=${t.url} (${t.slots} slots)`) } : {}),
    ...store,
    schedule: config.schedule,
  });
}

/** The start's first steps on either engine: warnings about the settings, then the port. */
function beginStart(config: Config): { log: Logger; server: Server<undefined> } {
  const log = createLogger(config.logLevel, "http", config.logFormat);
  for (const { name, didYouMean } of unknownSettings()) {
    log.warn(`unknown setting ${name} is ignored`, didYouMean ? { did_you_mean: didYouMean } : {});
  }
  warnIfFewDescriptors(log, config.maxConnections);
  // The port first: a port in use must fail before anything touches the database. Until the app is
  // built, requests get a 503.
  return { log, server: listen(config) };
}

/** Swaps the placeholder handler for `handle`, behind the connection limit, the idle-timeout rules and the request log; the URL. */
function serve(server: Server<undefined>, config: Config, handle: (request: Request) => Promise<Response>, log: Logger): string {
  const connections = new ConnectionLimit(config.maxConnections);
  server.reload({
    fetch: logRequests(
      log,
      connections.wrap(async (request, server) => {
        // A client may wait minutes in the queue or behind a model load without a byte on the wire: the
        // routes that wait say so (keepOpen), for authenticated requests only; everything else keeps the
        // idle timeout. The timeout comes back with the answer (src/http/long-lived.ts): here for a whole
        // one, from the stream for a relayed job; any other stream is closed after its answer, since Bun
        // cannot put the timeout back once the answer is out.
        let lifted = false;
        const timeout: IdleTimeout = {
          lift() {
            lifted = true;
            server.timeout(request, 0);
          },
          restore() {
            try {
              server.timeout(request, IDLE_TIMEOUT_SECONDS);
              connections.answered(request, server);
            } catch {
              // The connection is gone: nothing to keep alive.
            }
          },
        };
        onKeepOpen(request, timeout);
        const response = await handle(request);
        if (!lifted || timeout.restoresAtEnd) return response;
        if (isStream(response)) return closingAfter(response);
        timeout.restore();
        return response;
      }),
    ),
  });
  return `http://${server.hostname?.includes(":") ? `[${server.hostname}]` : server.hostname}:${server.port}`;
}

/** An answer written as it comes (records, events), not one body: the content types foreman streams. */
function isStream(response: Response): boolean {
  const type = response.headers.get("content-type") ?? "";
  return type.includes("event-stream") || type.includes("ndjson");
}

/** Bun.serve's idle timeout, in seconds (Bun checks it in ticks of a few seconds, so a cut may take ~4 s longer). */
export const IDLE_TIMEOUT_SECONDS = 10;

/** Binds the port with a placeholder handler (503) that {@link startServer} swaps for the app. */
function listen(config: Config): Server<undefined> {
  try {
    return Bun.serve({
      hostname: config.listen.hostname,
      port: config.listen.port,
      // Bun would answer an empty 413 past this, before the app could say why in the API's shape: the
      // limit is the app's (FOREMAN_MAX_BODY, src/http/body-limit.ts), and model blobs have none.
      maxRequestBodySize: Number.MAX_SAFE_INTEGER,
      // Seconds without a byte after which Bun closes a connection: an idle keep-alive socket, a stalled
      // body, or a request being answered (unless its route lifted it: src/http/long-lived.ts). Headers
      // that never complete are cut by Bun itself (about 10 s).
      idleTimeout: IDLE_TIMEOUT_SECONDS,
      fetch: (request) =>
        errorResponse(apiForPath(new URL(request.url).pathname), 503, "foreman is starting", { "retry-after": "1" }),
    });
  } catch (error) {
    throw listenStartupError(error, config.listen);
  }
}

/**
 * Takes the database's lock, then opens and migrates it: in that order, so a second foreman leaves
 * the first one's jobs alone (crash recovery runs in the worker, later). On failure nothing the
 * attempt created stays behind: not the folder, the database, its -wal/-shm nor the lock file. Every one
 * of those is owner-only: folders it creates 0700, files 0600.
 */
function openOwnedDatabase(config: Config, log: Logger): { db: Database; lock: DatabaseLock | undefined } {
  const path = config.dbPath;
  if (path === ":memory:") return { db: openDatabase(path, { durability: config.durability }), lock: undefined };
  const created = trackCreatedFiles(path);
  let step: DatabaseStep = "folder";
  let lock: DatabaseLock | undefined;
  try {
    mkdirSync(dirname(path), { recursive: true, mode: PRIVATE_FOLDER_MODE });
    // New files are made 0600 (src/queue/private-files.ts); ones an older foreman left readable by others are closed now.
    for (const file of tightenDatabaseFiles(path)) {
      log.warn("the database's file was readable by other users; it is now owner-only (0600)", { file });
    }
    step = "lock";
    lock = lockDatabase(path);
    step = "database";
    return { db: openDatabase(path, { durability: config.durability }), lock };
  } catch (error) {
    lock?.release();
    created.removeCreated();
    const target = step === "folder" ? dirname(resolve(path)) : step === "lock" ? lockPathFor(resolve(path)) : resolve(path);
    throw databaseStartupError(error, step, target);
  }
}

/** Loads the embedding model for good (keep_alive -1) so embeddings never wait for a load. */
async function warmEmbedModel(ollama: OllamaClient, model: string, log: ReturnType<typeof createLogger>) {
  try {
    await ollama.request("POST", "/api/embed", JSON.stringify({ model, input: "", keep_alive: -1 }));
    log.info("embedding model loaded and pinned", { model });
  } catch (error) {
    log.warn("could not warm the embedding model", { model, error });
  }
}
