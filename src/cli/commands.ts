/** Subcommands that talk to a running server. */
export const CLIENT_COMMANDS = new Set<string>();
export const CLIENT_USAGE = "";
export async function runClientCommand(_command: string, _args: string[]): Promise<number> {
  return 2;
}
