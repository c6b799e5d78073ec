// `bun run build`, `build:darwin` and `release` all compile through here, so the flags cannot drift
// between the binary the tests run and the binaries users download.
import { join } from "node:path";

const ROOT = join(import.meta.dir, "..");

/**
 * Minify whitespace and syntax but not identifiers: Elysia's validators recognise TypeBox's
 * TransformDecodeError by its class name, and renamed classes made the binary skip query bounds (docs/building.md).
 */
export const BUILD_FLAGS = ["--compile", "--minify-whitespace", "--minify-syntax"] as const;

/** The server and its job-loop worker (a Bun Worker, started from inside the executable). */
export const ENTRY_POINTS = ["src/main.ts", "src/worker/index.ts"] as const;

/** Release targets: Bun's `--target` name and the suffix of the file name in dist/. */
export const RELEASE_TARGETS = [
  { target: "bun-darwin-arm64", name: "darwin-arm64" },
  { target: "bun-darwin-x64", name: "darwin-x64" },
  { target: "bun-linux-x64", name: "linux-x64" },
  { target: "bun-linux-arm64", name: "linux-arm64" },
] as const;

/** Compiles foreman to `outfile` (relative to the repository) for `target`, or for this machine without one; throws with Bun's output on failure. */
export function compile(outfile: string, target?: string): void {
  const args = [...BUILD_FLAGS, ...(target ? [`--target=${target}`] : []), ...ENTRY_POINTS, "--outfile", outfile];
  const build = Bun.spawnSync([process.execPath, "build", ...args], { cwd: ROOT, stdout: "pipe", stderr: "pipe" });
  if (build.exitCode !== 0) {
    const output = `${build.stdout.toString()}${build.stderr.toString()}`.trim();
    throw new Error(`bun build ${args.join(" ")} failed (exit ${build.exitCode}):\n${output}`);
  }
}

// `bun scripts/build.ts` builds dist/foreman; `bun scripts/build.ts darwin-arm64` builds dist/foreman-darwin-arm64.
if (import.meta.main) {
  const name = process.argv[2];
  const release = RELEASE_TARGETS.find((t) => t.name === name);
  if (name && !release) {
    console.error(`scripts/build.ts: unknown target "${name}"; one of ${RELEASE_TARGETS.map((t) => t.name).join(", ")}`);
    process.exit(2);
  }
  try {
    const outfile = release ? `dist/foreman-${release.name}` : "dist/foreman";
    compile(outfile, release?.target);
    console.log(outfile);
  } catch (error) {
    console.error((error as Error).message);
    process.exit(1);
  }
}
