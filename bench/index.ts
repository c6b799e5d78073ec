// `bun run bench`: every benchmark against the compiled binary, each beside its baseline in the same run
// (the target called directly; an empty queue), then issue #11's targets side by side. Writes the whole
// report, with the machine it ran on, to docs/benchmarks.md. `bun run bench <section>` runs one section
// and writes nothing.
import { join } from "node:path";
import { benchBatch } from "./batch";
import { benchBoundaries } from "./boundaries";
import { benchClaim } from "./claim";
import { benchEnqueue } from "./enqueue";
import { benchFair } from "./fair";
import { benchOverhead } from "./overhead";
import { benchNodeHop } from "./node-hop";
import { benchPgHttp } from "./pg-http";
import { benchSchedule } from "./schedule";
import { benchTargets } from "./targets";
import { machineInfo, updateReport } from "./report";
import { table, targets } from "./stats";

const ROOT = join(import.meta.dir, "..");
const only = process.argv[2];
const sections: Array<[string, () => Promise<string>]> = [
  ["overhead", benchOverhead],
  ["boundaries", benchBoundaries],
  ["enqueue", benchEnqueue],
  ["claim", benchClaim],
  ["schedule", benchSchedule],
  ["batch", benchBatch],
  ["targets", benchTargets],
  ["fair", benchFair],
  ["pg", benchPgHttp],
  ["hop", benchNodeHop],
];

// The process users run: the compiled binary, built from this tree.
const build = Bun.spawnSync(["bun", "run", "build"], { cwd: ROOT, stdout: "pipe", stderr: "pipe" });
if (build.exitCode !== 0) throw new Error(`bun run build failed:\n${build.stderr.toString()}`);
process.env.FOREMAN_BIN = join(ROOT, "dist", "foreman");

const started = performance.now();
const out: string[] = ["## bun run bench", "", `Run ${new Date().toISOString()} on:`, "", machineInfo(), ""];
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
  updateReport("bench", out.join("\n"));
  console.log("\nwritten to docs/benchmarks.md");
}
