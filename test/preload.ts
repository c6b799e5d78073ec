// Runs once before `bun test` loads any test file (bunfig.toml): builds the single executable with the
// package.json build script, so the end-to-end tests drive what users run, and hands its path to
// test/harness.ts through FOREMAN_BIN. Quiet when the build works; a failed build stops the run.
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";

const ROOT = join(import.meta.dir, "..");

if (!process.env.FOREMAN_BIN) {
  const build = Bun.spawnSync(["bun", "run", "build"], { cwd: ROOT, stdout: "pipe", stderr: "pipe" });
  const binary = join(ROOT, "dist", "foreman");
  if (build.exitCode !== 0 || !existsSync(binary)) {
    const output = `${build.stdout.toString()}${build.stderr.toString()}`.trim();
    console.error(`test/preload.ts: \`bun run build\` failed (exit ${build.exitCode}); no binary to test:\n${output}`);
    process.exit(1);
  }
  process.env.FOREMAN_BIN = binary;
} else if (process.env.FOREMAN_BIN !== "source") {
  const binary = resolve(process.env.FOREMAN_BIN);
  if (!existsSync(binary)) {
    console.error(`test/preload.ts: FOREMAN_BIN=${process.env.FOREMAN_BIN}: no such file (a foreman binary, or "source")`);
    process.exit(1);
  }
  process.env.FOREMAN_BIN = binary;
}
