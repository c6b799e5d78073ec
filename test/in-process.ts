// foreman without a socket or a thread: the app answers `handle(request)` in this process, and the job
// loop runs on this thread with its messages applied directly. For route and runner tests that need
// no real process; the end-to-end tests (test/e2e) drive the compiled binary instead.
import { join } from "node:path";
import { createApp } from "../src/app";
import { loadConfig } from "../src/config";
import { JobService } from "../src/job-service";
import { createLogger } from "../src/log";
import { OllamaClient } from "../src/ollama/client";
import { ModelInventory } from "../src/ollama/inventory";
import { openDatabase } from "../src/queue/db";
import { JobStore } from "../src/queue/store";
import { WebhookDispatcher } from "../src/webhook/dispatcher";
import { applyWorkerMessage } from "../src/worker/bridge";
import { JobEventHub, type JobLink } from "../src/worker/job-events";
import { type FromWorker, workerSettings } from "../src/worker/protocol";
import { JobRunner } from "../src/worker/runner";
import { FakeOllama, type FakeOllamaOptions } from "./fake-ollama";
import { foremanEnv, tempDir } from "./harness";

/** An in-process foreman in front of a fake Ollama. */
export interface InProcessStack {
  fake: FakeOllama;
  store: JobStore;
  jobs: JobService;
  /** Every message the job loop sent, in order. */
  messages: FromWorker[];
  /** Answers a request as the server would (without the transport-level checks of server.ts). */
  handle(request: Request): Promise<Response>;
  /** Shorthand: `handle` on `path` with a JSON body. */
  request(method: string, path: string, body?: unknown, headers?: Record<string, string>): Promise<Response>;
  stop(): Promise<void>;
}

/** Starts the fake, opens a fresh database, runs the job loop on this thread and builds the app. */
export async function startInProcess(
  options: { fake?: FakeOllamaOptions; env?: Record<string, string> } = {},
): Promise<InProcessStack> {
  const fake = new FakeOllama(options.fake).start();
  const dir = tempDir();
  const config = loadConfig(foremanEnv(fake.url, dir.path, { FOREMAN_POLL_INTERVAL: "1h", ...options.env }));
  const log = createLogger(config.logLevel, "test");
  const db = openDatabase(join(dir.path, "foreman.db"));
  const store = new JobStore(db);
  const hub = new JobEventHub(log);
  const messages: FromWorker[] = [];
  const ollama = new OllamaClient({ baseUrl: config.ollamaUrl });
  const inventory = new ModelInventory(ollama, config.pollIntervalMs, log);
  const runner = new JobRunner(
    store,
    workerSettings(config),
    (message) => {
      messages.push(message);
      applyWorkerMessage(hub, message, { onUnreachable: () => void inventory.refresh() });
    },
    log,
  );
  const link: JobLink = {
    subscribe: (jobId, listener) => hub.subscribe(jobId, listener),
    subscribeAll: (listener) => hub.subscribeAll(listener),
    jobEnded: (jobId) => hub.jobEnded(jobId),
    wake: () => runner.wake(),
    cancel: (jobId) => runner.cancel(jobId),
  };
  inventory.onChange = (snapshot) => runner.setInventory(inventory.residentKeys(), !snapshot.degraded);
  await inventory.start();
  const loop = runner.run();
  const jobs = new JobService(store, link, inventory, config, log);
  const webhooks = new WebhookDispatcher(store, config, log);
  const app = createApp({ config, jobs, ollama, webhooks });
  const handle = (request: Request) => app.handle(request);
  return {
    fake,
    store,
    jobs,
    messages,
    handle,
    request: (method, path, body, headers = {}) =>
      handle(
        new Request(`http://localhost${path}`, {
          method,
          headers: { "content-type": "application/json", ...headers },
          body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
        }),
      ),
    async stop() {
      inventory.stop();
      runner.shutdown(0);
      await loop;
      db.close();
      await fake.stop();
      dir.cleanup();
    },
  };
}
