import { isIP } from "node:net";
import { hostname } from "node:os";
import { parseDuration } from "./duration";
import { invalidOrigin } from "./http/cors";
import { invalidAllowedHost } from "./http/host-check";
import { type LogFormat, defaultLogFormat } from "./log";
import { AllowListError, type AllowRule, DEFAULT_ALLOW, parseAllowList } from "./webhook/allow-list";

/** A bad FOREMAN_* value: the message names the variable. `foreman serve` prints it and exits with 2. */
export class ConfigError extends Error {
  override name = "ConfigError";
}

export type LogLevel = "debug" | "info" | "warn" | "error";
/** drain: loaded model first, then the cost-aware group choice; drain-oldest: then the oldest job; fifo. */
export type SchedulePolicy = "drain" | "drain-oldest" | "fifo";

/** Every FOREMAN_* setting, read once at start-up. Durations are milliseconds. */
export interface Config {
  /** FOREMAN_LISTEN: host and port to listen on, default 127.0.0.1:8080. */
  listen: { hostname: string; port: number };
  /** FOREMAN_OLLAMA_URL's first target's URL, default http://127.0.0.1:11434: where model management goes. */
  ollamaUrl: string;
  /**
   * FOREMAN_OLLAMA_URL: the Ollama hosts behind foreman, one or more comma-separated `[name=]url[;slots=N][;token=T]`
   * entries (name default host:port, slots default 1, token default FOREMAN_OLLAMA_TOKEN). One queue, a runner per target.
   */
  targets: OllamaTarget[];
  /** FOREMAN_OLLAMA_TOKEN: sent to Ollama as a bearer token; optional. */
  ollamaToken: string | undefined;
  /** FOREMAN_TOKEN: bearer token every route but /healthz requires; optional. */
  token: string | undefined;
  /**
   * FOREMAN_DB: SQLite file, default ./foreman.db; parent folders are created. A postgres:// (or postgresql://)
   * URL puts the queue on PostgreSQL instead, shared by every foreman node given the same URL (isPostgresUrl).
   */
  dbPath: string;
  /** FOREMAN_NODE: this node's name among the nodes on one PostgreSQL queue (its leases); default host:pid. */
  nodeName: string;
  /**
   * FOREMAN_NODE_URL: on PostgreSQL, where the other nodes reach this one to relay its running jobs' records
   * to their clients; default http://<listen address, or this machine's name when listening on all>:<port>.
   */
  nodeUrl: string | undefined;
  /** FOREMAN_LEASE_TTL: on PostgreSQL, how long a dead node's targets wait before another node takes them over; default 10s. */
  leaseTtlMs: number;
  /** FOREMAN_POLL_INTERVAL: how often /api/tags and /api/ps are polled, default 30s. */
  pollIntervalMs: number;
  /** FOREMAN_MAX_ATTEMPTS: attempts per job before it fails, default 3. */
  maxAttempts: number;
  /** FOREMAN_JOB_TTL: finished jobs older than this are deleted, default 24h. */
  jobTtlMs: number;
  /** FOREMAN_EMBED_MODEL: embedding model warmed at start with keep_alive -1; optional. */
  embedModel: string | undefined;
  /** FOREMAN_LOG_LEVEL: debug | info | warn | error, default info. */
  logLevel: LogLevel;
  /** FOREMAN_LOG_FORMAT: json | text; default text on a terminal, json otherwise. Logs go to stdout. */
  logFormat: LogFormat;
  /** FOREMAN_METRICS_PUBLIC: true opens GET /metrics without the token (for a scraper on a trusted network); default false. */
  metricsPublic: boolean;
  /** FOREMAN_MAX_BODY: largest request body accepted, in bytes, default 64 MiB. */
  maxBodyBytes: number;
  /** FOREMAN_MAX_RESULT: largest answer a job may produce and store, in bytes, default 64 MiB; past it the job fails with 413. */
  maxResultBytes: number;
  /** FOREMAN_SCHEDULE: drain (default; loaded model first, then the cheapest-per-job group), drain-oldest or fifo. */
  schedule: SchedulePolicy;
  /** FOREMAN_MAX_WAIT: a job queued longer than this jumps the drain order, default 2m. */
  maxWaitMs: number;
  /** FOREMAN_FAIR_SHARE: on (default; in effect once API keys exist) orders each model group's jobs by caller (VTC), or off. */
  fairShare: "on" | "off";
  /** FOREMAN_FAIR_SLACK: expected loads of its model a caller may trail by before its other-model jobs take the GPU, default 2. */
  fairSlackLoads: number;
  /** FOREMAN_MAX_QUEUE: queued jobs accepted before answering 503, default 512. */
  maxQueue: number;
  /** FOREMAN_JOB_TIMEOUT: one attempt's limit, default 30m; 0 means none. */
  jobTimeoutMs: number;
  /** FOREMAN_STALL_TIMEOUT: longest silence from a streaming Ollama (before and between chunks), default 5m; 0 means none. */
  stallTimeoutMs: number;
  /** FOREMAN_DURABILITY: normal (default; survives a process crash) or full (survives power loss). */
  durability: "normal" | "full";
  /** FOREMAN_SHUTDOWN_GRACE: how long shutdown lets the running job finish before re-queueing it, default 10s. */
  shutdownGraceMs: number;
  /** FOREMAN_WEBHOOK_SECRET: default whsec_ secret for jobs whose webhook has none; optional. */
  webhookSecret: string | undefined;
  /**
   * FOREMAN_WEBHOOK_ALLOW: comma list of where webhooks may go, parsed: host names, IPs or CIDRs, `public` (any
   * address outside loopback, private, link-local and other special ranges) or `*` (anywhere). Default (unset):
   * public; a value that lists nothing (",") is an error. Names are checked on the addresses they resolve to.
   */
  webhookAllow: AllowRule[];
  /** FOREMAN_ORIGINS: browser origins allowed beside Ollama's defaults (localhost, 127.0.0.1, 0.0.0.0, app://, file://); `*` allows all. */
  origins: string[];
  /**
   * FOREMAN_ALLOWED_HOSTS: comma list of Host names (`name`, `*.name`, an IP) served beside localhost and local
   * addresses; `*` serves any. Unset: on a loopback listen only those local names (against DNS rebinding),
   * on any other listen every Host.
   */
  allowedHosts: string[];
  /**
   * FOREMAN_MAX_CONNECTIONS: requests open at once (queue waits and streams included) before answering 503
   * with Retry-After, and connections kept alive before answers close them instead; default 1024. Keeps file
   * descriptors for the worker and the database under a flood of sockets.
   */
  maxConnections: number;
  /** FOREMAN_WEBHOOK_BACKOFF: waits before each webhook retry, default 5s,30s,2m,10m,30m,1h,3h,6h; then failed. */
  webhookBackoffMs: number[];
  /** FOREMAN_MAX_FILE: largest file /v1/files accepts, in bytes, default 200 MiB. */
  maxFileBytes: number;
  /**
   * FOREMAN_MAX_FILES_BYTES: the most bytes all files together may hold, default 10 GiB; an upload past it is
   * a 413. Batches' output and error files count, but are never refused (a finished line is always kept).
   */
  maxFilesBytes: number;
  /** FOREMAN_BATCH_PRIORITY: priority of batch lines, default -1 (below interactive requests, 0). */
  batchPriority: number;
  /** FOREMAN_BATCH_WINDOW: how long a batch may run before it expires, default 24h (OpenAI's window). */
  batchWindowMs: number;
}

