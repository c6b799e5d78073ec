import type { LogLevel } from "./config";

const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

/** A leveled logger writing one logfmt-ish line per event to stderr. */
export interface Logger {
  debug(message: string, fields?: Record<string, unknown>): void;
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
}

function format(value: unknown): string {
  if (value instanceof Error) return JSON.stringify(value.message);
  const text = typeof value === "string" ? value : JSON.stringify(value);
  return /[\s"=]/.test(text) ? JSON.stringify(text) : text;
}

/** Builds a logger that drops events below `level`. `scope` tags each line (e.g. "http", "worker"). */
export function createLogger(level: LogLevel, scope: string): Logger {
  const min = RANK[level];
  const write =
    (lvl: LogLevel) =>
    (message: string, fields: Record<string, unknown> = {}) => {
      if (RANK[lvl] < min) return;
      let line = `${new Date().toISOString()} ${lvl.toUpperCase().padEnd(5)} [${scope}] ${message}`;
      for (const [key, value] of Object.entries(fields)) if (value !== undefined) line += ` ${key}=${format(value)}`;
      process.stderr.write(line + "\n");
    };
  return { debug: write("debug"), info: write("info"), warn: write("warn"), error: write("error") };
}
