import type { Database } from "bun:sqlite";
import { type Config, isLoopback } from "./config";
import type { SQL } from "bun";
import { createApp, createAuthorizer, embeddedOnly } from "./app";
import { FileStore } from "./batch/files";
import { UPLOAD_OVERHEAD_BYTES } from "./http/files";
import { BatchService } from "./batch/service";
import { BatchStore } from "./batch/store";
import { batchWebhookPayload } from "./batch/view";
import { apiForPath, errorResponse } from "./adapters/error-shapes";
import { CorsPolicy } from "./http/cors";
import { HostPolicy } from "./http/host-check";
import { sameConnection } from "./http/long-lived";
import { rejectMalformedTarget, routedPath } from "./http/request-target";
import { RouteTable } from "./http/route-table";
import { readChunkedBody, rejectDeclaredLength } from "./http/body-limit";
import { JobService } from "./job-service";
import { KeyStore } from "./keys/key-store";
import { PrincipalResolver, principalOf, setPrincipal } from "./keys/principal";
import { jobEndReporter } from "./job-ended";
import { NODE_GONE, PgJobStore } from "./queue/pg/job-store";
import { PgQueueStore } from "./queue/pg/queue-store";
import { PgKeyStore } from "./queue/pg/keys";
import { PgDashboardQueries } from "./queue/pg/dashboard-queries";
import { PgWebhookDeliveries, WebhookDueListener } from "./webhook/pg-deliveries";
import { DEFAULT_LIMITS } from "./dashboard/snapshot";
import { remoteJobEnds } from "./queue/pg/remote-ends";
import { type JobEndListener, JobStartedListener } from "./queue/pg/notify";
import { RELAY_PATH_PREFIX, RelaySource } from "./nodes/relay-source";
import { RelaySink } from "./nodes/relay-sink";
import { ForemanMetrics } from "./metrics";
import type { Logger } from "./log";
import { OllamaClient } from "./ollama/client";
import { TargetInventory } from "./ollama/targets";
import { StorageHealth, probeWrite } from "./queue/storage-health";
import { DashboardQueries } from "./queue/dashboard-queries";
import type { JobStore } from "./queue/store";
import type { JobTables } from "./tables";
import { WebhookDispatcher } from "./webhook/dispatcher";
import type { JobEventHub, JobLink } from "./worker/job-events";
import type { UpstreamErrorKind } from "./worker/protocol";

/** The job loop as the HTTP side drives it: a Worker (WorkerBridge), or this thread in tests. */
export interface JobLoop extends JobLink {
  /** Where the loop's state changes, chunks and ends are fanned out. */
  readonly hub: JobEventHub;
  /** Set by {@link composeForeman}: the loop could not reach a target (absent: the first). */
  onUnreachable: (target: string | undefined) => void;
  /** Set by {@link composeForeman}: an attempt failed upstream (its kind, whether the job is tried again, the target). */
  onAttemptFailed: (kind: UpstreamErrorKind, retry: boolean, target: string | undefined) => void;
  /** Set by {@link composeForeman}: the loop's pending write fails for space (`error`), or landed (undefined). */
  onStorage?: (error: string | undefined) => void;
  /**
   * Which models a target (absent: the first) has resident, whether it answers at all and, with several
   * targets, which models it has installed (the jobs it may claim).
   */
  setInventory(residentKeys: string[], reachable: boolean, target?: string, installed?: string[]): void;
}

/** foreman's HTTP side, wired: what server.ts serves and what the in-process tests call. */
export interface Foreman {
  ollama: OllamaClient;
  inventory: TargetInventory;
  jobs: JobService<JobStore>;
  webhooks: WebhookDispatcher;
  /** What GET /metrics shows. */
  metrics: ForemanMetrics;
  /** OpenAI's Files and Batch APIs over the same database. */
  batches: BatchService;
  /** The routes the app declares (Elysia's route table), for tests that cover every route. */
  routes: Array<{ method: string; path: string }>;
  /** Answers one request: the transport checks (request target, Host, CORS, token, route, body size), then the app. */
  handle(request: Request): Promise<Response>;
}

