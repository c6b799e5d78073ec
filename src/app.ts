import { Elysia } from "elysia";
import type { Config } from "./config";
import { apiForPath, errorResponse } from "./adapters/error-shapes";
import { ApiError, StorageFullError } from "./errors";
import { isStorageError } from "./queue/storage-health";
import { DashboardFeed, type DashboardSource } from "./dashboard/feed";
import { isPublicRoute } from "./http/auth";
import { NOBODY, PrincipalResolver, keyApiForPath, setPrincipal } from "./keys/principal";
import { DASHBOARD_PATHS, dashboardRoutes } from "./http/dashboard";
import type { BatchService } from "./batch/service";
import { batchRoutes } from "./http/batches";
import { adminKeyRoutes } from "./http/admin-keys";
import type { KeyRegistry } from "./keys/key-store";
import type { KeyUsageReader } from "./keys/usage";
import { fileRoutes } from "./http/files";
import { DOCS_PATHS, docs } from "./http/docs";
import { jobRoutes } from "./http/jobs";
import { metricsRoutes } from "./http/metrics";
import { ollamaRoutes } from "./http/ollama";
import { openaiRoutes } from "./http/openai";
import { systemRoutes } from "./http/system";
import { validationMessage } from "./http/validation-message";
import type { JobService } from "./job-service";
import type { DashboardQueries } from "./queue/dashboard-queries";
import { ForemanMetrics } from "./metrics";
import type { OllamaClient } from "./ollama/client";
import type { WebhookDispatcher } from "./webhook/dispatcher";
import type { JobStore } from "./queue/store";

/** What the app is built from; server.ts wires the real ones, tests their own. */
export interface AppDependencies {
  config: Config;
  /** The jobs, on either engine: generation, the job API, /queue. */
  jobs: JobService;
  ollama: OllamaClient;
  webhooks: Pick<WebhookDispatcher, "rejectUrl">;
  /** Who is asking (keys and FOREMAN_TOKEN); without it, FOREMAN_TOKEN alone decides. */
  principals?: PrincipalResolver;
  /**
   * What runs on the embedded SQLite queue alone so far: batches and files. Absent (FOREMAN_DB=postgres://), their routes answer 501 saying so (see {@link embeddedOnly}).
   */
  embedded?: EmbeddedParts;
  /**
   * What GET /metrics shows, over either engine's queue: compose passes the one its job ends feed. Absent, on
   * SQLite (`embedded`) one over its store that no job end feeds (some tests); on PostgreSQL, no /metrics.
   */
  metrics?: ForemanMetrics;
  /** What the dashboard's snapshots read: SQLite's queries, or PostgreSQL's fetched ahead (see DashboardFeed). */
  dashboard: DashboardQueries | DashboardSource;
  /** The API keys and their usage, for the admin API (/admin/keys); without it (some tests) those routes are absent. */
  keys?: { registry: KeyRegistry; usage: KeyUsageReader };
}

/** The parts of the app over SQLite's synchronous stores. */
export interface EmbeddedParts {
  /** The same JobService as AppDependencies.jobs, typed over SQLite's store. */
  jobs: JobService<JobStore>;
  /** OpenAI's Files and Batch APIs; without it (some tests) those routes are absent. */
  batches?: BatchService;
}

/** The routes of the embedded parts: with the queue on PostgreSQL they answer 501 (not 404: they exist, elsewhere). */
const EMBEDDED_ONLY = [/^\/v1\/(files|batches)(\/.*)?$/];

/** What a route of the embedded parts answers on PostgreSQL; undefined for any other path. */
export function embeddedOnly(path: string): Response | undefined {
  if (!EMBEDDED_ONLY.some((pattern) => pattern.test(path))) return undefined;
  const message =
    "not available with the queue on PostgreSQL yet (FOREMAN_DB=postgres://): it serves generation, the job API, " +
    "/queue, the dashboard, /metrics, API keys and /healthz; batches and files need the embedded SQLite queue";
  return errorResponse(apiForPath(path), 501, message);
}

/**
 * Paths open without the token (GET and HEAD only): the health probe, the documentation and the dashboard's
 * page and assets (they hold no data; its feed, /ui/events, needs the token).
 */
const PUBLIC_PATHS: ReadonlySet<string> = new Set(["/healthz", ...DOCS_PATHS, ...DASHBOARD_PATHS]);

/** Routes only an admin may use: key management, Ollama's model management, and /metrics (every key's usage). */
function adminOnly(method: string, path: string): boolean {
  if (path === "/admin" || path.startsWith("/admin/") || path.startsWith("/api/blobs/") || path === "/metrics") return true;
  return (
    (method === "POST" && ["/api/pull", "/api/push", "/api/create", "/api/copy"].includes(path)) ||
    (method === "DELETE" && path === "/api/delete")
  );
}

/**
 * The token decision, one implementation for both places that make it: the transport (src/compose.ts,
 * before any body is read) and the app's onRequest (defence in depth). `path` must be the very string the
 * router routes on. Resolves the request's principal (see PrincipalResolver) and records it on the request
 * (principalOf); returns the refusal in the path's API shape (401 without a valid secret, 403 for a key
 * outside its scope), or undefined when the request may go on.
 */
