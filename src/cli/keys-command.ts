import { parseArgs } from "node:util";
import { loadKeysConfig } from "../config";
import { type AdminKeyModel, keyView } from "../http/admin-keys";
import {
  KEY_APIS,
  type KeyApi,
  KeyError,
  type KeyLimits,
  type KeyRegistry,
  type KeyRole,
  KeyStore,
  MAX_WEIGHT,
  MIN_WEIGHT,
} from "../keys/key-store";
import { KeyUsage, type KeyUsageReader } from "../keys/usage";
import { openDatabase } from "../queue/db";
import { isPostgresUrl } from "../queue/pg/url";
import { CliError } from "./api-client";
import { usage } from "./args";
import { formatTable } from "./format";

/** Usage lines of `foreman keys`, for `foreman --help`. */
export const KEYS_USAGE = `  foreman keys create NAME [--role client|admin] [--models GLOB,...] [--apis API,...]
                 [--max-priority N] [--max-jobs N] [--daily-tokens N] [--weight W] [--json]
                                make an API key; prints its secret, once
  foreman keys list [--json]    every key, with today's usage
  foreman keys show NAME [--json]
  foreman keys revoke NAME      the key stops working (within a second on a running server)
  foreman keys rotate NAME      a new secret for the key, printed once; the old one stops working
  (they open FOREMAN_DB, default ./foreman.db, or its postgres:// queue, directly: the server may be running or not)`;

type Io = { stdout: (text: string) => void; stderr: (text: string) => void };

const defaultIo: Io = { stdout: (text) => process.stdout.write(text), stderr: (text) => process.stderr.write(text) };

/** Runs `foreman keys …` on the database; errors are one line on stderr and a non-zero exit code. */
export async function runKeysCommand(
  args: string[],
  io: Io = defaultIo,
  env: Record<string, string | undefined> = process.env,
): Promise<number> {
  try {
    const [action, ...rest] = args;
    if (!action || !ACTIONS[action]) usage(`keys takes one of ${Object.keys(ACTIONS).join(", ")}`);
    const { dbPath } = loadKeysConfig(env);
    if (isPostgresUrl(dbPath)) {
      // Loaded only here: a SQLite deployment's CLI never parses the PostgreSQL store.
      const [{ openPg }, { PgKeyStore }] = await Promise.all([import("../queue/pg/db"), import("../queue/pg/keys")]);
      const sql = await openPg(dbPath, { poolSize: 1 });
      try {
        const keys = new PgKeyStore(sql);
        return await ACTIONS[action]!(keys, keys, rest, io);
      } finally {
        await sql.close();
      }
    }
    const db = openDatabase(dbPath);
    try {
      return await ACTIONS[action]!(new KeyStore(db), new KeyUsage(db), rest, io);
    } finally {
      db.close();
    }
  } catch (error) {
    if (error instanceof CliError) {
      io.stderr(`foreman keys: ${error.message}\n`);
      if (error.exitCode === 2) io.stderr("run `foreman --help` for usage\n");
      return error.exitCode;
    }
    if (error instanceof KeyError) {
      io.stderr(`foreman keys: ${error.message}\n`);
      return 1;
    }
    if (error instanceof TypeError && "code" in error && String(error.code).startsWith("ERR_PARSE_ARGS")) {
      io.stderr(`foreman keys: ${error.message}\nrun \`foreman --help\` for usage\n`);
      return 2;
    }
    io.stderr(`foreman keys: ${error instanceof Error ? error.message : String(error)}\n`);
    return 1;
  }
}

type Action = (keys: KeyRegistry, usage: KeyUsageReader, args: string[], io: Io) => Promise<number>;

const ACTIONS: Record<string, Action> = { create, list, show, revoke, rotate };

/** The one NAME an action takes, and its --json flag. */
function oneName(args: string[], action: string, options: Record<string, { type: "string" | "boolean" }> = {}) {
  const { values, positionals } = parseArgs({
    args,
    strict: true,
    allowPositionals: true,
    options: { json: { type: "boolean" }, ...options },
  });
  if (positionals.length !== 1) usage(`keys ${action} takes one key name`);
  return { name: positionals[0]!, values: values as Record<string, string | boolean | undefined> };
}

function count(flag: string, value: string | boolean | undefined, min: number, max = Number.MAX_SAFE_INTEGER): number | null {
  if (value === undefined || typeof value === "boolean") return null;
  const n = Number(value);
  if (!/^-?\d+$/.test(value) || n < min || n > max) usage(`--${flag} must be an integer from ${min} to ${max}, not "${value}"`);
  return n;
}

function weightOf(value: string | boolean | undefined): number | null {
  if (value === undefined || typeof value === "boolean") return null;
  const n = Number(value);
  if (!/^\d+(\.\d+)?$/.test(value) || n < MIN_WEIGHT || n > MAX_WEIGHT)
    usage(`--weight must be a number from ${MIN_WEIGHT} to ${MAX_WEIGHT}, not "${value}"`);
  return n;
}

function list_(value: string | boolean | undefined): string[] | null {
  if (value === undefined || typeof value === "boolean") return null;
  return value
    .split(",")
    .map((item) => item.trim())
    .filter(Boolean);
}

