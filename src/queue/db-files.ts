import { chmodSync, existsSync, rmdirSync, rmSync, statSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { lockPathFor } from "./lock";

/** The database's files: the db, its -wal, -shm and -journal, and the lock file. */
export function databaseFiles(dbPath: string): string[] {
  const path = resolve(dbPath);
  return [path, `${path}-wal`, `${path}-shm`, `${path}-journal`, lockPathFor(path)];
}

/**
 * Takes group and other permissions off the database's existing files (made by an older foreman, or
 * copied in), so another local user cannot read them. Returns the files it changed, for a warning.
 */
export function tightenDatabaseFiles(dbPath: string): string[] {
  const tightened: string[] = [];
  for (const file of databaseFiles(dbPath)) {
    const stat = statSync(file, { throwIfNoEntry: false });
    if (!stat || (stat.mode & 0o077) === 0) continue;
    chmodSync(file, stat.mode & 0o700);
    tightened.push(file);
  }
  return tightened;
}

/** What a start is about to create for a database; {@link removeCreated} undoes it after a failed start. */
export interface CreatedFiles {
  /** Removes the files and folders that did not exist when tracking began; never one that did. */
  removeCreated(): void;
}

/** Notes which of the database's files (db, -wal, -shm, -journal, .lock) and parent folders exist now. */
export function trackCreatedFiles(dbPath: string): CreatedFiles {
  const path = resolve(dbPath);
  const files = databaseFiles(path).filter((file) => !existsSync(file));
  const folders: string[] = [];
  for (let folder = dirname(path); !existsSync(folder) && folder !== dirname(folder); folder = dirname(folder)) {
    folders.push(folder); // deepest first
  }
  return {
    removeCreated() {
      for (const file of files) if (existsSync(file)) rmSync(file);
      for (const folder of folders) {
        try {
          rmdirSync(folder);
        } catch {
          return; // Not empty: someone else put something there; leave it and its parents.
        }
      }
    },
  };
}