/**
 * Builds the job service, inventory, webhook dispatcher and app over `tables` and `loop`, and wires
 * their events to each other. Starts nothing: the caller starts the inventory, the webhooks and the batches.
 * `logFor(scope)` gives each part its logger (server.ts: stdout; tests: one that keeps its lines).
 */
export function composeForeman(
  config: Config,
  db: Database,
  tables: JobTables,
  loop: JobLoop,
  logFor: (scope: string) => Logger,
): Foreman {
  const log = logFor("http");
  const { store, deliveries } = tables;
  const inventory = new TargetInventory(config.targets, config.pollIntervalMs, log);
  // Model management, /api/version and, with one target, everything direct goes to the first target.
  const ollama = inventory.targets[0]!.client;
  const jobs = new JobService(store, deliveries, loop, inventory, config, log);
  const keys = new KeyStore(db);
  const principals = new PrincipalResolver(config.token, keys);
  // A key's name never changes and its id is never reused: each is read once.
  const keyNames = new Map<string, string>();
  jobs.keyName = (keyId) => {
    let name = keyNames.get(keyId);
    if (name === undefined) {
      name = keys.find(keyId)?.name;
      if (name !== undefined) keyNames.set(keyId, name);
    }
    return name ?? null;
  };
  jobs.storage = new StorageHealth(probeWrite(db));
  const webhooks = new WebhookDispatcher(store, deliveries, config, logFor("webhook"));
  const files = new FileStore(db);
  const batchStore = new BatchStore(db, files, tables.batchLedger, tables.store.fair);
  const batches = new BatchService(batchStore, files, jobs, config, logFor("batch"));
  batches.onBatchEnded = () => webhooks.wake();
  batches.keyOf = (keyId) => keys.find(keyId);
  webhooks.keyName = jobs.keyName;
  webhooks.batchPayload = (id) => {
    const batch = batchStore.get(id);
    return batch ? batchWebhookPayload(batch) : null;
  };

  const metrics = new ForemanMetrics({ store, inventory, storage: jobs.storage, targets: targetsUp(inventory) });
  metrics.keyName = jobs.keyName;
  // Every job end, whichever thread ended it, is reported once from its row: the log line and the metrics.
  const reportJobEnd = jobEndReporter(store, metrics, logFor("jobs"), jobs.keyName);

  loop.onAttemptFailed = (kind, retry, target) => metrics.attemptFailed(kind, retry, target);
  loop.onStorage = (error) => jobs.storage.worker(error);
  webhooks.onDelivery = (outcome) => metrics.webhookDelivery(outcome);
  loop.hub.onJobEnded = (jobId) => {
    reportJobEnd(jobId);
    webhooks.wake();
    inventory.refreshRunning();
  };
  tellInventory(inventory, loop);

  const app = createApp({
    config,
    jobs,
    ollama,
    webhooks,
    principals,
    embedded: { jobs, batches },
    metrics,
    dashboard: new DashboardQueries(db),
    keys: { registry: keys, usage: tables.store.keyUsage },
  });
  const { handle, routes } = transport(config, app, principals, true);
  return { ollama, inventory, jobs, webhooks, metrics, batches, routes, handle };
}

/** foreman's HTTP side on PostgreSQL: the jobs surface alone so far (see AppDependencies.embedded). */
export interface PgForeman {
  ollama: OllamaClient;
  inventory: TargetInventory;
  jobs: JobService<PgQueueStore>;
  /** The API keys, shared by every node; started (read, then re-read every second) by the caller. */
  keys: PgKeyStore;
  /** Wakes this node's waiters when their jobs end on another node; started by the caller, stopped at shutdown. */
  remoteEnds: JobEndListener;
  /** This node's heartbeat, and the canceling of dead nodes' clients' jobs (see PgJobStore.cancelOrphans). */
  heartbeat: { start(): Promise<void>; stop(): void };
  /** The node-to-node relay of running jobs' records (src/nodes/): started by the caller, stopped at shutdown. */
  relay: { start(): Promise<void>; stop(): Promise<void> };
  /**
   * This node's webhook dispatcher over the shared deliveries (each due one claimed by one node at a time):
   * started by the caller after `webhookWakes`, stopped at shutdown, its attempts under way awaited (idle()).
   */
  webhooks: WebhookDispatcher;
  /** Wakes `webhooks` when any node's job end queues a delivery (and on a slow poll); started and stopped by the caller. */
  webhookWakes: WebhookDueListener;
  routes: Array<{ method: string; path: string }>;
  handle(request: Request): Promise<Response>;
}

