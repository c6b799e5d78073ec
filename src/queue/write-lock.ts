import type { Database } from "bun:sqlite";

/** How long a write waits for the other thread's transaction before giving up (as busy_timeout did), ms. */
const WAIT_MS = 5000;

/**
 * Makes every `db.transaction(fn).immediate()` of this connection wait for the write lock by spinning
 * rather than through SQLite's busy handler. The handler sleeps 1 ms, then 2, 5, 10…, while the other
 * thread's transactions last tens of microseconds: on the HTTP thread every collision with the worker
 * stalled the event loop (every request) for a millisecond or more, which capped POST /jobs at about
 * 1,200/s. A BEGIN that failed has done nothing, so trying again is safe; once it succeeds the lock is
 * held and nothing inside waits. Installed by openDatabase, so the store's code reads as plain bun:sqlite.
 */
export function spinForWriteLock(db: Database): void {
  const off = db.query("PRAGMA busy_timeout = 0");
  const on = db.query(`PRAGMA busy_timeout = ${WAIT_MS}`);
  const transaction = db.transaction.bind(db);
  db.transaction = ((fn: (...args: never[]) => unknown) => {
    const tx = transaction(fn);
    const immediate = (...args: never[]) => {
      off.run();
      try {
        const deadline = performance.now() + WAIT_MS;
        for (let attempt = 0; ; attempt++) {
          try {
            return tx.immediate(...args);
          } catch (error) {
            if ((error as { code?: string }).code !== "SQLITE_BUSY" || performance.now() > deadline) throw error;
          }
          // 10 µs, doubling to 1 ms: the lock is taken soon after the other thread lets it go.
          const until = performance.now() + Math.min(0.01 * 2 ** attempt, 1);
          while (performance.now() < until);
        }
      } finally {
        on.run();
      }
    };
    // Bun's transaction function has read-only variants: a new one carries the spinning `immediate`.
    return Object.assign((...args: never[]) => tx(...args), { deferred: tx.deferred, immediate, exclusive: tx.exclusive });
  }) as typeof db.transaction;
}
