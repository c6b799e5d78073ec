// Slow end-to-end tests of `foreman serve` starting: one foreman per database, and start-up failures
// that print one line, exit 1 and leave nothing behind. Real processes, real kill -9.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { chmodSync, existsSync, mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { loadConfig } from "../../src/config";
import { startServer } from "../../src/server";
import { FakeOllama } from "../fake-ollama";
import { type ForemanProcess, foremanEnv, freePort, spawnForeman, tempDir, until } from "../harness";

const ROOT = join(import.meta.dir, "..", "..");

/** The command that runs foreman: the compiled binary when FOREMAN_BIN names one, else the source. */
function foremanCommand(): string[] {
  return process.env.FOREMAN_BIN ? [process.env.FOREMAN_BIN] : ["bun", "src/main.ts"];
}

/** Runs `foreman serve` expecting it to stop by itself; killed (and the test failed) after 20 s. */
async function serveUntilExit(env: Record<string, string>): Promise<{ code: number; stderr: string }> {
  const child = Bun.spawn([...foremanCommand(), "serve"], {
    cwd: ROOT,
    env: { ...process.env, FOREMAN_LOG_LEVEL: "info", ...env },
    stdout: "ignore",
    stderr: "pipe",
  });
  const timer = setTimeout(() => child.kill(9), 20_000);
  const [stderr, code] = await Promise.all([new Response(child.stderr).text(), child.exited]);
  clearTimeout(timer);
  return { code, stderr };
}

/** Every file under `dir` with its size and modification time, to show a failed start changed nothing. */
function listing(dir: string): Record<string, string> {
  const entries: Record<string, string> = {};
  for (const name of readdirSync(dir, { recursive: true }) as string[]) {
    const file = Bun.file(join(dir, name));
    entries[name] = `${file.size}@${file.lastModified}`;
  }
  return entries;
}

function jobRows(dbPath: string) {
  const db = new Database(dbPath, { readonly: true });
  const rows = db.query<{ id: string; state: string; attempts: number }, []>("SELECT id, state, attempts FROM jobs").all();
  db.close();
  return rows;
}

