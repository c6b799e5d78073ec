// Shared set-up for tests and benchmarks: a fresh database, a fake Ollama, foreman in-process or as a
// real child process.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadConfig } from "../src/config";
import { type RunningServer, startServer } from "../src/server";
import { FakeOllama, type FakeOllamaOptions } from "./fake-ollama";

/** A throwaway folder, removed by `cleanup`. */
export function tempDir(): { path: string; cleanup: () => void } {
  const path = mkdtempSync(join(tmpdir(), "foreman-test-"));
  return { path, cleanup: () => rmSync(path, { recursive: true, force: true }) };
}

/** Environment for a foreman in front of `ollamaUrl` with a fresh database in `dir`. */
export function foremanEnv(ollamaUrl: string, dir: string, env: Record<string, string> = {}): Record<string, string> {
  return {
    FOREMAN_LISTEN: "127.0.0.1:0",
    FOREMAN_OLLAMA_URL: ollamaUrl,
    FOREMAN_DB: join(dir, "foreman.db"),
    FOREMAN_POLL_INTERVAL: "1s",
    FOREMAN_LOG_LEVEL: "error",
    FOREMAN_SHUTDOWN_GRACE: "2s",
    ...env,
  };
}

export interface Stack {
  fake: FakeOllama;
  foreman: RunningServer;
  dir: string;
  dbPath: string;
  stop(): Promise<void>;
}

/** Starts a fake Ollama and an in-process foreman in front of it. */
export async function startStack(options: { fake?: FakeOllamaOptions; env?: Record<string, string> } = {}): Promise<Stack> {
  const fake = new FakeOllama(options.fake).start();
  const dir = tempDir();
  const env = foremanEnv(fake.url, dir.path, options.env);
  const foreman = await startServer(loadConfig(env));
  return {
    fake,
    foreman,
    dir: dir.path,
    dbPath: env.FOREMAN_DB!,
    async stop() {
      await foreman.stop();
      await fake.stop();
      dir.cleanup();
    },
  };
}

const ROOT = join(import.meta.dir, "..");

/**
 * The command that starts foreman as a process: the binary test/preload.ts built (or FOREMAN_BIN's),
 * or `bun src/main.ts` when FOREMAN_BIN is "source" or unset (outside `bun test`, e.g. benchmarks).
 */
export function foremanCommand(): string[] {
  const bin = process.env.FOREMAN_BIN;
  return !bin || bin === "source" ? ["bun", join(ROOT, "src", "main.ts")] : [bin];
}

/** A foreman running as its own process (the compiled binary, or `bun src/main.ts`), for kill tests. */
export interface ForemanProcess {
  url: string;
  process: ReturnType<typeof Bun.spawn>;
  stderr: () => string;
  /** Its log (foreman logs to stdout), as far as it has been written. */
  stdout: () => string;
}

/**
 * Spawns `foreman serve` and resolves once it listens. The port is picked here (a free one found by
 * binding port 0), so a restart can reuse it.
 */
export async function spawnForeman(
  env: Record<string, string>,
  { command = foremanCommand(), cwd = ROOT }: { command?: string[]; cwd?: string } = {},
): Promise<ForemanProcess> {
  const port =
    env.FOREMAN_LISTEN?.endsWith(":0") || !env.FOREMAN_LISTEN ? await freePort() : Number(env.FOREMAN_LISTEN.split(":").pop());
  let stderr = "";
  let stdout = "";
  // The listen host given (e.g. 0.0.0.0), or loopback; the url always reaches it over loopback.
  const host = /^(.+):\d+$/.exec(env.FOREMAN_LISTEN ?? "")?.[1] ?? "127.0.0.1";
  const child = Bun.spawn([...command, "serve"], {
    cwd,
    env: { ...process.env, FOREMAN_LOG_LEVEL: "info", ...env, FOREMAN_LISTEN: `${host}:${port}` },
    stdout: "pipe",
    stderr: "pipe",
  });
  const url = `http://127.0.0.1:${port}`;
  void (async () => {
    for await (const chunk of child.stderr as ReadableStream<Uint8Array>) stderr += new TextDecoder().decode(chunk);
  })();
  void (async () => {
    const decoder = new TextDecoder();
    for await (const chunk of child.stdout as ReadableStream<Uint8Array>) stdout += decoder.decode(chunk, { stream: true });
  })();
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`foreman exited with ${child.exitCode}: ${stderr}${stdout}`);
    try {
      const response = await fetch(`${url}/healthz`);
      if (response.ok) return { url, process: child, stderr: () => stderr, stdout: () => stdout };
    } catch {
      // Not listening yet.
    }
    await Bun.sleep(25);
  }
  child.kill();
  throw new Error(`foreman did not start: ${stderr}${stdout}`);
}

/** Runs `foreman <args>` (the `foremanCommand()`) to completion: its output and exit code. */
export async function runForeman(
  args: string[],
  options: { env?: Record<string, string>; stdin?: string } = {},
): Promise<{ stdout: string; stderr: string; code: number }> {
  const child = Bun.spawn([...foremanCommand(), ...args], {
    cwd: ROOT,
    env: { ...process.env, ...options.env },
    stdin: options.stdin === undefined ? "ignore" : new Blob([options.stdin]),
    stdout: "pipe",
    stderr: "pipe",
  });
  const [stdout, stderr, code] = await Promise.all([
    new Response(child.stdout).text(),
    new Response(child.stderr).text(),
    child.exited,
  ]);
  return { stdout, stderr, code };
}

/** A TCP port nobody listens on right now. */
export async function freePort(): Promise<number> {
  const server = Bun.serve({ port: 0, hostname: "127.0.0.1", fetch: () => new Response() });
  const port = server.port!;
  await server.stop(true);
  return port;
}

/** Polls `check` until it returns true, failing after `timeoutMs`. For state only visible by polling. */
export async function until(check: () => boolean | Promise<boolean>, timeoutMs = 10_000, what = "condition"): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(10);
  }
}
