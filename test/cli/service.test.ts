// `foreman service`: the launchd agent and the systemd unit it writes, generated on this (Linux) machine
// by the real command, checked as launchd and systemd would read them; then real installs into a
// throwaway HOME with launchctl and systemctl replaced by stubs that record their arguments.
import { afterAll, describe, expect, test } from "bun:test";
import { chmodSync, existsSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { foremanCommand, runForeman, tempDir } from "../harness";
import { type PlistValue, parsePlist } from "./plist";

const ROOT = join(import.meta.dir, "../..");
const dirs: Array<() => void> = [];
afterAll(() => dirs.forEach((cleanup) => cleanup()));

/** A fresh HOME with XDG folders in it, and a bin/ of stub service managers that log their arguments. */
function sandbox(stubExit = 0): { home: string; bin: string; log: string; env: Record<string, string>; calls: () => string[] } {
  const dir = tempDir();
  dirs.push(dir.cleanup);
  const bin = join(dir.path, "bin");
  const log = join(dir.path, "calls.log");
  mkdirSync(bin);
  for (const tool of ["systemctl", "launchctl"]) {
    const stub = join(bin, tool);
    writeFileSync(
      stub,
      `#!/bin/sh\necho "${tool} $*" >> "${log}"\n[ ${stubExit} = 0 ] || echo "Failed to connect to bus" >&2\nexit ${stubExit}\n`,
    );
    chmodSync(stub, 0o755);
  }
  const home = join(dir.path, "home");
  mkdirSync(home);
  return {
    home,
    bin,
    log,
    env: {
      HOME: home,
      XDG_CONFIG_HOME: join(home, "cfg"),
      XDG_DATA_HOME: join(home, "data"),
      PATH: `${bin}:${process.env.PATH}`,
    },
    calls: () => (existsSync(log) ? readFileSync(log, "utf8").trimEnd().split("\n") : []),
  };
}

/** Quotes, dollars, backslashes, a backquote and XML's specials: every escaping the files need. */
const TOKEN = `t<&>"'$HOME\\n\`x%i`;

/** What is in HOME, but for bun's own cache (run from source, bun writes ~/.bun). */
const written = (home: string) => readdirSync(home).filter((name) => name !== ".bun");

const dict = (value: PlistValue | undefined) => value as Record<string, PlistValue>;

/** What the service must run: this very executable (or, from source, bun and the script) and `serve`. */
function expectServeCommand(args: string[]) {
  expect(args.at(-1)).toBe("serve");
  if (process.env.FOREMAN_BIN !== "source") expect(args).toEqual([foremanCommand()[0]!, "serve"]);
}

describe("foreman service install --dry-run", () => {
  test("--platform darwin prints a launchd plist that parses, with the settings and the token hidden", async () => {
    const { home, env } = sandbox();
    const result = await runForeman(["service", "install", "--dry-run", "--platform", "darwin"], {
      env: { ...env, FOREMAN_TOKEN: TOKEN, FOREMAN_SCHEDULE: "fifo", FOREMAN_DB: "rel/f.db", FOREMAN_URL: "http://x:1" },
    });
    expect(result.code, result.stderr).toBe(0);
    const plist = dict(parsePlist(result.stdout));
    expect(plist.Label).toBe("local.foreman");
    expectServeCommand(plist.ProgramArguments as string[]);
    expect(plist.RunAtLoad).toBe(true);
    expect(plist.KeepAlive).toEqual({ SuccessfulExit: false });
    expect(plist.StandardOutPath).toBe(join(home, "Library/Logs/foreman/foreman.log"));
    expect(plist.StandardErrorPath).toBe(plist.StandardOutPath!);
    expect(plist.ExitTimeOut).toBe(20); // the 10 s shutdown grace, and 10 s more
    // A relative FOREMAN_DB is taken from where install ran; FOREMAN_URL is the CLI's, not the server's.
    expect(plist.EnvironmentVariables).toEqual({
      FOREMAN_DB: join(ROOT, "rel/f.db"),
      FOREMAN_SCHEDULE: "fifo",
      FOREMAN_TOKEN: "(hidden)",
    });
    expect(result.stdout).not.toContain("$HOME");
    expect(result.stderr).toContain(`would write ${join(home, "Library/LaunchAgents/local.foreman.plist")} (mode 0600)`);
    expect(result.stderr).toContain("would run: launchctl bootstrap gui/");
    expect(written(home)).toEqual([]); // nothing written
  });

  test("--platform linux prints a systemd user unit that systemd-analyze verifies", async () => {
    const { home, env } = sandbox();
    const result = await runForeman(["service", "install", "--dry-run", "--platform", "linux"], {
      env: { ...env, FOREMAN_TOKEN: TOKEN, FOREMAN_MAX_WAIT: "5m", FOREMAN_ORIGINS: "https://a.example%x" },
    });
    expect(result.code, result.stderr).toBe(0);
    const unit = result.stdout;
    const line = (key: string) => unit.split("\n").filter((l) => l.startsWith(`${key}=`));
    expect(line("Restart")).toEqual(["Restart=on-failure"]);
    expect(line("WantedBy")).toEqual(["WantedBy=default.target"]);
    expect(line("Environment")).toEqual([
      `Environment="FOREMAN_DB=${join(home, "data/foreman/foreman.db")}"`,
      `Environment="FOREMAN_MAX_WAIT=5m"`,
      `Environment="FOREMAN_ORIGINS=https://a.example%%x"`, // %% is a literal % to systemd
    ]);
    expect(line("EnvironmentFile")).toEqual([`EnvironmentFile=${join(home, "cfg/foreman/secrets.env")}`]);
    expect(unit).not.toContain("$HOME");
    expect(result.stderr).toContain("(mode 0600): FOREMAN_TOKEN (values hidden)");
    expect(written(home)).toEqual([]);

    if (!Bun.which("systemd-analyze")) return; // validated where systemd is installed
    const dir = tempDir();
    dirs.push(dir.cleanup);
    writeFileSync(join(dir.path, "foreman.service"), unit);
    mkdirSync(join(dir.path, "runtime"), { mode: 0o700 });
    const verify = Bun.spawnSync(["systemd-analyze", "--user", "verify", join(dir.path, "foreman.service")], {
      env: { ...process.env, XDG_RUNTIME_DIR: join(dir.path, "runtime") },
      stderr: "pipe",
    });
    // verify exits 0 even for unknown keys, so any word from it is a failure.
    expect(verify.stderr.toString()).toBe("");
    expect(verify.exitCode).toBe(0);
    const execStart = line("ExecStart")[0]!.slice("ExecStart=".length);
    expectServeCommand([...execStart.matchAll(/"((?:[^"\\]|\\.)*)"/g)].map((m) => m[1]!));
  });

  test("the plist reader refuses what launchd would (so its approval means something)", () => {
    const good = `<?xml version="1.0"?><plist version="1.0"><dict><key>A</key><string>x &amp; y</string></dict></plist>`;
    expect(parsePlist(good)).toEqual({ A: "x & y" });
    for (const bad of [
      good.replace("</string>", "</strin>"),
      good.replace("&amp;", "&"),
      good.replace("<key>A</key>", ""),
      good.replace("</plist>", ""),
      `${good}<x/>`,
    ]) {
      expect(() => parsePlist(bad), bad).toThrow();
    }
  });

  test("a bad setting fails the install (exit 2, naming it) rather than every start of the service", async () => {
    const { home, env } = sandbox();
    const result = await runForeman(["service", "install", "--platform", "linux"], {
      env: { ...env, FOREMAN_SCHEDULE: "sometimes" },
    });
    expect(result.code).toBe(2);
    expect(result.stderr).toBe('foreman service: FOREMAN_SCHEDULE: "sometimes" must be one of drain, drain-oldest, fifo\n');
    expect(written(home)).toEqual([]);
  });

  test("several Ollama targets are carried as one setting; one with its own token= goes to the secrets file", async () => {
    const { env } = sandbox();
    const targets = "mac=http://127.0.0.1:11434,box=http://10.0.0.5:11434;slots=4";
    const plain = await runForeman(["service", "install", "--dry-run", "--platform", "linux"], {
      env: { ...env, FOREMAN_OLLAMA_URL: targets },
    });
    expect(plain.code, plain.stderr).toBe(0);
    expect(plain.stdout).toContain(`Environment="FOREMAN_OLLAMA_URL=${targets}"`);
    const withToken = await runForeman(["service", "install", "--dry-run", "--platform", "linux"], {
      env: { ...env, FOREMAN_OLLAMA_URL: `${targets};token=sekrit` },
    });
    expect(withToken.code, withToken.stderr).toBe(0);
    expect(withToken.stdout).not.toContain("sekrit");
    expect(withToken.stdout).not.toContain("FOREMAN_OLLAMA_URL");
    expect(withToken.stderr).toContain("(mode 0600): FOREMAN_OLLAMA_URL (values hidden)");
    const bad = await runForeman(["service", "install", "--dry-run", "--platform", "linux"], {
      env: { ...env, FOREMAN_OLLAMA_URL: "a=http://127.0.0.1:1,a=http://127.0.0.1:2" },
    });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('entry "a=http://127.0.0.1:2": the name "a" is taken');
  });

  test("misuse exits 2 with one line and a hint to the usage", async () => {
    for (const args of [
      ["service"],
      ["service", "start"],
      ["service", "install", "--platform", "windows"],
      ["service", "install", "-x"],
    ]) {
      const result = await runForeman(args);
      expect(result.code, args.join(" ")).toBe(2);
      const [line, hint, end] = result.stderr.split("\n");
      expect(line).toStartWith("foreman service: ");
      expect([hint, end]).toEqual(["run `foreman --help` for usage", ""]);
    }
  });
});

describe("foreman service install and uninstall", () => {
  test("linux: the unit, the token in a 0600 file systemd reads back exactly, systemctl enabled and restarted", async () => {
    const { home, env, calls } = sandbox();
    const installed = await runForeman(["service", "install", "--platform", "linux"], { env: { ...env, FOREMAN_TOKEN: TOKEN } });
    expect(installed.code, installed.stderr).toBe(0);
    const unitPath = join(home, "cfg/systemd/user/foreman.service");
    const secretsPath = join(home, "cfg/foreman/secrets.env");
    expect(readFileSync(unitPath, "utf8")).not.toContain("FOREMAN_TOKEN");
    expect(statSync(unitPath).mode & 0o777).toBe(0o644);
    expect(statSync(secretsPath).mode & 0o777).toBe(0o600);
    expect(statSync(join(home, "data/foreman")).isDirectory()).toBe(true);
    // systemd's environment-file quoting is the shell's for these characters: a shell reads the value back.
    const read = Bun.spawnSync(["sh", "-c", `. "${secretsPath}" && printf %s "$FOREMAN_TOKEN"`], { stdout: "pipe" });
    expect(read.stdout.toString()).toBe(TOKEN);
    expect(calls()).toEqual([
      "systemctl --user daemon-reload",
      "systemctl --user enable foreman.service",
      "systemctl --user restart foreman.service",
    ]);
    expect(installed.stderr).toContain("journalctl --user -u foreman");

    const removed = await runForeman(["service", "uninstall", "--platform", "linux"], { env });
    expect(removed.code, removed.stderr).toBe(0);
    expect(existsSync(unitPath) || existsSync(secretsPath)).toBe(false);
    expect(calls().slice(3)).toEqual(["systemctl --user disable --now foreman.service", "systemctl --user daemon-reload"]);
  });

  test("linux: installing again without a token removes the old secrets file", async () => {
    const { home, env } = sandbox();
    expect((await runForeman(["service", "install", "--platform", "linux"], { env: { ...env, FOREMAN_TOKEN: "a" } })).code).toBe(
      0,
    );
    expect(existsSync(join(home, "cfg/foreman/secrets.env"))).toBe(true);
    expect((await runForeman(["service", "install", "--platform", "linux"], { env })).code).toBe(0);
    expect(existsSync(join(home, "cfg/foreman/secrets.env"))).toBe(false);
    expect(readFileSync(join(home, "cfg/systemd/user/foreman.service"), "utf8")).not.toContain("EnvironmentFile");
  });

  test("linux: when systemctl fails, the files stay and the remaining steps are printed (exit 1)", async () => {
    const { home, env } = sandbox(1);
    const result = await runForeman(["service", "install", "--platform", "linux"], { env });
    expect(result.code).toBe(1);
    expect(result.stderr).toContain("`systemctl --user daemon-reload` failed (exit 1): Failed to connect to bus");
    expect(result.stderr).toContain("  systemctl --user restart foreman.service\n");
    expect(existsSync(join(home, "cfg/systemd/user/foreman.service"))).toBe(true);
  });

  test("darwin: a 0600 plist holding the real token, the log folder, launchctl bootstrap; uninstall boots it out", async () => {
    const { home, env, calls } = sandbox();
    const installed = await runForeman(["service", "install", "--platform", "darwin"], { env: { ...env, FOREMAN_TOKEN: TOKEN } });
    expect(installed.code, installed.stderr).toBe(0);
    const plistPath = join(home, "Library/LaunchAgents/local.foreman.plist");
    expect(statSync(plistPath).mode & 0o777).toBe(0o600);
    expect(dict(dict(parsePlist(readFileSync(plistPath, "utf8"))).EnvironmentVariables).FOREMAN_TOKEN).toBe(TOKEN);
    expect(statSync(join(home, "Library/Logs/foreman")).isDirectory()).toBe(true);
    const uid = process.getuid!();
    expect(calls()).toEqual([
      `launchctl bootout gui/${uid}/local.foreman`,
      `launchctl enable gui/${uid}/local.foreman`,
      `launchctl bootstrap gui/${uid} ${plistPath}`,
    ]);

    const removed = await runForeman(["service", "uninstall", "--platform", "darwin"], { env });
    expect(removed.code, removed.stderr).toBe(0);
    expect(existsSync(plistPath)).toBe(false);
    expect(calls().slice(3)).toEqual([`launchctl bootout gui/${uid}/local.foreman`]);
  });

  test("darwin: bootstrap is retried while launchd still holds the booted-out agent (exit 5)", async () => {
    const { bin, log, env, calls } = sandbox();
    // Fails bootstrap twice with launchd's "Input/output error", as right after a bootout.
    writeFileSync(
      join(bin, "launchctl"),
      `#!/bin/sh\necho "launchctl $*" >> "${log}"\n` +
        `if [ "$1" = bootstrap ] && [ $(grep -c bootstrap "${log}") -le 2 ]; then echo "Bootstrap failed: 5: Input/output error" >&2; exit 5; fi\n`,
    );
    const result = await runForeman(["service", "install", "--platform", "darwin"], { env });
    expect(result.code, result.stderr).toBe(0);
    expect(calls().filter((call) => call.startsWith("launchctl bootstrap"))).toHaveLength(3);
  });

  test("uninstall when nothing is installed says so and runs nothing", async () => {
    const { env, calls } = sandbox();
    const result = await runForeman(["service", "uninstall", "--platform", "linux"], { env });
    expect(result.code).toBe(0);
    expect(result.stderr).toStartWith("foreman service: not installed");
    expect(calls()).toEqual([]);
  });
});