/**
 * composeForeman for a queue on PostgreSQL shared with other foreman nodes: the same transport, generation
 * routes, job API, /queue and API keys over the PostgreSQL stores; a job that ends on any node wakes its waiters here (remoteJobEnds); the job end
 * is reported (logged) by the node whose loop or client ended it.
 */
export function composePgForeman(
  config: Config,
  sql: SQL,
  loop: JobLoop,
  logFor: (scope: string) => Logger,
  /** Where the other nodes reach this one's relay (FOREMAN_NODE_URL, or this node's listen address). */
  nodeUrl: string | null = null,
): PgForeman {
  const log = logFor("http");
  const inventory = new TargetInventory(config.targets, config.pollIntervalMs, log);
  const ollama = inventory.targets[0]!.client;
  const pg = new PgJobStore(sql);
  pg.fairEnabled = config.fairShare === "on";
  pg.node = config.nodeName;
  const store = new PgQueueStore(sql, pg);
  const deliveries = new PgWebhookDeliveries(sql);
  const jobs = new JobService(store, deliveries, loop, inventory, config, log);
  // Every node reads the keys into memory (a request's principal is decided before its body is read, with no
  // round trip); a key made or revoked on any node takes effect everywhere within a second.
  const keys = new PgKeyStore(sql);
  keys.onRefreshError = (error) => log.warn("could not read the API keys (the last copy stays in use)", { error });
  const principals = new PrincipalResolver(config.token, keys, Date.now, 0);
  jobs.keyName = (keyId) => keys.cached(keyId)?.name ?? null;
  // The queue gauges read the shared queue (every node shows the same); the job counters count this node's ends.
  const metrics = new ForemanMetrics({ store, inventory, storage: jobs.storage, targets: targetsUp(inventory) });
  metrics.keyName = (keyId) => jobs.keyName(keyId);
  // Each job end this node made (its loop's, or a cancel through it), once: the log line and the metrics.
  const reportJobEnd = jobEndReporter(store, metrics, logFor("jobs"), (keyId) => jobs.keyName(keyId));
  loop.onAttemptFailed = (kind, retry, target) => metrics.attemptFailed(kind, retry, target);
  loop.onStorage = (error) => jobs.storage.worker(error);
  const webhooks = new WebhookDispatcher(store, deliveries, config, logFor("webhook"));
  webhooks.keyName = (keyId) => jobs.keyName(keyId);
  webhooks.onDelivery = (outcome) => metrics.webhookDelivery(outcome);
  // Not woken by every job end (loop.hub.onJobEnded): most have no webhook, and each wake is a claim's round trip.
  const webhookWakes = new WebhookDueListener({ sql, onDue: () => webhooks.wake() });
  loop.hub.onJobEnded = (jobId) => {
    inventory.refreshRunning();
    void reportJobEnd(jobId); // never rejects: a row it cannot read is logged at warn
  };
  tellInventory(inventory, loop);
  // A client here whose job runs on another node is relayed that node's records as they come; this node serves
  // its own running jobs' records to the others.
  const relaySource = new RelaySource(loop.hub);
  const relaySink = new RelaySink(loop.hub, pg, config.nodeName, logFor("relay"));
  relaySink.onCanceled = (jobId) => loop.jobEnded(jobId);
  jobs.onWatchRunning = (jobId) => relaySink.started([jobId], (id) => relaySource.runsHere(id));
  const starts = new JobStartedListener({
    sql,
    onStarted: (ids) => relaySink.started(ids, (id) => relaySource.runsHere(id)),
    onResync: () => relaySink.resync(),
  });
  const relay = {
    async start() {
      const secret = await pg.nodeSecret();
      relaySource.secret = secret;
      relaySink.secret = secret;
      await starts.start();
    },
    async stop() {
      relaySink.stop();
      await starts.stop().catch(() => {});
    },
  };
  const dashboard = new PgDashboardQueries(sql, store);
  const app = createApp({
    config,
    jobs,
    ollama,
    webhooks,
    principals,
    keys: { registry: keys, usage: keys },
    dashboard: (now, viewer) => dashboard.prefetch(now, viewer, DEFAULT_LIMITS, () => jobs.queuePlan()),
    metrics,
  });
  const { handle, routes } = transport(config, app, principals, false, relaySource);
  // Beats five times per lease time, so a live node's last beat is never half a lease time old (a takeover's
  // test for a live waiter: src/worker/pg-node.ts); a node silent for a whole lease time is dead, its clients with it.
  let beating: ReturnType<typeof setInterval> | undefined;
  const beat = async () => {
    await pg.heartbeat(config.nodeName, nodeUrl);
    for (const job of await pg.cancelOrphans(config.leaseTtlMs, NODE_GONE)) {
      loop.cancel(job.id);
      loop.jobEnded(job.id);
    }
  };
  const heartbeat = {
    async start() {
      await beat();
      beating = setInterval(
        () => void beat().catch((error) => log.warn("heartbeat failed (retrying)", { error })),
        config.leaseTtlMs / 5,
      );
    },
    stop: () => clearInterval(beating),
  };
  const remoteEnds = remoteJobEnds(loop.hub, sql, {
    toldElsewhere: (id) => relaySink.handlesEnd(id),
    heard: (ids) => relaySource.forget(ids),
    alsoCheck: () => relaySource.jobs(),
  });
  return { ollama, inventory, jobs, keys, remoteEnds, heartbeat, relay, webhooks, webhookWakes, routes, handle };
}

