#!/usr/bin/env bun
// The `foreman` command: `serve` runs the server; the other subcommands talk to a running one.
import pkg from "../package.json";
import { runClientCommand, CLIENT_COMMANDS, CLIENT_USAGE, USAGE_HINT } from "./cli/commands";
import { DB_USAGE, runDbCommand } from "./cli/db-command";
import { HEALTH_USAGE, runHealthCommand } from "./cli/health";
import { KEYS_USAGE, runKeysCommand } from "./cli/keys-command";
import { SERVICE_USAGE, runServiceCommand } from "./cli/service";
import { ConfigError, loadConfig } from "./config";
import { type Logger, createLogger } from "./log";
import { startNode } from "./server";
import { StartupError } from "./startup-error";

const USAGE = `foreman ${pkg.version}: one Ollama GPU, many clients

Usage:
  foreman serve                 run the server (configured by FOREMAN_* variables; see README)
${CLIENT_USAGE}
${HEALTH_USAGE}
${KEYS_USAGE}
${DB_USAGE}
${SERVICE_USAGE}
  foreman --help | --version`;

async function serve(): Promise<number> {
  let config;
  try {
    config = loadConfig();
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`foreman: ${error.message}\n`);
      return 2;
    }
    throw error;
  }
  let server;
  try {
    server = await startNode(config);
  } catch (error) {
    // One line, no stack trace (a compiled binary would print pages of its bundled source with one).
    const message = error instanceof StartupError ? error.message : `cannot start: ${(error as Error)?.message ?? error}`;
    process.stderr.write(`foreman: ${message}\n`);
    return 1;
  }
  const log = createLogger(config.logLevel, "http", config.logFormat);
  await new Promise<void>((resolve) => onStopSignals(() => void server.stop().then(resolve), log));
  return 0;
}

/** Signals closer than this to the one before are echoes of the same key press (see {@link onStopSignals}). */
const ECHO_MS = 1000;

/**
 * The first SIGINT or SIGTERM starts the graceful stop, and the handlers stay, so later ones cannot kill
 * the process mid-stop. A terminal's Ctrl-C reaches every process of its group and `bun run` forwards
 * it once more, so one key press arrives as two or three SIGINTs within milliseconds: signals within
 * ECHO_MS of the one before count as that one. A second press is ignored, saying how to force; a third
 * ends the process at once (its running job is recovered at the next start, as after a crash).
 */
function onStopSignals(stop: () => void, log: Logger): void {
  let presses = 0;
  let last = -Infinity;
  const onSignal = (signal: NodeJS.Signals) => {
    const now = performance.now();
    const echo = now - last < ECHO_MS;
    last = now;
    if (echo) return;
    presses++;
    if (presses === 1) return stop();
    if (presses === 2) return log.warn(`${signal} ignored: already stopping (send it once more to stop at once)`);
    log.warn(`${signal} again: stopping at once, without waiting for the running job`);
    process.exit(130);
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === "serve") return serve();
  if (command === "--help" || command === "-h" || command === "help") {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  if (command === "--version" || command === "-v" || command === "version") {
    process.stdout.write(`foreman ${pkg.version}\n`);
    return 0;
  }
  if (command === "service") return runServiceCommand(rest);
  if (command === "health") return runHealthCommand(rest);
  if (command === "keys") return runKeysCommand(rest);
  if (command === "db") return runDbCommand(rest);
  if (command && CLIENT_COMMANDS.has(command)) return runClientCommand(command, rest);
  // Misuse is one line and a hint (the README's promise: errors are one line on stderr); bare \`foreman\` shows the usage.
  process.stderr.write(command ? `foreman: unknown command "${command}"\n${USAGE_HINT}` : `${USAGE}\n`);
  return 2;
}

process.exitCode = await main(process.argv.slice(2));
