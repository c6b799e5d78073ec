// Foreman's files hold prompts, answers and webhook secrets: whatever the umask, the database, its -wal
// and -shm and the lock file are 0600, and a folder foreman makes for them is 0700.
import { afterAll, expect, test } from "bun:test";
import { chmodSync, statSync, writeFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { FakeOllama } from "../fake-ollama";
import { foremanCommand, foremanEnv, spawnForeman, tempDir } from "../harness";

const fake = new FakeOllama().start();
const dir = tempDir();
afterAll(async () => {
  await fake.stop();
  dir.cleanup();
});

const mode = (path: string) => statSync(path).mode & 0o777;

/** Runs foreman under `umask`, sends one job (so the WAL and SHM exist), and returns the modes it left. */
async function modesUnder(umask: string, dbPath: string) {
  const command = ["sh", "-c", `umask ${umask}; exec "$0" "$@"`, ...foremanCommand()];
  const foreman = await spawnForeman(foremanEnv(fake.url, dir.path, { FOREMAN_DB: dbPath, FOREMAN_LOG_LEVEL: "warn" }), {
    command,
  });
  try {
    const response = await fetch(`${foreman.url}/api/chat`, {
      method: "POST",
      body: JSON.stringify({ model: "llama3.2", messages: [{ role: "user", content: "hi" }], stream: false }),
    });
    expect(response.status).toBe(200);
    return {
      db: mode(dbPath),
      wal: mode(`${dbPath}-wal`),
      shm: mode(`${dbPath}-shm`),
      lock: mode(`${dbPath}.lock`),
      log: foreman.stdout(),
    };
  } finally {
    foreman.process.kill();
    await foreman.process.exited;
  }
}

for (const umask of ["000", "022"]) {
  test(`under umask ${umask} the database, -wal, -shm and lock file are 0600 and a new folder 0700`, async () => {
    const folder = join(dir.path, `umask-${umask}`, "data");
    const modes = await modesUnder(umask, join(folder, "foreman.db"));
    expect({ ...modes, log: undefined }).toEqual({ db: 0o600, wal: 0o600, shm: 0o600, lock: 0o600, log: undefined });
    expect(mode(folder)).toBe(0o700);
    expect(mode(join(dir.path, `umask-${umask}`))).toBe(0o700);
  }, 30_000);
}

test("files an older foreman left readable by others are made owner-only at start, with a warning", async () => {
  const folder = join(dir.path, "older");
  mkdirSync(folder);
  const dbPath = join(folder, "foreman.db");
  for (const file of [dbPath, `${dbPath}.lock`]) {
    writeFileSync(file, "");
    chmodSync(file, 0o644);
  }
  const modes = await modesUnder("022", dbPath);
  expect([modes.db, modes.wal, modes.shm, modes.lock]).toEqual([0o600, 0o600, 0o600, 0o600]);
  expect(modes.log).toContain("now owner-only");
  expect(modes.log).toContain(`${dbPath}.lock`);
}, 30_000);
