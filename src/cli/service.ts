// `foreman service install|uninstall [--dry-run] [--platform darwin|linux]`: runs `foreman serve` as a
// launchd agent on macOS or a systemd user unit on Linux, with the FOREMAN_* settings of the moment.
import { chmodSync, existsSync, mkdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, isAbsolute, join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { ConfigError, loadConfig } from "../config";
import {
  LAUNCHD_LABEL,
  isSecretSetting,
  SYSTEMD_UNIT,
  ServiceFileError,
  type ServiceSpec,
  launchdPlist,
  secretsEnvFile,
  systemdUnit,
} from "./service-files";

/** Usage lines of `foreman service`, for `foreman --help`. */
export const SERVICE_USAGE = `  foreman service install|uninstall [--dry-run] [--platform darwin|linux]
                                run \`foreman serve\` at login, restarted on failure: a launchd agent on
                                macOS, a systemd user unit on Linux, with the current FOREMAN_* settings;
                                --dry-run prints the file and what would run, and changes nothing`;

type Env = Record<string, string | undefined>;
type Io = { stdout: (text: string) => void; stderr: (text: string) => void };

/** Client-side variables: they configure `foreman <subcommand>` or the tests, not the server. */
const NOT_SERVER_SETTINGS = new Set(["FOREMAN_URL", "FOREMAN_BIN"]);

interface FileToWrite {
  path: string;
  content: string;
  mode: number;
  /** What --dry-run prints in place of the content, which holds secrets. */
  shown?: string;
}

/** One service-manager command. */
interface Step {
  argv: string[];
  /** A non-zero exit is expected at times and harmless (stopping what is not running). */
  lenient?: boolean;
  /** Run again every half second while it exits with this code, for up to `forMs`. */
  retry?: { exitCode: number; forMs: number };
}

/** Everything install and uninstall do on one platform, worked out before anything is touched. */
interface Plan {
  files: FileToWrite[];
  /** Folders install creates (the log and data folders the service needs to exist). */
  folders: string[];
  install: Step[];
  /** Commands that stop the service, before its files are removed. */
  uninstall: Step[];
  /** Files uninstall removes. */
  remove: string[];
  /** Commands after the files are gone. */
  afterUninstall: Step[];
  /** Printed after a successful install. */
  notes: string[];
}

class UsageError extends Error {}

/** Runs `foreman service <args>`; errors are one line on stderr, misuse exits 2, a failed step 1. */
export function runServiceCommand(args: string[], env: Env = process.env, io: Io = defaultIo): number {
  try {
    return service(args, env, io);
  } catch (error) {
    if (
      error instanceof UsageError ||
      (error instanceof TypeError && String((error as { code?: unknown }).code).startsWith("ERR_PARSE_ARGS"))
    ) {
      io.stderr(`foreman service: ${error.message}\nrun \`foreman --help\` for usage\n`);
      return 2;
    }
    if (error instanceof ConfigError || error instanceof ServiceFileError) {
      io.stderr(`foreman service: ${error.message}\n`);
      return 2;
    }
    io.stderr(`foreman service: ${error instanceof Error ? error.message : String(error)}\n`);
    return 1;
  }
}

const defaultIo: Io = { stdout: (text) => process.stdout.write(text), stderr: (text) => process.stderr.write(text) };

function service(args: string[], env: Env, io: Io): number {
  const { values, positionals } = parseArgs({
    args,
    strict: true,
    allowPositionals: true,
    options: { "dry-run": { type: "boolean" }, platform: { type: "string" } },
  });
  const action = positionals[0];
  if (positionals.length !== 1 || (action !== "install" && action !== "uninstall")) {
    throw new UsageError("give one action: install or uninstall");
  }
  const platform = values.platform ?? process.platform;
  if (platform !== "darwin" && platform !== "linux") {
    throw new UsageError(`--platform must be darwin or linux, not "${platform}" (no service manager support here)`);
  }
  const plan = platform === "darwin" ? launchdPlan(env) : systemdPlan(env);
  const dryRun = Boolean(values["dry-run"]);
  return action === "install" ? install(plan, dryRun, io) : uninstall(plan, dryRun, io);
}

function install(plan: Plan, dryRun: boolean, io: Io): number {
  if (dryRun) {
    const [main, ...others] = plan.files;
    io.stdout(main!.shown ?? main!.content);
    io.stderr(`would write ${main!.path} (mode ${octal(main!.mode)}): printed above\n`);
    for (const file of others) io.stderr(`would write ${file.path} (mode ${octal(file.mode)}): ${file.shown ?? file.content}\n`);
    for (const folder of plan.folders) io.stderr(`would create ${folder}\n`);
    for (const step of plan.install) io.stderr(`would run: ${step.argv.join(" ")}\n`);
    return 0;
  }
  for (const folder of plan.folders) mkdirSync(folder, { recursive: true });
  for (const file of plan.files) writePrivately(file);
  // A secrets file left by an earlier install with secrets would otherwise linger, unread.
  for (const path of plan.remove) if (!plan.files.some((file) => file.path === path)) rmSync(path, { force: true });
  for (const path of plan.files.map((file) => file.path)) io.stderr(`wrote ${path}\n`);
  for (const [index, step] of plan.install.entries()) {
    const failure = run(step);
    if (failure) {
      io.stderr(`foreman service: ${failure}\nThe files are written; run the remaining steps by hand:\n`);
      for (const rest of plan.install.slice(index)) io.stderr(`  ${rest.argv.join(" ")}\n`);
      return 1;
    }
  }
  for (const note of plan.notes) io.stderr(`${note}\n`);
  return 0;
}

function uninstall(plan: Plan, dryRun: boolean, io: Io): number {
  const present = plan.remove.filter((path) => existsSync(path));
  if (dryRun) {
    for (const step of plan.uninstall) io.stderr(`would run: ${step.argv.join(" ")}\n`);
    for (const path of present) io.stderr(`would remove ${path}\n`);
    for (const step of plan.afterUninstall) io.stderr(`would run: ${step.argv.join(" ")}\n`);
    return 0;
  }
  if (!existsSync(plan.files[0]!.path)) {
    for (const path of present) rmSync(path, { force: true });
    io.stderr(`foreman service: not installed (no ${plan.files[0]!.path})\n`);
    return 0;
  }
  // Stopping fails harmlessly when the service is not loaded; the files go either way.
  const failures = plan.uninstall.map((step) => run({ ...step, lenient: true })).filter(Boolean);
  if (failures.length) failures.unshift("could not stop the service; its files are removed anyway");
  for (const path of present) {
    rmSync(path, { force: true });
    io.stderr(`removed ${path}\n`);
  }
  failures.push(...plan.afterUninstall.map((step) => run(step)).filter(Boolean));
  for (const failure of failures) io.stderr(`foreman service: ${failure}\n`);
  return failures.length ? 1 : 0;
}

/** Runs one service-manager command; returns why it failed, or undefined. */
function run(step: Step): string | undefined {
  const deadline = Date.now() + (step.retry?.forMs ?? 0);
  for (;;) {
    let child;
    try {
      child = Bun.spawnSync(step.argv, { stdout: "pipe", stderr: "pipe" });
    } catch {
      return `${step.argv[0]} not found on PATH`;
    }
    if (child.exitCode === 0 || step.lenient) return undefined;
    if (child.exitCode === step.retry?.exitCode && Date.now() < deadline) {
      Bun.sleepSync(500);
      continue;
    }
    const output = `${child.stderr.toString()}${child.stdout.toString()}`.trim();
    return `\`${step.argv.join(" ")}\` failed (exit ${child.exitCode})${output ? `: ${output}` : ""}`;
  }
}

/**
 * Writes a file with its mode from the first byte: a fresh temporary file (an existing one would keep its
 * old, perhaps wider, mode while the secrets go in), chmod past the umask, then renamed over the old one.
 */
function writePrivately(file: FileToWrite): void {
  mkdirSync(dirname(file.path), { recursive: true, mode: 0o700 });
  const temporary = `${file.path}.tmp`;
  rmSync(temporary, { force: true });
  writeFileSync(temporary, file.content, { mode: file.mode, flag: "wx" });
  chmodSync(temporary, file.mode);
  renameSync(temporary, file.path);
}

function octal(mode: number): string {
  return `0${mode.toString(8)}`;
}

/** The command the service runs: this executable, or `bun <this script>` when run from source. */
function serveCommand(): string[] {
  // A compiled foreman's main module lives in Bun's embedded file system.
  const compiled = Bun.main.startsWith("/$bunfs/") || /^[A-Z]:[\\/]~BUN[\\/]/.test(Bun.main);
  return compiled ? [process.execPath, "serve"] : [process.execPath, resolve(Bun.main), "serve"];
}

/**
 * The FOREMAN_* settings of the moment, validated as `serve` would (a bad one fails the install, not
 * the service's every start). FOREMAN_DB becomes absolute: a service's working directory is not the
 * shell's, and the default ./foreman.db would land in `dataDir`.
 */
function serviceSpec(env: Env, dataDir: string): ServiceSpec {
  const settings = Object.entries(env)
    .filter((entry): entry is [string, string] => entry[0].startsWith("FOREMAN_") && !NOT_SERVER_SETTINGS.has(entry[0]))
    .filter(([, value]) => value.trim() !== "")
    .sort(([a], [b]) => a.localeCompare(b));
  const db = env.FOREMAN_DB?.trim() ? resolve(env.FOREMAN_DB.trim()) : join(dataDir, "foreman.db");
  const withDb: Array<[string, string]> = [["FOREMAN_DB", db], ...settings.filter(([name]) => name !== "FOREMAN_DB")];
  const config = loadConfig(Object.fromEntries(withDb));
  return {
    command: serveCommand(),
    env: withDb,
    workingDirectory: dataDir,
    // The shutdown grace lets the running job finish; the manager must wait a little longer before SIGKILL.
    stopTimeoutSeconds: Math.ceil(config.shutdownGraceMs / 1000) + 10,
  };
}

function home(env: Env): string {
  return env.HOME?.trim() || homedir();
}

/** An XDG base directory: the variable when it is an absolute path (the spec ignores relative ones), else the default. */
function xdg(env: Env, name: string, fallback: string): string {
  const value = env[name]?.trim();
  return value && isAbsolute(value) ? value : join(home(env), fallback);
}

function launchdPlan(env: Env): Plan {
  const dataDir = join(home(env), "Library", "Application Support", "foreman");
  const logDir = join(home(env), "Library", "Logs", "foreman");
  const plist = join(home(env), "Library", "LaunchAgents", `${LAUNCHD_LABEL}.plist`);
  const spec = serviceSpec(env, dataDir);
  const uid = process.getuid?.() ?? 501;
  const target = `gui/${uid}/${LAUNCHD_LABEL}`;
  const logFile = join(logDir, "foreman.log");
  const secrets = spec.env.filter(([name, value]) => isSecretSetting(name, value));
  const hidden: ServiceSpec = {
    ...spec,
    env: spec.env.map(([name, value]) => [name, isSecretSetting(name, value) ? "(hidden)" : value]),
  };
  return {
    // The plist holds the secrets (launchd reads no environment file), so it is mode 0600; --dry-run prints
    // it with them hidden, as terminals and CI logs are no place for a token.
    files: [{ path: plist, content: launchdPlist(spec, logFile), mode: 0o600, shown: launchdPlist(hidden, logFile) }],
    folders: [dataDir, logDir],
    // bootout first so a second install replaces the running agent (it fails harmlessly when none is loaded);
    // enable undoes an earlier `launchctl disable`, which would keep bootstrap from starting it.
    // launchd releases a booted-out label asynchronously (the agent may take its shutdown grace to exit):
    // until then bootstrap fails with 5, "Input/output error", so it is retried for that long.
    install: [
      { argv: ["launchctl", "bootout", target], lenient: true },
      { argv: ["launchctl", "enable", target] },
      {
        argv: ["launchctl", "bootstrap", `gui/${uid}`, plist],
        retry: { exitCode: 5, forMs: (spec.stopTimeoutSeconds + 5) * 1000 },
      },
    ],
    uninstall: [{ argv: ["launchctl", "bootout", target] }],
    remove: [plist],
    afterUninstall: [],
    notes: [
      `foreman runs as the launchd agent ${LAUNCHD_LABEL} (and at every login); logs: ${logFile}`,
      `status: launchctl print ${target}`,
      ...(secrets.length ? [`${secrets.map(([n]) => n).join(", ")} kept in ${plist}, readable by you alone (mode 0600)`] : []),
    ],
  };
}

function systemdPlan(env: Env): Plan {
  const configHome = xdg(env, "XDG_CONFIG_HOME", ".config");
  const dataDir = join(xdg(env, "XDG_DATA_HOME", join(".local", "share")), "foreman");
  const unitPath = join(configHome, "systemd", "user", SYSTEMD_UNIT);
  const secretsPath = join(configHome, "foreman", "secrets.env");
  const spec = serviceSpec(env, dataDir);
  const secrets = secretsEnvFile(spec);
  const names = spec.env.filter(([name, value]) => isSecretSetting(name, value)).map(([name]) => name);
  return {
    files: [
      { path: unitPath, content: systemdUnit(spec, secrets ? secretsPath : undefined), mode: 0o644 },
      ...(secrets ? [{ path: secretsPath, content: secrets, mode: 0o600, shown: `${names.join(", ")} (values hidden)` }] : []),
    ],
    folders: [dataDir],
    // restart rather than `enable --now`: a second install must restart foreman with the new settings.
    install: [
      { argv: ["systemctl", "--user", "daemon-reload"] },
      { argv: ["systemctl", "--user", "enable", SYSTEMD_UNIT] },
      { argv: ["systemctl", "--user", "restart", SYSTEMD_UNIT] },
    ],
    uninstall: [{ argv: ["systemctl", "--user", "disable", "--now", SYSTEMD_UNIT] }],
    remove: [unitPath, secretsPath],
    afterUninstall: [{ argv: ["systemctl", "--user", "daemon-reload"] }],
    notes: [
      `foreman runs as the systemd user service ${SYSTEMD_UNIT}; logs: journalctl --user -u foreman -f`,
      `status: systemctl --user status foreman; to keep it running while you are logged out: loginctl enable-linger`,
      ...(secrets ? [`${names.join(", ")} kept in ${secretsPath}, readable by you alone (mode 0600)`] : []),
    ],
  };
}
