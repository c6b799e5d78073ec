import type { Config } from "./config";
import { createApp } from "./app";
import { apiForPath, errorResponse } from "./adapters/error-shapes";
import { CorsPolicy } from "./http/cors";
import { rejectMalformedTarget } from "./http/request-target";
import { JobService } from "./job-service";
import type { Logger } from "./log";
import { OllamaClient } from "./ollama/client";
import { ModelInventory } from "./ollama/inventory";
import type { JobStore } from "./queue/store";
import { WebhookDispatcher } from "./webhook/dispatcher";
import type { JobEventHub, JobLink } from "./worker/job-events";

/** The job loop as the HTTP side drives it: a Worker (WorkerBridge), or this thread in tests. */
export interface JobLoop extends JobLink {
  /** Where the loop's state changes, chunks and ends are fanned out. */
  readonly hub: JobEventHub;
  /** Set by {@link composeForeman}: the loop could not reach Ollama. */
  onUnreachable: () => void;
  /** Which models Ollama has resident, and whether it answers at all. */
  setInventory(residentKeys: string[], reachable: boolean): void;
}

/** foreman's HTTP side, wired: what server.ts serves and what the in-process tests call. */
export interface Foreman {
  ollama: OllamaClient;
  inventory: ModelInventory;
  jobs: JobService;
  webhooks: WebhookDispatcher;
  /** Answers one request: the transport checks (request target, body size, CORS), then the app. */
  handle(request: Request): Promise<Response>;
}

/**
 * Builds the job service, inventory, webhook dispatcher and app over `store` and `loop`, and wires
 * their events to each other. Starts nothing: the caller starts the inventory and the webhooks.
 * `logFor(scope)` gives each part its logger (server.ts: stderr; tests: a silent one).
 */
export function composeForeman(config: Config, store: JobStore, loop: JobLoop, logFor: (scope: string) => Logger): Foreman {
  const log = logFor("http");
  const ollama = new OllamaClient({ baseUrl: config.ollamaUrl, token: config.ollamaToken });
  const inventory = new ModelInventory(ollama, config.pollIntervalMs, log);
  const jobs = new JobService(store, loop, inventory, config, log);
  const webhooks = new WebhookDispatcher(store, config, logFor("webhook"));

  loop.onUnreachable = () => void inventory.refresh();
  loop.hub.onJobEnded = () => {
    webhooks.wake();
    inventory.refreshRunning();
  };
  inventory.onChange = (snapshot) => loop.setInventory(inventory.residentKeys(), !snapshot.degraded);

  const app = createApp({ config, jobs, ollama, webhooks });
  const cors = new CorsPolicy(config.origins);
  const handle = async (request: Request): Promise<Response> => {
    const malformed = rejectMalformedTarget(request);
    if (malformed) return malformed;
    const length = Number(request.headers.get("content-length") ?? 0);
    if (length > config.maxBodyBytes) {
      return errorResponse(
        apiForPath(new URL(request.url).pathname),
        413,
        `request body too large: ${length} bytes, the limit is ${config.maxBodyBytes}`,
      );
    }
    return cors.apply(request, app.handle);
  };
  return { ollama, inventory, jobs, webhooks, handle };
}