describe("one foreman per database", () => {
  let fake: FakeOllama;
  let dir: ReturnType<typeof tempDir>;
  beforeAll(() => {
    fake = new FakeOllama({ tokenDelayMs: 50 }).start();
    dir = tempDir();
  });
  afterAll(async () => {
    await fake.stop();
    dir.cleanup();
  });

  test("a second serve on a live database exits 1 with one line and leaves the running job alone", async () => {
    const env = foremanEnv(fake.url, dir.path, { FOREMAN_DB: join(dir.path, "live.db") });
    const first = await spawnForeman(env, { command: foremanCommand() });
    try {
      const seenBefore = fake.seen.length;
      const words = Array.from({ length: 30 }, (_, i) => `w${i}`).join(" ");
      const answer = fetch(`${first.url}/api/chat`, {
        method: "POST",
        body: JSON.stringify({ model: "llama3.2", messages: [{ role: "user", content: words }], stream: false }),
      });
      await until(() => fake.inFlight === 1, 10_000, "the job to run");
      const before = jobRows(env.FOREMAN_DB!);

      const second = await serveUntilExit({ ...env, FOREMAN_LISTEN: `127.0.0.1:${await freePort()}` });
      expect(second.code).toBe(1);
      expect(second.stderr).toBe(`foreman: another foreman (pid ${first.process.pid}) is serving ${resolve(env.FOREMAN_DB!)}\n`);
      // The second one did not recover (re-queue) the first one's running job.
      expect(jobRows(env.FOREMAN_DB!)).toEqual(before);

      const response = await answer;
      expect(response.status).toBe(200);
      // The answer is relayed as it arrives and the row is written right after it: wait for the write.
      await until(() => jobRows(env.FOREMAN_DB!)[0]?.state === "done", 10_000, "the job's row to say done");
      expect(jobRows(env.FOREMAN_DB!)).toEqual([{ id: before[0]!.id, state: "done", attempts: 1 }]);
      expect(fake.seen.length - seenBefore).toBe(1);
      expect(fake.maxInFlight).toBe(1);
    } finally {
      first.process.kill("SIGTERM");
      await first.process.exited;
    }
  }, 60_000);

  test("after a kill -9 the next serve starts at once: a job API job re-runs, a client's request ends canceled", async () => {
    const env = foremanEnv(fake.url, dir.path, { FOREMAN_DB: join(dir.path, "killed.db") });
    const chat = (content: string) => ({ model: "llama3.2", messages: [{ role: "user", content }] });
    const rows = () => {
      const db = new Database(env.FOREMAN_DB!, { readonly: true });
      const all = db
        .query<{ content: string; state: string; attempts: number; error: string | null }, []>(
          "SELECT json_extract(request, '$.messages[0].content') AS content, state, attempts, error FROM jobs ORDER BY id",
        )
        .all();
      db.close();
      return Object.fromEntries(all.map(({ content, ...row }) => [content, row]));
    };
    const seen = () => fake.seen.map((s) => (s.body.messages as { content: string }[])[0]!.content);
    const seenBefore = fake.seen.length;
    const release = fake.hold();
    let next: ForemanProcess | undefined;
    try {
      // A client's request runs (held); a job API job and another client's request wait behind it.
      const first = await spawnForeman(env, { command: foremanCommand() });
      void fetch(`${first.url}/api/chat`, { method: "POST", body: JSON.stringify(chat("client running")) }).catch(() => {});
      await until(() => fake.inFlight === 1, 10_000, "the client's job to run");
      const submitted = await fetch(`${first.url}/jobs`, {
        method: "POST",
        body: JSON.stringify({ type: "chat", request: chat("job api") }),
      });
      expect(submitted.status).toBe(202);
      void fetch(`${first.url}/api/chat`, { method: "POST", body: JSON.stringify(chat("client queued")) }).catch(() => {});
      await until(() => rows()["client queued"]?.state === "queued", 10_000, "the second client's job to be queued");
      first.process.kill(9);
      await first.process.exited;

      // Both clients' connections died with the process: their jobs end canceled, saying so, and never run
      // again; the job API job runs (held), and is interrupted by a second kill -9.
      next = await spawnForeman(env, { command: foremanCommand() });
      await until(() => rows()["job api"]?.state === "loading", 10_000, "the job API job to run");
      expect(rows()["client running"]).toEqual({
        state: "canceled",
        attempts: 1,
        error: "interrupted by a restart; the client's connection closed with it",
      });
      expect(rows()["client queued"]).toEqual({
        state: "canceled",
        attempts: 0,
        error: "queued when foreman stopped; the client's connection closed with it",
      });
      next.process.kill(9);
      await next.process.exited;

      next = await spawnForeman(env, { command: foremanCommand() });
      release();
      await until(() => rows()["job api"]?.state === "done", 20_000, "the recovered job API job");
      expect(rows()["job api"]!.attempts).toBe(2);
      expect(seen().slice(seenBefore)).toEqual(["client running", "job api", "job api"]);
    } finally {
      release();
      next?.process.kill("SIGTERM");
      await next?.process.exited;
    }
  }, 90_000);

  test("in one process, a second server on the same database is refused; other databases are not", async () => {
    const config = (name: string) => loadConfig(foremanEnv(fake.url, dir.path, { FOREMAN_DB: join(dir.path, name) }));
    const first = await startServer(config("inproc.db"));
    const other = await startServer(config("inproc-other.db"));
    try {
      await expect(startServer(config("inproc.db"))).rejects.toThrow(
        `another foreman (pid ${process.pid}) is serving ${resolve(dir.path, "inproc.db")}`,
      );
      // Refusing in-process must not have dropped the first one's lock: another process is refused too.
      const outsider = await serveUntilExit({
        ...foremanEnv(fake.url, dir.path, { FOREMAN_DB: join(dir.path, "inproc.db") }),
        FOREMAN_LISTEN: `127.0.0.1:${await freePort()}`,
      });
      expect(outsider.stderr).toBe(
        `foreman: another foreman (pid ${process.pid}) is serving ${resolve(dir.path, "inproc.db")}\n`,
      );
    } finally {
      await first.stop();
      await other.stop();
    }
    // A clean stop removes the lock file (no stray inproc.db.lock left behind); the database is free again.
    expect(existsSync(join(dir.path, "inproc.db.lock"))).toBe(false);
    const again = await startServer(config("inproc.db"));
    expect(existsSync(join(dir.path, "inproc.db.lock"))).toBe(true);
    await again.stop();
    expect(existsSync(join(dir.path, "inproc.db.lock"))).toBe(false);
  }, 60_000);
});

