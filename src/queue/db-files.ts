import { existsSync, rmdirSync, rmSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { lockPathFor } from "./lock";

/** What a start is about to create for a database; {@link removeCreated} undoes it after a failed start. */
export interface CreatedFiles {
  /** Removes the files and folders that did not exist when tracking began; never one that did. */
  removeCreated(): void;
}

/** Notes which of the database's files (db, -wal, -shm, -journal, .lock) and parent folders exist now. */
export function trackCreatedFiles(dbPath: string): CreatedFiles {
  const path = resolve(dbPath);
  const files = [path, `${path}-wal`, `${path}-shm`, `${path}-journal`, lockPathFor(path)].filter((file) => !existsSync(file));
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
