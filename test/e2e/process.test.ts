// Slow end-to-end tests: foreman as a real process (the compiled binary, see test/preload.ts), real
// signals, real kills.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { chmodSync } from "node:fs";
import { join } from "node:path";
import { Ollama } from "ollama";
import { FakeOllama } from "../fake-ollama";
import { type ForemanProcess, foremanCommand, foremanEnv, freePort, runForeman, spawnForeman, tempDir, until } from "../harness";

const run = (args: string[], env: Record<string, string> = {}) => runForeman(args, { env });

describe("the foreman command", () => {
  test("--help and --version exit 0; an unknown subcommand prints usage on stderr and exits 2", async () => {
    const help = await run(["--help"]);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain("foreman serve");
    const version = await run(["--version"]);
    expect(version.stdout).toMatch(/^foreman \d+\.\d+\.\d+\n$/);
    const unknown = await run(["frobnicate"]);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('unknown command "frobnicate"');
    expect(unknown.stderr).toBe('foreman: unknown command "frobnicate"\nrun `foreman --help` for usage\n');
  });

  test("a bad variable stops serve with one line naming it and exit 2, before anything starts", async () => {
    const dir = tempDir();
    const result = await run(["serve"], { FOREMAN_MAX_ATTEMPTS: "lots", FOREMAN_DB: join(dir.path, "x.db") });
    expect(result.code).toBe(2);
    expect(result.stderr.trim().split("\n")).toEqual(['foreman: FOREMAN_MAX_ATTEMPTS: "lots" must be an integer of at least 1']);
    expect(await Bun.file(join(dir.path, "x.db")).exists()).toBe(false);
    dir.cleanup();
  });
});