/** One Ollama host behind the queue: its runner claims for it alone. */
export interface OllamaTarget {
  /** Unique; shown in job views, GET /queue, /metrics and the logs. Default: the URL's host:port. */
  name: string;
  /** Without a trailing slash. */
  url: string;
  /** Generations of its loaded model key in flight at once (Ollama's OLLAMA_NUM_PARALLEL), default 1. */
  slots: number;
  /** Bearer token sent to it: its own `token=`, else FOREMAN_OLLAMA_TOKEN. */
  token: string | undefined;
}

type Env = Record<string, string | undefined>;

function text(env: Env, name: string): string | undefined {
  const value = env[name]?.trim();
  return value ? value : undefined;
}

/** The longest delay a timer can wait (2^31-1 ms, about 596h); a longer one would fire at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;

function duration(env: Env, name: string, fallback: string, { min = 0, max = Infinity } = {}): number {
  const raw = text(env, name) ?? fallback;
  const ms = parseDuration(raw);
  if (ms === undefined) throw new ConfigError(`${name}: "${raw}" is not a duration (use e.g. 500ms, 30s, 5m, 24h)`);
  if (ms < min) throw new ConfigError(`${name}: "${raw}" is too short: at least ${min}ms`);
  if (ms > max) throw new ConfigError(`${name}: "${raw}" is too long: at most 596h`);
  return ms;
}

function integer(env: Env, name: string, fallback: number, min: number): number {
  const raw = text(env, name);
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (!/^\d+$/.test(raw) || !Number.isSafeInteger(value) || value < min) {
    throw new ConfigError(`${name}: "${raw}" must be an integer of at least ${min}`);
  }
  return value;
}

function oneOf<T extends string>(env: Env, name: string, choices: readonly T[], fallback: T): T {
  const raw = text(env, name) ?? fallback;
  if (!(choices as readonly string[]).includes(raw)) {
    throw new ConfigError(`${name}: "${raw}" must be one of ${choices.join(", ")}`);
  }
  return raw as T;
}

function httpUrl(env: Env, name: string, fallback: string): string {
  const raw = text(env, name) ?? fallback;
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new ConfigError(`${name}: "${raw}" is not a URL`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new ConfigError(`${name}: "${raw}" must be an http or https URL`);
  }
  return raw.replace(/\/+$/, "");
}

/** A target's name: what a URL path segment, a metric label and a log field can all carry as it is. */
const TARGET_NAME = /^[A-Za-z0-9][A-Za-z0-9._:-]*$/;