/** Several targets: each one's name and whether it answers, for /metrics (one target: undefined, as it always was). */
function targetsUp(inventory: TargetInventory) {
  return inventory.several
    ? () => inventory.targets.map((t) => ({ name: t.target.name, up: !t.inventory.snapshot.degraded }))
    : undefined;
}

/**
 * Tells the job loop what each target has loaded, answers and (several) installed: only when it changed, since
 * every job's end re-reads /api/ps, and a message each time woke the worker to claim (a write transaction)
 * just as the next request was being queued on this thread.
 */
function tellInventory(inventory: TargetInventory, loop: JobLoop): void {
  const toldInventory = new Map<string, string>();
  // The worker stopped claiming for that target until it hears it answers: the next poll is told, changed or not.
  loop.onUnreachable = (target) => {
    toldInventory.delete(target ?? inventory.targets[0]!.target.name);
    void inventory.refresh(target);
  };
  inventory.onTargetChange(({ target, inventory: one }) => {
    const installed = inventory.several ? one.snapshot.models.map((m) => m.model ?? m.name) : undefined;
    const residentKeys = one.residentKeys();
    const reachable = !one.snapshot.degraded;
    const told = JSON.stringify([residentKeys, reachable, installed]);
    if (toldInventory.get(target.name) === told) return;
    toldInventory.set(target.name, told);
    loop.setInventory(residentKeys, reachable, target.name, installed);
  });
}

/**
 * The transport in front of the app: request target, Host and CORS checks, then the token and the route before
 * any body is read, then the body limits. `embedded` false: a body sent to a route of the embedded parts is
 * answered 501 unread, as the app answers it.
 */