describe("foreman as a process", () => {
  let fake: FakeOllama;
  let dir: ReturnType<typeof tempDir>;
  beforeAll(() => {
    fake = new FakeOllama().start();
    dir = tempDir();
  });
  afterAll(async () => {
    await fake.stop();
    dir.cleanup();
  });

  test("kill -9 mid-job, restart: the job API job runs again and every queued one is done", async () => {
    const env = foremanEnv(fake.url, dir.path, { FOREMAN_DB: join(dir.path, "kill.db") });
    let foreman: ForemanProcess = await spawnForeman(env);
    const body = (i: number) =>
      JSON.stringify({ type: "chat", request: { model: "llama3.2", messages: [{ role: "user", content: `job ${i} a b c d` }] } });
    // Three job API jobs (nobody's connection waits on them, so they outlive the process; a client's own
    // request is canceled instead, see startup.test.ts): the first is running (held by the fake) when the
    // process dies, two wait behind it.
    const ids: string[] = [];
    const release = fake.hold();
    const arrived = fake.nextArrival();
    for (let i = 0; i < 3; i++) {
      expect((await fetch(`${foreman.url}/jobs`, { method: "POST", body: body(i) })).status).toBe(202);
    }
    await arrived;
    const queued = async () => ((await (await fetch(`${foreman.url}/jobs?state=queued`)).json()) as { jobs: unknown[] }).jobs;
    await until(async () => (await queued()).length === 2, 10_000, "two jobs to queue behind it");
    const seenBefore = fake.seen.length;
    foreman.process.kill(9);
    await foreman.process.exited;
    release();

    const db = new Database(env.FOREMAN_DB!, { readonly: true });
    const before = db.query<{ id: string; state: string }, []>("SELECT id, state FROM jobs ORDER BY id").all();
    db.close();
    expect(["loading", "working"]).toContain(before[0]!.state);
    expect(before.slice(1).map((r) => r.state)).toEqual(["queued", "queued"]);
    ids.push(...before.map((r) => r.id));

    foreman = await spawnForeman({ ...env, FOREMAN_LISTEN: new URL(foreman.url).host });
    const jobState = async (id: string) => {
      const check = new Database(env.FOREMAN_DB!, { readonly: true });
      const row = check
        .query<{ state: string; attempts: number }, [string]>("SELECT state, attempts FROM jobs WHERE id = ?")
        .get(id)!;
      check.close();
      return row;
    };
    await until(async () => (await Promise.all(ids.map(jobState))).every((r) => r.state === "done"), 20_000, "all jobs done");
    const states = await Promise.all(ids.map(jobState));
    expect(states.map((s) => s.attempts)).toEqual([2, 1, 1]); // the interrupted one ran twice
    expect(fake.seen.length - seenBefore).toBe(3);
    expect(fake.maxInFlight).toBe(1);
    foreman.process.kill("SIGTERM");
    expect(await foreman.process.exited).toBe(0);
  });

  test("SIGTERM lets the running job finish, stops accepting, and exits 0", async () => {
    const env = foremanEnv(fake.url, dir.path, {
      FOREMAN_DB: join(dir.path, "term.db"),
      FOREMAN_SHUTDOWN_GRACE: "10s",
      FOREMAN_LOG_LEVEL: "info",
    });
    const foreman = await spawnForeman(env);
    const client = new Ollama({ host: foreman.url });
    const release = fake.hold();
    const arrived = fake.nextArrival();
    const answer = client.chat({ model: "llama3.2", messages: [{ role: "user", content: "finish this please" }] });
    await arrived;
    foreman.process.kill("SIGTERM");
    // The job is let go only once foreman is shutting down, so it finishes during the shutdown.
    await until(() => foreman.stdout().includes("shutting down"), 10_000, "foreman to start shutting down");
    release();
    expect((await answer).message.content).toBe("You said: finish this please");
    expect(await foreman.process.exited).toBe(0);
    expect(foreman.stdout()).toContain('"msg":"stopped"');
  });

  test("SIGTERM past the grace period stops the running job without spending its attempt; its waiting client's job ends", async () => {
    const env = foremanEnv(fake.url, dir.path, { FOREMAN_DB: join(dir.path, "grace.db"), FOREMAN_SHUTDOWN_GRACE: "200ms" });
    const foreman = await spawnForeman(env);
    // The fake holds the job past the grace period (until the process is gone).
    const release = fake.hold(1);
    const arrived = fake.nextArrival();
    void fetch(`${foreman.url}/api/chat`, {
      method: "POST",
      body: JSON.stringify({ model: "llama3.2", messages: [{ role: "user", content: "a b c d e f g" }] }),
    }).catch(() => {});
    await arrived;
    foreman.process.kill("SIGTERM");
    expect(await foreman.process.exited).toBe(0);
    release();
    const db = new Database(env.FOREMAN_DB!, { readonly: true });
    // Re-queued with its attempt refunded, then canceled: its client was told, so nobody would read a later run.
    expect(db.query<{ state: string; attempts: number }, []>("SELECT state, attempts FROM jobs").get()).toEqual({
      state: "canceled",
      attempts: 0,
    });
    db.close();
  });

  test("Ctrl-C on `bun run start` (SIGINT to the whole process group, twice) stops gracefully: waiting clients get a 503", async () => {
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const env = foremanEnv(fake.url, dir.path, {
      FOREMAN_DB: join(dir.path, "ctrl-c.db"),
      FOREMAN_SHUTDOWN_GRACE: "10s",
      FOREMAN_LOG_LEVEL: "info",
      FOREMAN_LOG_FORMAT: "json",
      FOREMAN_LISTEN: `127.0.0.1:${port}`,
    });
    // The README's command, leading its own process group as a terminal's foreground job does.
    const child = Bun.spawn(["bun", "run", "start"], {
      cwd: join(import.meta.dir, "..", ".."),
      env: { ...process.env, ...env },
      stdout: "pipe",
      stderr: "pipe",
      detached: true,
    });
    const log = new Response(child.stdout).text();
    try {
      await until(
        () =>
          fetch(`${url}/healthz`).then(
            (r) => r.ok,
            () => false,
          ),
        20_000,
        "bun run start to listen",
      );
      const release = fake.hold();
      const arrived = fake.nextArrival();
      const running = fetch(`${url}/api/chat`, {
        method: "POST",
        body: JSON.stringify({ model: "llama3.2", stream: false, messages: [{ role: "user", content: "running" }] }),
      });
      await arrived;
      const waiting = fetch(`${url}/v1/chat/completions`, {
        method: "POST",
        body: JSON.stringify({ model: "qwen3", messages: [{ role: "user", content: "waiting" }] }),
      });
      await until(async () => ((await (await fetch(`${url}/queue`)).json()) as { depth: number }).depth === 1);
      // A terminal's Ctrl-C pressed twice: each reaches bun and foreman, and bun forwards it again.
      process.kill(-child.pid, "SIGINT");
      await Bun.sleep(50);
      process.kill(-child.pid, "SIGINT");
      const turnedAway = await waiting;
      expect(turnedAway.status).toBe(503);
      const body = (await turnedAway.json()) as { error: { message: string; type: string } };
      expect(body.error.message).toContain("shutting down");
      release();
      expect(((await (await running).json()) as { message: { content: string } }).message.content).toBe("You said: running");
      expect(await child.exited).toBe(0);
      expect(await log).toContain('"msg":"stopped"');
    } finally {
      if (child.exitCode === null) process.kill(-child.pid, "SIGKILL");
    }
  });

  test("the binary: a second SIGINT is ignored, saying so; a third forces an immediate stop, saying so", async () => {
    const env = foremanEnv(fake.url, dir.path, {
      FOREMAN_DB: join(dir.path, "force.db"),
      FOREMAN_SHUTDOWN_GRACE: "30s",
      FOREMAN_LOG_LEVEL: "info",
      FOREMAN_LOG_FORMAT: "json",
    });
    const foreman = await spawnForeman(env);
    const release = fake.hold();
    const arrived = fake.nextArrival();
    void fetch(`${foreman.url}/api/chat`, {
      method: "POST",
      body: JSON.stringify({ model: "llama3.2", messages: [{ role: "user", content: "held" }] }),
    }).catch(() => {});
    await arrived;
    try {
      foreman.process.kill("SIGINT");
      await until(() => foreman.stdout().includes("shutting down"), 10_000, "foreman to start shutting down");
      // Beyond the echo window, so each counts as a key press of its own.
      await Bun.sleep(1200);
      foreman.process.kill("SIGINT");
      await until(() => foreman.stdout().includes("SIGINT ignored: already stopping"), 10_000, "the ignored line");
      expect(foreman.process.exitCode).toBeNull();
      await Bun.sleep(1200);
      foreman.process.kill("SIGINT");
      expect(await foreman.process.exited).toBe(130);
      expect(foreman.stdout()).toContain("stopping at once");
      expect(foreman.stdout()).not.toContain('"msg":"stopped"');
    } finally {
      release();
    }
  });

  // The binary test/preload.ts built; pointless (so skipped) when FOREMAN_BIN=source.
  test.skipIf(process.env.FOREMAN_BIN === "source")(
    "the compiled binary runs from a folder with no source beside it and serves a chat",
    async () => {
      // A copy, alone in a fresh folder: nothing of the repository within reach.
      const elsewhere = tempDir();
      const binary = join(elsewhere.path, "foreman");
      await Bun.write(binary, Bun.file(foremanCommand()[0]!));
      chmodSync(binary, 0o755);
      const env = foremanEnv(fake.url, elsewhere.path, { FOREMAN_DB: "./state/foreman.db" });
      const foreman = await spawnForeman(env, { command: [binary], cwd: elsewhere.path }).catch((error) => {
        elsewhere.cleanup();
        throw error;
      });
      try {
        const client = new Ollama({ host: foreman.url });
        const parts: string[] = [];
        for await (const part of await client.chat({
          model: "qwen3",
          messages: [{ role: "user", content: "from the binary" }],
          stream: true,
        }))
          parts.push(part.message.content);
        expect(parts.join("")).toBe("You said: from the binary");
      } finally {
        foreman.process.kill("SIGTERM");
        await foreman.process.exited;
        expect(await Bun.file(join(elsewhere.path, "state", "foreman.db")).exists()).toBe(true);
        elsewhere.cleanup();
      }
    },
  );
});
