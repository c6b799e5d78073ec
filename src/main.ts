#!/usr/bin/env bun
// The `foreman` command: `serve` runs the server; the other subcommands talk to a running one.
import pkg from "../package.json";
import { runClientCommand, CLIENT_COMMANDS, CLIENT_USAGE } from "./cli/commands";
import { HEALTH_USAGE, runHealthCommand } from "./cli/health";
import { SERVICE_USAGE, runServiceCommand } from "./cli/service";
import { ConfigError, loadConfig } from "./config";
import { startServer } from "./server";
import { StartupError } from "./startup-error";

const USAGE = `foreman ${pkg.version}: one Ollama GPU, many clients

Usage:
  foreman serve                 run the server (configured by FOREMAN_* variables; see README)
${CLIENT_USAGE}
${HEALTH_USAGE}
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
    server = await startServer(config);
  } catch (error) {
    // One line, no stack trace (a compiled binary would print pages of its bundled source with one).
    const message = error instanceof StartupError ? error.message : `cannot start: ${(error as Error)?.message ?? error}`;
    process.stderr.write(`foreman: ${message}\n`);
    return 1;
  }
  await new Promise<void>((resolve) => {
    const shutdown = () => {
      process.off("SIGINT", shutdown);
      process.off("SIGTERM", shutdown);
      void server.stop().then(resolve);
    };
    process.on("SIGINT", shutdown);
    process.on("SIGTERM", shutdown);
  });
  return 0;
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
  if (command && CLIENT_COMMANDS.has(command)) return runClientCommand(command, rest);
  process.stderr.write(`${command ? `foreman: unknown command "${command}"\n\n` : ""}${USAGE}\n`);
  return 2;
}

process.exitCode = await main(process.argv.slice(2));