/**
 * FOREMAN_OLLAMA_URL: `[name=]url[;slots=N][;token=T]`, comma-separated. One plain URL (the default) is one
 * target named after its host:port with one slot: foreman as it always was. Every error names its entry.
 */
function ollamaTargets(env: Env, token: string | undefined): OllamaTarget[] {
  const name = "FOREMAN_OLLAMA_URL";
  const raw = text(env, name) ?? "http://127.0.0.1:11434";
  const entries = raw.split(",").map((entry) => entry.trim());
  const targets: OllamaTarget[] = [];
  for (const entry of entries) {
    if (!entry) throw new ConfigError(`${name}: "${raw}" has an empty entry (a stray comma?)`);
    const [head, ...params] = entry.split(";").map((part) => part.trim());
    // A URL's own "=" sits after "://" (a query string): only a "name=" before the scheme is a name.
    const named = /^([^=/:]+)=(.*)$/.exec(head!);
    const url = httpUrl({ [name]: named ? named[2] : head }, name, "");
    if (new URL(url).search || new URL(url).hash) {
      throw new ConfigError(`${name}: entry "${entry}": the URL must not carry a query or fragment`);
    }
    const target: OllamaTarget = { name: named ? named[1]!.trim() : new URL(url).host, url, slots: 1, token };
    if (!TARGET_NAME.test(target.name)) {
      throw new ConfigError(`${name}: entry "${entry}": name "${target.name}" may hold only letters, digits and . _ : -`);
    }
    for (const param of params) {
      const [key, ...rest] = param.split("=");
      const value = rest.join("=").trim();
      if (key?.trim() === "slots") {
        const slots = Number(value);
        if (!/^\d+$/.test(value) || !Number.isSafeInteger(slots) || slots < 1 || slots > 64) {
          throw new ConfigError(`${name}: entry "${entry}": slots "${value}" must be an integer from 1 to 64`);
        }
        target.slots = slots;
      } else if (key?.trim() === "token") {
        if (!value) throw new ConfigError(`${name}: entry "${entry}": token is empty`);
        target.token = value;
      } else {
        throw new ConfigError(`${name}: entry "${entry}": unknown parameter "${param}" (use slots=N or token=T)`);
      }
    }
    if (targets.some((t) => t.name === target.name)) {
      throw new ConfigError(`${name}: entry "${entry}": the name "${target.name}" is taken (name each target: name=url)`);
    }
    // Two runners on one Ollama would each think they own its GPU: two model keys at once.
    const twin = targets.find((t) => t.url === target.url);
    if (twin) throw new ConfigError(`${name}: entry "${entry}": the URL is target "${twin.name}"'s too`);
    targets.push(target);
  }
  return targets;
}

function listenAddress(env: Env): Config["listen"] {
  const raw = text(env, "FOREMAN_LISTEN") ?? "127.0.0.1:8080";
  const match = /^(\[[^\]]+\]|[^:]*):(\d{1,5})$/.exec(raw);
  const port = Number(match?.[2]);
  if (!match || port > 65535) throw new ConfigError(`FOREMAN_LISTEN: "${raw}" must be host:port, e.g. 127.0.0.1:8080`);
  const host = match[1]!.replace(/^\[|\]$/g, "");
  if (host && !isIP(host) && !/^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/i.test(host)) {
    throw new ConfigError(`FOREMAN_LISTEN: "${raw}": "${host}" is not an IP address or a host name`);
  }
  return { hostname: host || "0.0.0.0", port };
}

