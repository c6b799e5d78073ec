// One foreman per database. The lock is an exclusive SQLite lock on a sidecar file, `<db>.lock`, held
// for the life of the process: SQLite takes it with POSIX advisory locks on Linux and macOS alike, the
// OS drops them when the process dies (a kill -9 never blocks the next start), and it needs no native
// code (flock would need bun:ffi and a per-OS libc name). The holder's pid is the lock file's
// user_version, which another process reads from the raw header while the lock is held.
//
// POSIX locks have one trap: closing ANY descriptor of the file drops every lock the process holds on
// it. So the holding process never opens the lock file except through SQLite (which shares one lock
// per file among its connections); an in-process second attempt is recognised by the file's inode.
import { Database } from "bun:sqlite";
import { readSync, openSync, closeSync, rmSync, statSync } from "node:fs";
import { createPrivateFile } from "./private-files";

/** Another live foreman holds the database; `pid` is undefined if it had not yet written it. */
export class DatabaseLockedError extends Error {
  override name = "DatabaseLockedError";
  constructor(
    readonly dbPath: string,
    readonly pid: number | undefined,
  ) {
    super(`another foreman (pid ${pid ?? "unknown"}) is serving ${dbPath}`);
  }
}

/** A held lock; {@link release} gives it up (the process's exit does too). */
export interface DatabaseLock {
  /** The sidecar lock file, `<db>.lock`. */
  readonly path: string;
  release(): void;
}

/** Lock files held by this process, by device and inode, shared by every module copy in the process. */
const heldHere: Set<string> = ((globalThis as Record<symbol, unknown>)[Symbol.for("foreman.heldLocks")] ??=
  new Set<string>()) as Set<string>;

/** The path of the lock file beside a database. */
export function lockPathFor(dbPath: string): string {
  return `${dbPath}.lock`;
}

function inodeKey(path: string): string | undefined {
  const stat = statSync(path, { throwIfNoEntry: false });
  return stat ? `${stat.dev}:${stat.ino}` : undefined;
}

/**
 * Takes the database's lock, creating `<db>.lock` if needed, or throws DatabaseLockedError naming the
 * holder. Take it before anything reads or writes the database (crash recovery above all).
 */
export function lockDatabase(dbPath: string): DatabaseLock {
  const path = lockPathFor(dbPath);
  // A clean stop removes the file while it holds the lock (release); an opener that opened it just
  // before may then win the lock on a file no longer at `path`, while the next opener creates a new one.
  // So a lock counts only if `path` still names the file locked, checked before and after; else retry.
  for (;;) {
    const before = inodeKey(path);
    if (before && heldHere.has(before)) throw new DatabaseLockedError(dbPath, process.pid);
    if (before === undefined) {
      // Created owner-only before SQLite opens it (whatever the umask), then locked on the next turn.
      createPrivateFile(path);
      continue;
    }
    const db = lockFile(dbPath, path);
    const key = inodeKey(path);
    if (key !== before) {
      db.close();
      continue;
    }
    heldHere.add(key);
    return {
      path,
      release() {
        if (!heldHere.delete(key)) return;
        // Removed while still locked: nobody can hold it meanwhile, and a later opener retries (above).
        rmSync(path, { force: true });
        db.close();
      },
    };
  }
}

function lockFile(dbPath: string, path: string): Database {
  const db = new Database(path, { create: true });
  try {
    // EXCLUSIVE keeps the write lock after the first write until the connection closes; a memory
    // journal leaves no -journal file beside the lock. busy_timeout stays 0: a held lock fails at once.
    db.run("PRAGMA locking_mode = EXCLUSIVE");
    db.run("PRAGMA journal_mode = MEMORY");
    db.run(`PRAGMA user_version = ${process.pid}`);
    return db;
  } catch (error) {
    db.close();
    if ((error as { code?: string }).code === "SQLITE_BUSY") throw new DatabaseLockedError(dbPath, holderPid(path));
    throw error;
  }
}

/** The pid in the lock file's header (user_version, offset 60, big-endian), read without SQLite. */
function holderPid(path: string): number | undefined {
  const key = inodeKey(path);
  // Reading the file here would close a descriptor and so drop this process's own POSIX lock.
  if (key && heldHere.has(key)) return process.pid;
  const header = Buffer.alloc(64);
  let fd: number | undefined;
  try {
    fd = openSync(path, "r");
    if (readSync(fd, header, 0, 64, 0) < 64) return undefined;
  } catch {
    return undefined;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
  const pid = header.readInt32BE(60);
  return pid > 0 ? pid : undefined;
}