describe("a start that fails prints one line, exits 1 and leaves nothing behind", () => {
  let dir: ReturnType<typeof tempDir>;
  beforeAll(() => (dir = tempDir()));
  afterAll(() => dir.cleanup());

  /** Runs serve against `dbPath` (inside a fresh folder) and checks that folder is as it was. */
  async function failedStart(folder: string, env: Record<string, string>): Promise<string> {
    const before = listing(folder);
    const result = await serveUntilExit({ FOREMAN_OLLAMA_URL: "http://127.0.0.1:9", FOREMAN_LISTEN: "127.0.0.1:0", ...env });
    expect(result.code).toBe(1);
    expect(result.stderr.split("\n")).toHaveLength(2); // one line and its newline
    expect(listing(folder)).toEqual(before);
    return result.stderr;
  }

  test("the port is in use", async () => {
    const folder = join(dir.path, "port");
    mkdirSync(folder);
    const taken = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response() });
    try {
      const stderr = await failedStart(folder, {
        FOREMAN_LISTEN: `127.0.0.1:${taken.port}`,
        FOREMAN_DB: join(folder, "state", "foreman.db"),
      });
      expect(stderr).toBe(`foreman: cannot listen on 127.0.0.1:${taken.port}: address in use (set FOREMAN_LISTEN)\n`);
    } finally {
      await taken.stop(true);
    }
  }, 30_000);

  test("the database folder cannot be made (a file is in the way)", async () => {
    const folder = join(dir.path, "file-in-way");
    mkdirSync(folder);
    writeFileSync(join(folder, "state"), "not a folder");
    const stderr = await failedStart(folder, { FOREMAN_DB: join(folder, "state", "sub", "foreman.db") });
    expect(stderr).toBe(
      `foreman: cannot create the folder ${join(folder, "state", "sub")}: a part of the path is a file, not a folder (set FOREMAN_DB)\n`,
    );
  }, 30_000);

  // Root writes anywhere, so a read-only folder stops only other users.
  test.skipIf(process.getuid?.() === 0)(
    "the database folder is read-only",
    async () => {
      const folder = join(dir.path, "read-only");
      mkdirSync(folder);
      chmodSync(folder, 0o555);
      try {
        const stderr = await failedStart(folder, { FOREMAN_DB: join(folder, "state", "foreman.db") });
        expect(stderr).toContain("permission denied (set FOREMAN_DB)");
      } finally {
        chmodSync(folder, 0o755);
      }
    },
    30_000,
  );

  test("the database has a newer schema", async () => {
    const folder = join(dir.path, "newer");
    mkdirSync(folder);
    const dbPath = join(folder, "foreman.db");
    const db = new Database(dbPath);
    db.run("PRAGMA user_version = 99");
    db.close();
    const stderr = await failedStart(folder, { FOREMAN_DB: dbPath });
    expect(stderr).toMatch(
      new RegExp(
        `^foreman: ${dbPath} has schema version 99, newer than this foreman's \\d+: run a newer foreman \\(or set FOREMAN_DB\\)\n$`,
      ),
    );
  }, 30_000);

  test("the database file is not SQLite", async () => {
    const folder = join(dir.path, "not-sqlite");
    mkdirSync(folder);
    const dbPath = join(folder, "foreman.db");
    writeFileSync(dbPath, "these are my notes, not a database\n".repeat(200));
    const stderr = await failedStart(folder, { FOREMAN_DB: dbPath });
    expect(stderr).toBe(`foreman: ${dbPath} is not a SQLite database (set FOREMAN_DB)\n`);
  }, 30_000);
});