function list(env: Env, name: string, fallback: string): string[] {
  return (text(env, name) ?? fallback)
    .split(",")
    .map((item) => item.trim())
    .filter(Boolean);
}

function webhookSecret(env: Env): string | undefined {
  const raw = text(env, "FOREMAN_WEBHOOK_SECRET");
  if (raw !== undefined && !/^whsec_[A-Za-z0-9+/]+={0,2}$/.test(raw)) {
    throw new ConfigError('FOREMAN_WEBHOOK_SECRET: must be "whsec_" followed by base64');
  }
  return raw;
}

function origins(env: Env): string[] {
  const entries = list(env, "FOREMAN_ORIGINS", "").map((entry) => entry.replace(/^["']|["']$/g, ""));
  for (const entry of entries) {
    const problem = invalidOrigin(entry);
    if (problem) throw new ConfigError(`FOREMAN_ORIGINS: ${problem}`);
  }
  return entries;
}

function allowedHosts(env: Env): string[] {
  const entries = list(env, "FOREMAN_ALLOWED_HOSTS", "");
  for (const entry of entries) {
    const problem = invalidAllowedHost(entry);
    if (problem) throw new ConfigError(`FOREMAN_ALLOWED_HOSTS: ${problem}`);
  }
  return entries;
}

function webhookAllow(env: Env): AllowRule[] {
  try {
    const raw = env.FOREMAN_WEBHOOK_ALLOW;
    if (raw === undefined) return [...DEFAULT_ALLOW];
    return parseAllowList(raw.split(",").map((entry) => entry.trim()));
  } catch (error) {
    if (error instanceof AllowListError) throw new ConfigError(`FOREMAN_WEBHOOK_ALLOW: ${error.message}`);
    throw error;
  }
}

function signedInteger(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = text(env, name);
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (!/^[-+]?\d+$/.test(raw) || value < min || value > max) {
    throw new ConfigError(`${name}: "${raw}" must be an integer from ${min} to ${max}`);
  }
  return value;
}

/** Reads and validates every FOREMAN_* variable; throws ConfigError naming the first bad one. */
export function loadConfig(env: Env = process.env): Config {
  const ollamaToken = text(env, "FOREMAN_OLLAMA_TOKEN");
  const targets = ollamaTargets(env, ollamaToken);
  return {
    listen: listenAddress(env),
    ollamaUrl: targets[0]!.url,
    targets,
    ollamaToken,
    token: text(env, "FOREMAN_TOKEN"),
    dbPath: text(env, "FOREMAN_DB") ?? "./foreman.db",
    nodeName: text(env, "FOREMAN_NODE") ?? `${hostname()}:${process.pid}`,
    nodeUrl: text(env, "FOREMAN_NODE_URL") === undefined ? undefined : httpUrl(env, "FOREMAN_NODE_URL", ""),
    leaseTtlMs: duration(env, "FOREMAN_LEASE_TTL", "10s", { min: 300, max: MAX_TIMER_MS }),
    pollIntervalMs: duration(env, "FOREMAN_POLL_INTERVAL", "30s", { min: 100, max: MAX_TIMER_MS }),
    maxAttempts: integer(env, "FOREMAN_MAX_ATTEMPTS", 3, 1),
    jobTtlMs: duration(env, "FOREMAN_JOB_TTL", "24h"),
    embedModel: text(env, "FOREMAN_EMBED_MODEL"),
    logLevel: oneOf(env, "FOREMAN_LOG_LEVEL", ["debug", "info", "warn", "error"] as const, "info"),
    logFormat: oneOf(env, "FOREMAN_LOG_FORMAT", ["json", "text"] as const, defaultLogFormat()),
    metricsPublic: oneOf(env, "FOREMAN_METRICS_PUBLIC", ["true", "false"] as const, "false") === "true",
    maxBodyBytes: integer(env, "FOREMAN_MAX_BODY", 64 * 1024 * 1024, 1),
    maxResultBytes: integer(env, "FOREMAN_MAX_RESULT", 64 * 1024 * 1024, 1),
    schedule: oneOf(env, "FOREMAN_SCHEDULE", ["drain", "drain-oldest", "fifo"] as const, "drain"),
    maxWaitMs: duration(env, "FOREMAN_MAX_WAIT", "2m"),
    fairShare: oneOf(env, "FOREMAN_FAIR_SHARE", ["on", "off"] as const, "on"),
    fairSlackLoads: signedInteger(env, "FOREMAN_FAIR_SLACK", 2, 0, 100),
    maxQueue: integer(env, "FOREMAN_MAX_QUEUE", 512, 1),
    jobTimeoutMs: duration(env, "FOREMAN_JOB_TIMEOUT", "30m", { max: MAX_TIMER_MS }),
    stallTimeoutMs: duration(env, "FOREMAN_STALL_TIMEOUT", "5m"),
    durability: oneOf(env, "FOREMAN_DURABILITY", ["normal", "full"] as const, "normal"),
    shutdownGraceMs: duration(env, "FOREMAN_SHUTDOWN_GRACE", "10s", { max: MAX_TIMER_MS }),
    webhookSecret: webhookSecret(env),
    webhookAllow: webhookAllow(env),
    origins: origins(env),
    allowedHosts: allowedHosts(env),
    maxConnections: integer(env, "FOREMAN_MAX_CONNECTIONS", 1024, 1),
    webhookBackoffMs: list(env, "FOREMAN_WEBHOOK_BACKOFF", "5s,30s,2m,10m,30m,1h,3h,6h").map((item) => {
      const ms = parseDuration(item);
      if (ms === undefined) throw new ConfigError(`FOREMAN_WEBHOOK_BACKOFF: "${item}" is not a duration`);
      return ms;
    }),
    maxFileBytes: integer(env, "FOREMAN_MAX_FILE", 200 * 1024 * 1024, 1),
    maxFilesBytes: integer(env, "FOREMAN_MAX_FILES_BYTES", 10 * 1024 ** 3, 1),
    batchPriority: signedInteger(env, "FOREMAN_BATCH_PRIORITY", -1, -1000, 1000),
    batchWindowMs: duration(env, "FOREMAN_BATCH_WINDOW", "24h", { min: 1, max: MAX_TIMER_MS }),
  };
}

/** Settings read elsewhere than {@link loadConfig}: the client subcommands' server URL. */
const OTHER_SETTINGS = ["FOREMAN_URL"];

/**
 * FOREMAN_* variables in `env` that nothing reads (a typo such as FOREMAN_SHEDULE would otherwise be
 * silently ignored), each with the closest known name when one is near. The known names are exactly
 * those {@link loadConfig} asks for, so the list cannot fall behind the settings.
 */
export function unknownSettings(env: Env = process.env): { name: string; didYouMean: string | undefined }[] {
  const known = new Set(OTHER_SETTINGS);
  const tracking = new Proxy(env, {
    get(target, name) {
      if (typeof name === "string") known.add(name);
      return Reflect.get(target, name);
    },
  });
  try {
    loadConfig(tracking);
  } catch {
    // A bad value is loadConfig's own error to report; the names read up to it are still known.
  }
  return Object.keys(env)
    .filter((name) => name.startsWith("FOREMAN_") && !known.has(name))
    .map((name) => {
      const near = [...known].filter((k) => k.startsWith("FOREMAN_") && editDistance(k, name) <= 2);
      return { name, didYouMean: near[0] };
    });
}

/** Levenshtein distance, for "did you mean" on short names. */
function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      current[j] = Math.min(previous[j]! + 1, current[j - 1]! + 1, previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    previous = current;
  }
  return previous[b.length]!;
}

/** True when the listen host only accepts connections from this machine. */
export function isLoopback(hostname: string): boolean {
  return hostname === "localhost" || hostname === "::1" || /^127\./.test(hostname);
}

/** What the client subcommands (submit, jobs, job, cancel, ps) need: where the server is. */
export interface ClientConfig {
  /** FOREMAN_URL: the running server, default http://127.0.0.1:8080. */
  url: string;
  /** FOREMAN_TOKEN: sent as a bearer token when set. */
  token: string | undefined;
}

/** Reads FOREMAN_URL and FOREMAN_TOKEN for the client subcommands. */
export function loadClientConfig(env: Env = process.env): ClientConfig {
  return { url: httpUrl(env, "FOREMAN_URL", "http://127.0.0.1:8080"), token: text(env, "FOREMAN_TOKEN") };
}

/** What `foreman keys` needs: the database it manages the keys of, directly (the server need not run). */
export interface KeysConfig {
  /** FOREMAN_DB: SQLite file, default ./foreman.db, as `foreman serve` reads it. */
  dbPath: string;
}

/** Reads FOREMAN_DB for `foreman keys`. */
export function loadKeysConfig(env: Env = process.env): KeysConfig {
  return { dbPath: text(env, "FOREMAN_DB") ?? "./foreman.db" };
}
