// foreman without a socket or a thread: the app answers `handle(request)` in this process, and the job
// loop runs on this thread with its messages applied directly. For route and runner tests that need
// no real process; the end-to-end tests (test/e2e) drive the compiled binary instead.
import { composeForeman, type Foreman, type JobLoop } from "../src/compose";
import { loadConfig } from "../src/config";
import type { Logger } from "../src/log";
import { openDatabase } from "../src/queue/db";
import { isTerminal } from "../src/queue/job-states";
import type { RunnerStore } from "../src/queue/runner-store";
import type { JobStore } from "../src/queue/store";
import { openJobTables } from "../src/tables";
import { applyWorkerMessage } from "../src/worker/bridge";
import { JobEventHub } from "../src/worker/job-events";
import { type FromWorker, workerSettings } from "../src/worker/protocol";
import { TargetRunners } from "../src/worker/targets";
import { FakeOllama, type FakeOllamaOptions } from "./fake-ollama";
import { foremanEnv, tempDir } from "./harness";

/** An in-process foreman in front of a fake Ollama. */
export interface InProcessStack {
  /** The first target's fake. */
  fake: FakeOllama;
  /** Every target's fake, by target name (one target: the fake's host:port). */
  fakes: Map<string, FakeOllama>;
  /** The job loops, one runner per target. */
  runners: TargetRunners;
  /** The HTTP side's connection (tests seed learned costs through it). */
  db: ReturnType<typeof openDatabase>;
  store: JobStore;
  jobs: Foreman["jobs"];
  inventory: Foreman["inventory"];
  /** Every message the job loop sent, in order. */
  messages: FromWorker[];
  /** What foreman logged ("LEVEL [scope] message {fields}"), kept here instead of printed. */
  logs: string[];
  /** Answers a request as the server does, transport checks (target, body size, CORS) included. */
  handle(request: Request): Promise<Response>;
  /** Where clients are pointed (e.g. `new Ollama({ host: url, fetch })`); nothing listens there. */
  url: string;
  /** `fetch` as a client would call foreman, answered by `handle` in this process: a path or a URL at `url`. */
  fetch(input: string | URL | Request, init?: RequestInit): Promise<Response>;
  /** Shorthand: `handle` on `path` with a JSON body (a string is sent as it is). */
  request(method: string, path: string, body?: unknown, headers?: Record<string, string>): Promise<Response>;
  /** Resolves with the job's row once it has ended (at once if it has). */
  ended(jobId: string): Promise<NonNullable<ReturnType<JobStore["getJob"]>>>;
  stop(): Promise<void>;
}

/** A logger that keeps its lines in `lines` and prints nothing: passing tests stay quiet. */
export function capturingLogger(scope: string, lines: string[]): Logger {
  const write = (level: string) => (message: string, fields?: Record<string, unknown>) => {
    const shown = fields && JSON.stringify(fields, (_, v) => (v instanceof Error ? v.message : v));
    lines.push(`${level} [${scope}] ${message}${shown ? ` ${shown}` : ""}`);
  };
  return { debug: write("DEBUG"), info: write("INFO"), warn: write("WARN"), error: write("ERROR"), enabled: () => true };
}

/**
 * Starts the fake, opens a fresh database, runs the job loop on this thread and builds foreman's HTTP
 * side with src/compose.ts, as server.ts does. The inventory polls hourly unless `env` says otherwise.
 */
export async function startInProcess(
  options: {
    fake?: FakeOllamaOptions;
    /** Several targets instead of one: each its own fake (FOREMAN_OLLAMA_URL name=url;slots=N). */
    targets?: Array<{ name: string; fake?: FakeOllamaOptions; slots?: number }>;
    env?: Record<string, string>;
    /** What the job loop runs on instead of the store itself (an async wrapper of it, say). */
    runnerStore?: (store: JobStore) => RunnerStore & { readonly costs: JobStore["costs"] };
  } = {},
): Promise<InProcessStack> {
  const targets = options.targets ?? [{ name: "", fake: options.fake }];
  const started = targets.map((t) => ({ ...t, instance: new FakeOllama(t.fake).start() }));
  const fake = started[0]!.instance;
  const ollamaUrl = options.targets
    ? started.map((t) => `${t.name}=${t.instance.url}${t.slots ? `;slots=${t.slots}` : ""}`).join(",")
    : fake.url;
  const dir = tempDir();
  const config = loadConfig(foremanEnv(ollamaUrl, dir.path, { FOREMAN_POLL_INTERVAL: "1h", ...options.env }));
  const fakes = new Map(started.map((t, i) => [config.targets[i]!.name, t.instance]));
  const logs: string[] = [];
  const db = openDatabase(config.dbPath, { durability: config.durability });
  const tables = openJobTables(db, config.fairShare);
  const { store } = tables;
  const messages: FromWorker[] = [];
  const hub = new JobEventHub(capturingLogger("http", logs));
  // The Worker's loop, on this thread: its messages are applied as the bridge applies them.
  const runner = new TargetRunners(
    options.runnerStore?.(store) ?? store,
    workerSettings(config),
    (message) => {
      messages.push(message);
      applyWorkerMessage(hub, message, {
        onUnreachable: (target) => loop.onUnreachable(target),
        onAttemptFailed: (kind, retry, target) => loop.onAttemptFailed(kind, retry, target),
        onStorage: (error) => loop.onStorage?.(error),
      });
    },
    capturingLogger("worker", logs),
  );
  const loop: JobLoop = {
    hub,
    onUnreachable: () => {},
    onAttemptFailed: () => {},
    setInventory: (residentKeys, reachable, target, installed) =>
      runner.handle({ type: "inventory", residentKeys, reachable, target, installed }),
    subscribe: (jobId, listener) => hub.subscribe(jobId, listener),
    subscribeAll: (listener) => hub.subscribeAll(listener),
    jobEnded: (jobId) => hub.jobEnded(jobId),
    wake: () => runner.handle({ type: "wake" }),
    cancel: (jobId) => runner.handle({ type: "cancel", jobId }),
    clientGone: (jobId) => runner.handle({ type: "client-gone", jobId }),
  };
  const { inventory, jobs, webhooks, handle } = composeForeman(config, db, tables, loop, (scope) => capturingLogger(scope, logs));
  await inventory.start();
  webhooks.start();
  const running = runner.run();
  const url = "http://foreman.test";
  return {
    url,
    fetch: (input, init) =>
      handle(new Request(typeof input === "string" && input.startsWith("/") ? `${url}${input}` : input, init)),
    fake,
    fakes,
    runners: runner,
    db,
    store,
    jobs,
    inventory,
    messages,
    logs,
    handle,
    request: (method, path, body, headers = {}) =>
      handle(
        new Request(`${url}${path}`, {
          method,
          headers: { "content-type": "application/json", ...headers },
          body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
        }),
      ),
    ended: (jobId) =>
      new Promise((resolve, reject) => {
        // Listen before looking, so an end between the two is not missed.
        const unsubscribe = hub.subscribe(jobId, (event) => {
          if (event.type === "ended") settle();
        });
        const settle = () => {
          const job = store.getJob(jobId);
          if (job && !isTerminal(job.state)) return;
          unsubscribe();
          if (job) resolve(job);
          else reject(new Error(`no job ${jobId}`));
        };
        settle();
      }),
    async stop() {
      inventory.stop();
      webhooks.stop();
      runner.handle({ type: "shutdown", graceMs: 0 });
      await running;
      db.close();
      await Promise.all([...fakes.values()].map((f) => f.stop()));
      dir.cleanup();
    },
  };
}