export function createAuthorizer(
  config: Pick<Config, "token" | "metricsPublic">,
  resolver: PrincipalResolver = new PrincipalResolver(config.token, undefined),
) {
  const publicPaths = config.metricsPublic ? new Set([...PUBLIC_PATHS, "/metrics"]) : PUBLIC_PATHS;
  return (request: Request, path: string): Response | undefined => {
    const { method, headers } = request;
    const principal = resolver.resolve(headers);
    if (isPublicRoute(method, path, publicPaths)) {
      setPrincipal(request, principal ?? NOBODY);
      return undefined;
    }
    if (!principal) return errorResponse(apiForPath(path), 401, "unauthorized", { "www-authenticate": "Bearer" });
    setPrincipal(request, principal);
    if (principal.role === "admin") return undefined;
    if (adminOnly(method, path)) return errorResponse(apiForPath(path), 403, `key "${principal.name}" is not an admin key`);
    const api = keyApiForPath(path);
    if (api && principal.key?.apis && !principal.key.apis.includes(api))
      return errorResponse(apiForPath(path), 403, `key "${principal.name}" may not use the ${api} API`);
    return undefined;
  };
}

/**
 * The app's error handler: each API's routes answer errors in that API's shape (Ollama, OpenAI, Anthropic),
 * a write that failed for space as 503 with Retry-After (the storage marked degraded), an unexpected error as 500, logged.
 */
export function answerError(jobs: Pick<JobService, "storage" | "log">, embedded = true) {
  return ({ code, error, path }: { code: unknown; error: unknown; path: string }) => {
    const api = apiForPath(path);
    if (isStorageError(error)) {
      jobs.storage.failed(error);
      const full = new StorageFullError();
      return errorResponse(api, full.status, full.message, full.headers);
    }
    if (error instanceof ApiError) return errorResponse(api, error.status, error.message, error.headers);
    switch (code) {
      case "NOT_FOUND":
        return (embedded ? undefined : embeddedOnly(path)) ?? errorResponse(api, 404, "not found");
      case "VALIDATION":
        return errorResponse(api, 400, validationMessage(error as Parameters<typeof validationMessage>[0]));
      case "PARSE":
        return errorResponse(api, 400, "invalid JSON in request body");
      default: {
        jobs.log.error("unhandled error", { code, error });
        return errorResponse(api, 500, error instanceof Error ? error.message : "internal error");
      }
    }
  };
}

/** Builds the whole HTTP API without listening: server.ts serves it, tests call `app.handle()`. */
export function createApp({ config, jobs, ollama, webhooks, principals, embedded, keys, dashboard, metrics }: AppDependencies) {
  const authorize = createAuthorizer(config, principals);
  const shownMetrics = metrics ?? (embedded ? new ForemanMetrics(embedded.jobs) : undefined);
  // normalize "typebox": Elysia's default (exact-mirror) reshapes a wrong-typed value into the schema's
  // shape before validating it, e.g. "request": "hi" into {"0":"h","1":"i"}, so bad input would pass.
  //
  // standardHostname false: by default Elysia finds the path by searching for "/" from index 11 of the URL,
  // assuming a host of 4 or more characters; with `Host: x`, `/healthz?/jobs` was routed as /jobs.
  // From index 7 (after "http://", foreman serves no TLS) the path is found whatever the host. (elysia 1.4.30:
  // dist/adapter/web-standard/index.mjs composeGeneralHandler.createContext, and adapter/bun/compose.mjs.)
  return new Elysia({ normalize: "typebox", handler: { standardHostname: false } })
    .use(docs())
    .onRequest((context) => {
      // The transport decided already, on the same path; this repeats it for callers of app.handle alone.
      // `path` is the string the router is about to route on, so the decision is about the route that runs.
      // Elysia sets it at run time without typing it; were it ever missing, no path would be public.
      const path = (context as { path?: unknown }).path;
      return authorize(context.request, typeof path === "string" ? path : "");
    })
    .onError(answerError(jobs, embedded !== undefined))
    .use(systemRoutes(jobs.inventory, jobs.storage))
    .use(jobRoutes(jobs, webhooks))
    .use(ollamaRoutes(jobs, ollama))
    .use(openaiRoutes(jobs, ollama))
    .use(shownMetrics ? metricsRoutes(shownMetrics) : new Elysia())
    .use(keys ? adminKeyRoutes(keys.registry, keys.usage) : new Elysia())
    .use(dashboardRoutes(new DashboardFeed(jobs, dashboard)))
    .use(embedded ? embeddedRoutes(config, embedded, webhooks) : new Elysia());
}

/** Batches and files, over SQLite's stores. */
function embeddedRoutes(config: Config, { batches }: EmbeddedParts, webhooks: Pick<WebhookDispatcher, "rejectUrl">) {
  return new Elysia()
    .use(
      batches
        ? fileRoutes(batches.files, {
            maxFileBytes: config.maxFileBytes,
            maxFilesBytes: config.maxFilesBytes,
            openBatchUsing: (id) => batches.store.openBatchUsing(id),
          })
        : new Elysia(),
    )
    .use(batches ? batchRoutes(batches, webhooks) : new Elysia());
}
