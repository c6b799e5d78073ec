import { parseArgs } from "node:util";
import { CliError } from "./api-client";

/** Misuse of the command line: exit 2 with the message. */
export function usage(message: string): never {
  throw new CliError(message, 2);
}

/**
 * The one id a subcommand takes (and its --json flag), checked against the id's shape before any request,
 * so misuse exits 2 rather than being refused by the server.
 */
export function oneId(
  args: string[],
  expect: { command: string; kind: string; pattern: RegExp; shape: string; flags?: readonly string[] },
): { id: string; json: boolean; flags: Set<string> } {
  const { values, positionals } = parseArgs({
    args,
    strict: true,
    allowPositionals: true,
    options: Object.fromEntries(["json", ...(expect.flags ?? [])].map((flag) => [flag, { type: "boolean" as const }])),
  });
  if (positionals.length !== 1) usage(`${expect.command} takes one ${expect.kind} id`);
  const id = positionals[0]!;
  if (!expect.pattern.test(id)) usage(`a ${expect.kind} id is ${expect.shape}, not "${id}"`);
  return { id, json: Boolean(values.json), flags: new Set((expect.flags ?? []).filter((flag) => values[flag])) };
}
