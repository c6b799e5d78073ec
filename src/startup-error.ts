import type { Config } from "./config";
import { NewerSchemaError } from "./queue/db";
import { DatabaseLockedError } from "./queue/lock";

/**
 * A start-up failure that `foreman serve` reports as one line (exit code 1): the cause and, where one
 * helps, the setting to change. No stack trace: these are the operator's to fix, not bugs.
 */
export class StartupError extends Error {
  override name = "StartupError";
}

/** Plain words for the system error codes a start meets. */
const REASONS: Record<string, string> = {
  EADDRINUSE: "address in use",
  EADDRNOTAVAIL: "address not available on this machine",
  EACCES: "permission denied",
  EPERM: "operation not permitted",
  EINVAL: "invalid address",
  ENOTDIR: "a part of the path is a file, not a folder",
  EROFS: "read-only file system",
  ENOSPC: "no space left on device",
  EEXIST: "a file is in the way",
  SQLITE_CANTOPEN: "cannot open or create the file",
  SQLITE_READONLY: "the file is read-only",
  SQLITE_PERM: "permission denied",
  SQLITE_FULL: "no space left on device",
  SQLITE_IOERR: "input/output error",
  SQLITE_CORRUPT: "the file is corrupt",
};

function reason(error: unknown): string {
  const code = (error as { code?: unknown }).code;
  return (typeof code === "string" && REASONS[code]) || (error instanceof Error ? error.message : String(error));
}

/** Why the port could not be bound, naming FOREMAN_LISTEN. */
export function listenStartupError(error: unknown, listen: Config["listen"]): StartupError {
  const host = listen.hostname.includes(":") ? `[${listen.hostname}]` : listen.hostname;
  return new StartupError(`cannot listen on ${host}:${listen.port}: ${reason(error)} (set FOREMAN_LISTEN)`);
}

/** The step of opening the database that failed, for the message. */
export type DatabaseStep = "folder" | "lock" | "database";

/** Why the database could not be locked or opened, naming FOREMAN_DB where changing it helps. */
export function databaseStartupError(error: unknown, step: DatabaseStep, path: string): StartupError {
  if (error instanceof DatabaseLockedError) return new StartupError(error.message);
  if (error instanceof NewerSchemaError) {
    return new StartupError(
      `${path} has schema version ${error.version}, newer than this foreman's ${error.supported}: run a newer foreman (or set FOREMAN_DB)`,
    );
  }
  if ((error as { code?: unknown }).code === "SQLITE_NOTADB") {
    return new StartupError(`${path} is not a SQLite database (set FOREMAN_DB)`);
  }
  const what = step === "folder" ? "create the folder" : step === "lock" ? "create the lock file" : "open the database";
  return new StartupError(`cannot ${what} ${path}: ${reason(error)} (set FOREMAN_DB)`);
}
