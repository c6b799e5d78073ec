// docs/benchmarks.md is written in blocks, one per command (bench, fuzz, load, soak), each between
// `<!-- name -->` and `<!-- /name -->`: a command replaces its own block and keeps the others.
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { cpus, freemem, totalmem } from "node:os";
import { join } from "node:path";

const ROOT = join(import.meta.dir, "..");
const FILE = join(ROOT, "docs", "benchmarks.md");
const ORDER = ["bench", "fuzz", "load", "soak"];
const HEADER =
  "# foreman benchmarks\n\nWritten by `bun run bench`, `bun run fuzz`, `bun run load` and `bun run soak`, each into its own section.\n";

/** Replaces (or adds) the block of `name` in docs/benchmarks.md with `markdown`, then formats the file. */
export function updateReport(name: string, markdown: string): void {
  const old = existsSync(FILE) ? readFileSync(FILE, "utf8") : "";
  const blocks = new Map<string, string>();
  for (const match of old.matchAll(/<!-- (\w+) -->\n([\s\S]*?)<!-- \/\1 -->/g)) blocks.set(match[1]!, match[2]!);
  blocks.set(name, `${markdown.trim()}\n`);
  const names = [...ORDER.filter((n) => blocks.has(n)), ...[...blocks.keys()].filter((n) => !ORDER.includes(n))];
  writeFileSync(FILE, [HEADER, ...names.map((n) => `<!-- ${n} -->\n${blocks.get(n)}<!-- /${n} -->\n`)].join("\n"));
  // The repository's formatting check covers Markdown too.
  Bun.spawnSync(["bunx", "prettier", "--write", FILE], { cwd: ROOT, stdout: "ignore", stderr: "ignore" });
}

/** The machine a run is on, as a short Markdown list. */
export function machineInfo(): string {
  const release = existsSync("/etc/os-release")
    ? /PRETTY_NAME="([^"]+)"/.exec(readFileSync("/etc/os-release", "utf8"))?.[1]
    : undefined;
  const gb = (bytes: number) => `${(bytes / 1024 ** 3).toFixed(1)} GB`;
  const load = existsSync("/proc/loadavg") ? readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ") : "?";
  return [
    `- OS: ${`${process.platform} ${release ?? ""}`.trim()}`,
    `- CPU: ${cpus()[0]?.model ?? "unknown"}, ${navigator.hardwareConcurrency} cores`,
    `- memory: ${gb(totalmem())} (${gb(freemem())} free at start)`,
    `- Bun ${Bun.version}; load average at start ${load}`,
  ].join("\n");
}