async function create(keys: KeyRegistry, usageTable: KeyUsageReader, args: string[], io: Io): Promise<number> {
  const { name, values } = oneName(args, "create", {
    role: { type: "string" },
    models: { type: "string" },
    apis: { type: "string" },
    "max-priority": { type: "string" },
    "max-jobs": { type: "string" },
    "daily-tokens": { type: "string" },
    weight: { type: "string" },
  });
  const role = (values.role ?? "client") as string;
  if (role !== "admin" && role !== "client") usage(`--role must be admin or client, not "${role}"`);
  const apis = list_(values.apis);
  for (const api of apis ?? []) {
    if (!(KEY_APIS as readonly string[]).includes(api)) usage(`--apis takes ${KEY_APIS.join(", ")}, not "${api}"`);
  }
  const limits: KeyLimits = {
    models: list_(values.models),
    apis: apis as KeyApi[] | null,
    maxPriority: count("max-priority", values["max-priority"], -1000, 1000),
    maxJobs: count("max-jobs", values["max-jobs"], 1),
    dailyTokens: count("daily-tokens", values["daily-tokens"], 1),
    weight: weightOf(values.weight),
  };
  const { key, secret } = await keys.create(name, role as KeyRole, limits);
  if (values.json) io.stdout(`${JSON.stringify({ ...(await keyView(key, usageTable)), secret })}\n`);
  else {
    io.stdout(`${secret}\n`);
    io.stderr(`key "${key.name}" (${key.role}) made: the secret above is shown this once; foreman keeps only its hash\n`);
  }
  return 0;
}

async function list(keys: KeyRegistry, usageTable: KeyUsageReader, args: string[], io: Io): Promise<number> {
  const { values } = parseArgs({ args, strict: true, options: { json: { type: "boolean" } } });
  const views = await Promise.all((await keys.list()).map((key) => keyView(key, usageTable)));
  if (values.json) {
    io.stdout(`${JSON.stringify({ keys: views })}\n`);
    return 0;
  }
  if (views.length === 0) {
    io.stdout("no keys\n");
    return 0;
  }
  io.stdout(
    formatTable(
      ["NAME", "ROLE", "SECRET", "STATE", "ACTIVE", "TOKENS TODAY", "GPU TODAY", "LIMITS"],
      views.map((key) => [
        key.name,
        key.role,
        `…${key.hint}`,
        key.revoked_at ? "revoked" : "active",
        String(key.today.active_jobs),
        String(key.today.prompt_tokens + key.today.output_tokens),
        gpuText(key.today.gpu_seconds),
        limitsText(key),
      ]),
    ),
  );
  return 0;
}

/** GPU seconds as the tables print them: one decimal, "12.3s". */
function gpuText(seconds: number): string {
  return `${seconds.toFixed(1)}s`;
}

function limitsText(key: AdminKeyModel.key): string {
  const parts: string[] = [];
  if (key.models) parts.push(`models ${key.models.join(",")}`);
  if (key.apis) parts.push(`apis ${key.apis.join(",")}`);
  if (key.max_priority !== null) parts.push(`max-priority ${key.max_priority}`);
  if (key.max_jobs !== null) parts.push(`max-jobs ${key.max_jobs}`);
  if (key.daily_tokens !== null) parts.push(`daily-tokens ${key.daily_tokens}`);
  if (key.weight !== 1) parts.push(`weight ${key.weight}`);
  return parts.join("; ") || "-";
}

async function show(keys: KeyRegistry, usageTable: KeyUsageReader, args: string[], io: Io): Promise<number> {
  const { name, values } = oneName(args, "show");
  const key = await keyView(await keys.get(name), usageTable);
  if (values.json) {
    io.stdout(`${JSON.stringify(key)}\n`);
    return 0;
  }
  const lines = [
    ["name", key.name],
    ["id", key.id],
    ["role", key.role],
    ["secret", `…${key.hint}`],
    ["state", key.revoked_at ? `revoked ${key.revoked_at}` : "active"],
    ["created", key.created_at],
    ["limits", limitsText(key)],
    ["jobs active", String(key.today.active_jobs)],
    [
      "today (UTC)",
      `${key.today.jobs} jobs done, ${key.today.prompt_tokens} prompt + ${key.today.output_tokens} output tokens, ${gpuText(key.today.gpu_seconds)} GPU`,
    ],
  ];
  io.stdout(lines.map(([label, value]) => `${label!.padEnd(12)} ${value}\n`).join(""));
  return 0;
}

async function revoke(keys: KeyRegistry, _usage: KeyUsageReader, args: string[], io: Io): Promise<number> {
  const { name } = oneName(args, "revoke");
  const key = await keys.revoke(name);
  io.stdout(`key "${key.name}" revoked\n`);
  return 0;
}

async function rotate(keys: KeyRegistry, usageTable: KeyUsageReader, args: string[], io: Io): Promise<number> {
  const { name, values } = oneName(args, "rotate");
  const { key, secret } = await keys.rotate(name);
  if (values.json) io.stdout(`${JSON.stringify({ ...(await keyView(key, usageTable)), secret })}\n`);
  else {
    io.stdout(`${secret}\n`);
    io.stderr(`key "${key.name}" has a new secret, shown this once; the old one no longer works\n`);
  }
  return 0;
}
