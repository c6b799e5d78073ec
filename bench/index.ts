// `bun run bench`: every benchmark against the compiled binary, each beside its baseline in the same run
// (the target called directly; an empty queue), then issue #11's targets side by side. Writes the whole
// report, with the machine it ran on, to docs/benchmarks.md. `bun run bench <section>` runs one section
// and writes nothing.
import { cpus, freemem, totalmem } from "node:os";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { benchClaim } from "./claim";
import { benchEnqueue } from "./enqueue";
import { benchOverhead } from "./overhead";
import { benchSchedule } from "./schedule";
import { table, targets } from "./stats";

const ROOT = join(import.meta.dir, "..");
const only = process.argv[2];
const sections: Array<[string, () => Promise<string>]> = [
  ["overhead", benchOverhead],
  ["enqueue", benchEnqueue],
  ["claim", benchClaim],
  ["schedule", benchSchedule],
];

// The process users run: the compiled binary, built from this tree.
const build = Bun.spawnSync(["bun", "run", "build"], { cwd: ROOT, stdout: "pipe", stderr: "pipe" });
if (build.exitCode !== 0) throw new Error(`bun run build failed:\n${build.stderr.toString()}`);
process.env.FOREMAN_BIN = join(ROOT, "dist", "foreman");

function machine(): string {
  const release = existsSync("/etc/os-release")
    ? /PRETTY_NAME="([^"]+)"/.exec(readFileSync("/etc/os-release", "utf8"))?.[1]
    : undefined;
  const os = `${process.platform} ${release ?? ""}`.trim();
  const gb = (bytes: number) => `${(bytes / 1024 ** 3).toFixed(1)} GB`;
  const load = readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ");
  return [
    `- OS: ${os}`,
    `- CPU: ${cpus()[0]?.model ?? "unknown"}, ${navigator.hardwareConcurrency} cores`,
    `- memory: ${gb(totalmem())} (${gb(freemem())} free at start)`,
    `- Bun ${Bun.version}; load average at start ${load}`,
  ].join("\n");
}

const started = performance.now();
const out: string[] = [`# foreman benchmarks`, "", `Run ${new Date().toISOString()} by \`bun run bench\` on:`, "", machine(), ""];
console.log(out.join("\n"));
for (const [name, run] of sections) {
  if (only && only !== name) continue;
  const text = await run();
  console.log(`${text}\n`);
  out.push(text, "");
}
const summary = [
  "### Issue #11's targets",
  "",
  table(
    ["target", "this run", "goal", "met"],
    targets.map((t) => [t.target, t.figure, t.goal, t.met ? "yes" : "no"]),
  ),
  "",
  `The whole run took ${((performance.now() - started) / 1000).toFixed(0)} s. Figures from a busy machine are noisy; compare runs on a quiet one.`,
];
console.log(summary.join("\n"));
if (!only) {
  out.push(...summary, "");
  writeFileSync(join(ROOT, "docs", "benchmarks.md"), out.join("\n"));
  // The repository's formatting check covers Markdown too.
  Bun.spawnSync(["bunx", "prettier", "--write", "docs/benchmarks.md"], { cwd: ROOT, stdout: "ignore" });
  console.log("\nwritten to docs/benchmarks.md");
}
