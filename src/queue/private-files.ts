// Foreman's files hold prompts, answers and webhook secrets: no other local user may read them.
import { closeSync, fchmodSync, openSync } from "node:fs";

/** Mode of every file foreman keeps beside its database: they hold prompts, answers and webhook secrets. */
export const PRIVATE_FILE_MODE = 0o600;

/** Mode of a folder foreman creates for its database. */
export const PRIVATE_FOLDER_MODE = 0o700;

/**
 * Creates `path` empty and owner-only (0600 whatever the umask) unless it exists. Made before SQLite opens
 * it, a database's -wal and -shm follow: SQLite gives them the main file's mode. An existing file is never
 * opened here: closing a descriptor would drop the POSIX locks this process's SQLite connections hold on it.
 */
export function createPrivateFile(path: string): void {
  let fd: number;
  try {
    fd = openSync(path, "wx", PRIVATE_FILE_MODE);
  } catch (error) {
    if ((error as { code?: string }).code === "EEXIST") return;
    throw error;
  }
  try {
    fchmodSync(fd, PRIVATE_FILE_MODE); // the umask may have taken bits from the owner too
  } finally {
    closeSync(fd);
  }
}
