import type { Database } from "bun:sqlite";
import type { Config } from "./config";
import { createApp } from "./app";
import { FileStore } from "./batch/files";
import { BatchService } from "./batch/service";
import { BatchStore } from "./batch/store";
import { batchWebhookPayload } from "./batch/view";
import { apiForPath, errorResponse } from "./adapters/error-shapes";
import { CorsPolicy } from "./http/cors";
import { rejectMalformedTarget } from "./http/request-target";
import { JobService } from "./job-service";
import { jobEndReporter } from "./job-ended";
import { ForemanMetrics } from "./metrics";
import type { Logger } from "./log";
import { OllamaClient } from "./ollama/client";
import { ModelInventory } from "./ollama/inventory";
import type { JobStore } from "./queue/store";
import { WebhookDispatcher } from "./webhook/dispatcher";
import type { JobEventHub, JobLink } from "./worker/job-events";
import type { UpstreamErrorKind } from "./worker/protocol";

/** The job loop as the HTTP side drives it: a Worker (WorkerBridge), or this thread in tests. */
export interface JobLoop extends JobLink {
  /** Where the loop's state changes, chunks and ends are fanned out. */
  readonly hub: JobEventHub;
  /** Set by {@link composeForeman}: the loop could not reach Ollama. */
  onUnreachable: () => void;
  /** Set by {@link composeForeman}: an attempt failed upstream (its kind, and whether the job is tried again). */
  onAttemptFailed: (kind: UpstreamErrorKind, retry: boolean) => void;
  /** Which models Ollama has resident, and whether it answers at all. */
  setInventory(residentKeys: string[], reachable: boolean): void;
}

/** foreman's HTTP side, wired: what server.ts serves and what the in-process tests call. */
export interface Foreman {
  ollama: OllamaClient;
  inventory: ModelInventory;
  jobs: JobService;
  webhooks: WebhookDispatcher;
  /** What GET /metrics shows. */
  metrics: ForemanMetrics;
  /** OpenAI's Files and Batch APIs over the same database. */
  batches: BatchService;
  /** Answers one request: the transport checks (request target, body size, CORS), then the app. */
  handle(request: Request): Promise<Response>;
}

/**
 * Builds the job service, inventory, webhook dispatcher and app over `store` and `loop`, and wires
 * their events to each other. Starts nothing: the caller starts the inventory and the webhooks.
 * `logFor(scope)` gives each part its logger (server.ts: stderr; tests: a silent one).
 */
export function composeForeman(
  config: Config,
  db: Database,
  store: JobStore,
  loop: JobLoop,
  logFor: (scope: string) => Logger,
): Foreman {
  const log = logFor("http");
  const ollama = new OllamaClient({ baseUrl: config.ollamaUrl, token: config.ollamaToken });
  const inventory = new ModelInventory(ollama, config.pollIntervalMs, log);
  const jobs = new JobService(store, loop, inventory, config, log);
  const webhooks = new WebhookDispatcher(store, config, logFor("webhook"));
  const files = new FileStore(db);
  const batchStore = new BatchStore(db, files, store.batchLedger);
  const batches = new BatchService(batchStore, files, jobs, config, logFor("batch"));
  batches.onBatchEnded = () => webhooks.wake();
  webhooks.batchPayload = (id) => {
    const batch = batchStore.get(id);
    return batch ? batchWebhookPayload(batch) : null;
  };

  const metrics = new ForemanMetrics({ store, inventory });
  // Every job end, whichever thread ended it, is reported once from its row: the log line and the metrics.
  const reportJobEnd = jobEndReporter(store, metrics, logFor("jobs"));

  loop.onUnreachable = () => void inventory.refresh();
  loop.onAttemptFailed = (kind, retry) => metrics.attemptFailed(kind, retry);
  webhooks.onDelivery = (outcome) => metrics.webhookDelivery(outcome);
  loop.hub.onJobEnded = (jobId) => {
    reportJobEnd(jobId);
    webhooks.wake();
    inventory.refreshRunning();
  };
  inventory.onChange((snapshot) => loop.setInventory(inventory.residentKeys(), !snapshot.degraded));

  const app = createApp({ config, jobs, ollama, webhooks, batches, metrics });
  const cors = new CorsPolicy(config.origins);
  const handle = async (request: Request): Promise<Response> => {
    const malformed = rejectMalformedTarget(request);
    if (malformed) return malformed;
    const length = Number(request.headers.get("content-length") ?? 0);
    // File uploads have their own limit (FOREMAN_MAX_FILE), checked again as the bytes stream in.
    const upload = isFileUpload(request);
    if (length > (upload ? config.maxFileBytes + UPLOAD_OVERHEAD_BYTES : config.maxBodyBytes)) {
      return errorResponse(
        apiForPath(new URL(request.url).pathname),
        413,
        upload
          ? `file too large: ${length} bytes sent, the limit is ${config.maxFileBytes} bytes (FOREMAN_MAX_FILE)`
          : `request body too large: ${length} bytes, the limit is ${config.maxBodyBytes}`,
      );
    }
    return cors.apply(request, app.handle);
  };
  return { ollama, inventory, jobs, webhooks, metrics, batches, handle };
}

/** Room for a multipart upload's boundaries and headers around a file of FOREMAN_MAX_FILE bytes. */
export const UPLOAD_OVERHEAD_BYTES = 64 * 1024;

/** POST /v1/files; the URL is parsed only when it could be one, to keep the hot path free of it. */
function isFileUpload(request: Request): boolean {
  return request.method === "POST" && request.url.includes("/v1/files") && new URL(request.url).pathname === "/v1/files";
}
