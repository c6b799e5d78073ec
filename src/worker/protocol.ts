import type { Config } from "../config";
import type { JobState } from "../queue/job-states";

/** The settings the worker needs, and nothing more: no client token, no webhook secret. */
const WORKER_SETTINGS = [
  "dbPath",
  "nodeName",
  "leaseTtlMs",
  "durability",
  "targets",
  "schedule",
  "maxWaitMs",
  "fairShare",
  "fairSlackLoads",
  "jobTtlMs",
  "jobTimeoutMs",
  "stallTimeoutMs",
  "logLevel",
  "logFormat",
  "maxResultBytes",
] as const satisfies readonly (keyof Config)[];

/** What the worker needs of the configuration. */
export type WorkerSettings = Pick<Config, (typeof WORKER_SETTINGS)[number]>;

/** Picks the worker's settings out of the configuration: only these cross to the worker thread. */
export function workerSettings(config: Config): WorkerSettings {
  return Object.fromEntries(WORKER_SETTINGS.map((key) => [key, config[key]])) as WorkerSettings;
}

/** Why an attempt at Ollama failed: never connected, connection lost, timed out (job or stall limit), or an error status. */
export type UpstreamErrorKind = "refused" | "connection" | "timeout" | "http_4xx" | "http_5xx";

/** HTTP thread → worker. Messages wake, inform and cancel; the database says what is true. */
export type ToWorker =
  | { type: "init"; settings: WorkerSettings }
  /** A job was queued: look again. */
  | { type: "wake" }
  /**
   * What a target has loaded (model keys, most recent first), whether it answers, and (several targets)
   * the models it has installed; `target` absent: the first.
   */
  | { type: "inventory"; residentKeys: string[]; reachable: boolean; target?: string; installed?: string[] }
  /** The job was canceled in the database; abort its upstream call if it is running. */
  | { type: "cancel"; jobId: string }
  /** The job's waiting client hung up; its cancel is on its way (batched): never send the job meanwhile. */
  | { type: "client-gone"; jobId: string }
  /** Stop claiming; let the running job finish for up to graceMs, then re-queue it. */
  | { type: "shutdown"; graceMs: number };

/** Worker → HTTP thread. */
export type FromWorker =
  | { type: "ready" }
  /** The job moved to `state`; `contentType` is Ollama's, sent with `working`. */
  | { type: "state"; jobId: string; state: JobState; contentType?: string }
  /**
   * Whole records (NDJSON lines or SSE events), the bytes exactly as Ollama sent them: all that one read
   * brought. The first carries Ollama's `contentType`: the job is working from it (a `working` state first).
   */
  | { type: "chunk"; jobId: string; bytes: Uint8Array; contentType?: string }
  /** The job ended: its row holds the outcome. */
  | { type: "ended"; jobId: string }
  /** An attempt failed upstream (metrics count it by kind); `retry` when the job goes back to the queue for another. */
  | { type: "attempt-failed"; jobId: string; kind: UpstreamErrorKind; retry: boolean; target?: string }
  /** The worker's pending write fails for space (`error`), or it landed and nothing is pending (no `error`). */
  | { type: "storage"; error?: string }
  /** A connection error: the HTTP thread should re-poll that target (absent: the first) now. */
  | { type: "unreachable"; target?: string }
  /** The loop has stopped and the worker's database is closed. */
  | { type: "stopped" };
