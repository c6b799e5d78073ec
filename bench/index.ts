// `bun run bench`: every benchmark, each comparing against its baseline in the same run.
import { benchBatch } from "./batch";
import { benchClaim } from "./claim";
import { benchOverhead } from "./overhead";
import { benchSchedule } from "./schedule";

const only = process.argv[2];
const sections: Array<[string, () => Promise<string>]> = [
  ["overhead", benchOverhead],
  ["claim", benchClaim],
  ["schedule", benchSchedule],
  ["batch", benchBatch],
];
console.log(`# foreman benchmarks (${new Date().toISOString()}, bun ${Bun.version}, ${navigator.hardwareConcurrency} cores)\n`);
for (const [name, run] of sections) {
  if (only && only !== name) continue;
  console.log(`${await run()}\n`);
}
