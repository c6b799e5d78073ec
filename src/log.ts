import type { LogLevel } from "./config";

const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

/** json: one JSON object per line (for journald, Docker, log shippers); text: `time LEVEL [scope] message key=value`. */
export type LogFormat = "json" | "text";

/** A leveled logger writing one line per event to stdout. */
export interface Logger {
  debug(message: string, fields?: Record<string, unknown>): void;
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
  /** Whether events at `level` are written: lets a hot path skip building fields nobody reads. */
  enabled(level: LogLevel): boolean;
}

/** Text on a terminal (a person reads it), JSON otherwise (a program does). */
export function defaultLogFormat(): LogFormat {
  return process.stdout.isTTY ? "text" : "json";
}

function textValue(value: unknown): string {
  if (value instanceof Error) return JSON.stringify(value.message);
  const text = typeof value === "string" ? value : JSON.stringify(value);
  return /[\s"=]/.test(text) ? JSON.stringify(text) : text;
}

/** An Error becomes its message: a stack trace is noise in a log line, and a compiled binary's is pages long. */
function jsonValue(_key: string, value: unknown): unknown {
  return value instanceof Error ? value.message : value;
}

/**
 * Builds a logger that drops events below `level`. `scope` tags each line (e.g. "http", "worker").
 * Callers pass only what is safe to show: never a token, a prompt or a webhook secret.
 */
export function createLogger(level: LogLevel, scope: string, format: LogFormat = defaultLogFormat()): Logger {
  const min = RANK[level];
  const line =
    format === "json"
      ? (lvl: LogLevel, message: string, fields: Record<string, unknown>) =>
          JSON.stringify({ time: new Date().toISOString(), level: lvl, scope, msg: message, ...fields }, jsonValue)
      : (lvl: LogLevel, message: string, fields: Record<string, unknown>) => {
          let text = `${new Date().toISOString()} ${lvl.toUpperCase().padEnd(5)} [${scope}] ${message}`;
          for (const [key, value] of Object.entries(fields)) if (value !== undefined) text += ` ${key}=${textValue(value)}`;
          return text;
        };
  const write =
    (lvl: LogLevel) =>
    (message: string, fields: Record<string, unknown> = {}) => {
      if (RANK[lvl] < min) return;
      process.stdout.write(line(lvl, message, fields) + "\n");
    };
  return {
    debug: write("debug"),
    info: write("info"),
    warn: write("warn"),
    error: write("error"),
    enabled: (lvl) => RANK[lvl] >= min,
  };
}