function transport(
  config: Config,
  app: ReturnType<typeof createApp>,
  principals: PrincipalResolver,
  embedded: boolean,
  /** With several nodes: this node's relay, served to the nodes that present their shared secret, and to nobody else. */
  relay?: RelaySource,
): Pick<Foreman, "handle" | "routes"> {
  const cors = new CorsPolicy(config.origins);
  const hosts = new HostPolicy(config.allowedHosts, isLoopback(config.listen.hostname));
  const authorize = createAuthorizer(config, principals);
  const table = new RouteTable(app.routes);
  /**
   * Past the Host and CORS checks: the token and the route are decided before any body is read, so a
   * client without the token makes foreman hold nothing but its headers; then the body limits.
   */
  const admit = async (request: Request): Promise<Response> => {
    // The very string the router will route on (Elysia's own computation): the decision is about the route that runs.
    const path = routedPath(request.url);
    if (relay && path.startsWith(RELAY_PATH_PREFIX)) return unread(request, await relayRequest(relay, request, path));
    const denied = authorize(request, path);
    if (denied) return unread(request, denied);
    if (hasBody(request) && !table.has(request.method, path))
      return unread(request, (embedded ? undefined : embeddedOnly(path)) ?? errorResponse(apiForPath(path), 404, "not found"));
    // Model blobs (`ollama create` from a GGUF) are gigabytes, streamed on to Ollama as they arrive:
    // neither limited nor read here.
    if (path.startsWith("/api/blobs/")) return app.handle(request);
    // File uploads have their own limit (FOREMAN_MAX_FILE), which the route enforces again as the bytes
    // stream in; they are never read whole here.
    if (request.method === "POST" && path === "/v1/files") {
      const length = Number(request.headers.get("content-length") ?? 0);
      if (length > config.maxFileBytes + UPLOAD_OVERHEAD_BYTES) {
        const message = `file too large: ${length} bytes sent, the limit is ${config.maxFileBytes} bytes (FOREMAN_MAX_FILE)`;
        return unread(request, errorResponse("openai", 413, message));
      }
      return app.handle(request);
    }
    const tooLarge = rejectDeclaredLength(request, config.maxBodyBytes);
    if (tooLarge) return unread(request, tooLarge);
    if (request.body && !request.headers.has("content-length")) {
      const read = await readChunkedBody(request, config.maxBodyBytes);
      if (read instanceof Response) return unread(request, read);
      sameConnection(read, request);
      setPrincipal(read, principalOf(request));
      return app.handle(read);
    }
    return app.handle(request);
  };
  const handle = async (request: Request): Promise<Response> => {
    const malformed = rejectMalformedTarget(request);
    if (malformed) return unread(request, malformed);
    // DNS rebinding: a foreign Host, or a page's Origin that is not allowed, is refused before anything
    // else, its body unread.
    const foreign = hosts.refuse(request) ?? cors.refuse(request);
    if (foreign) return unread(request, foreign);
    return cors.apply(request, admit);
  };
  const routes = app.routes.map((route) => ({ method: route.method, path: route.path }));
  return { routes, handle };
}

/**
 * A request to this node's relay (another node's): the secret first, then GET of one job's records. Nothing
 * else is answered under the prefix, whatever the token or key presented.
 */
async function relayRequest(relay: RelaySource, request: Request, path: string): Promise<Response> {
  if (!relay.authorized(request))
    return Response.json({ error: "unauthorized: this route is for foreman nodes" }, { status: 401 });
  if (request.method !== "GET")
    return Response.json({ error: `method ${request.method} not allowed: GET only` }, { status: 405, headers: { allow: "GET" } });
  const jobId = path.slice(RELAY_PATH_PREFIX.length);
  if (!/^[0-9A-Za-z_-]{1,64}$/.test(jobId)) return Response.json({ error: "not found" }, { status: 404 });
  return relay.serve(jobId);
}

/** Whether the client declared a body (a length above 0, or chunked), or the request carries a stream (in process). */
function hasBody(request: Request): boolean {
  if (request.headers.has("transfer-encoding") || Number(request.headers.get("content-length") ?? 0) > 0) return true;
  return request.body !== null && !request.headers.has("content-length");
}

/**
 * A refusal sent without reading the body the client declared: the connection is closed after it, so
 * the unread bytes are neither read to find the next request nor left holding the socket.
 */
function unread(request: Request, response: Response): Response {
  if (hasBody(request)) response.headers.set("connection", "close");
  return response;
}
