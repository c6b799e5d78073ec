// `bun run test [bun test arguments]`: the README's test command. Some tests need programs from Debian rather
// than npm: the Swagger and dashboard pages open in Chromium (through playwright-core, which downloads no
// browser), the metrics test checks GET /metrics with promtool (Debian's prometheus package), and the
// PostgreSQL engine's tests start a throwaway cluster with initdb and pg_ctl (Debian's postgresql package). This
// installs whichever is missing when it can (apt-get, as root), says what to install when it cannot, and
// then runs `bun test --timeout 120000` with the arguments given, so `bun run test test/some.test.ts` works.
// A missing tool skips nothing: the tests that need it fail and say why.
import { existsSync } from "node:fs";
import { pgBinDir } from "../test/pg-cluster";

interface Tool {
  /** What it is called in a message. */
  name: string;
  /** The Debian package that provides it. */
  pkg: string;
  /** Which tests need it. */
  neededBy: string;
  present(): boolean;
  /** What to do when it cannot be installed here. */
  advice: string;
}

const chromium = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";

const TOOLS: Tool[] = [
  {
    name: `chromium (${chromium})`,
    pkg: "chromium",
    neededBy: "the Swagger and dashboard page tests",
    present: () => existsSync(chromium),
    advice: "install Debian's chromium package, or point CHROMIUM_PATH at a Chromium",
  },
  {
    name: "promtool",
    pkg: "prometheus",
    neededBy: "the metrics test",
    present: () => Bun.which("promtool") !== null,
    advice: "install Debian's prometheus package, or put a promtool on the PATH",
  },
  {
    name: "PostgreSQL's server (initdb, pg_ctl)",
    pkg: "postgresql",
    neededBy: "the PostgreSQL queue engine's tests (each starts a throwaway cluster)",
    present: () => pgBinDir() !== null,
    advice: "install Debian's postgresql package, or point PG_BIN at a folder holding initdb and pg_ctl",
  },
];

/** Installs the missing tools with apt-get when this is a Debian-like machine and we are root; true if it ran. */
function aptInstall(packages: string[]): boolean {
  if (!Bun.which("apt-get") || process.getuid?.() !== 0) return false;
  console.error(`scripts/test.ts: installing ${packages.join(", ")} (apt-get)`);
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  for (const args of [
    ["update", "-qq"],
    ["install", "-y", "-qq", ...packages],
  ]) {
    const run = Bun.spawnSync(["apt-get", ...args], { env, stdout: "ignore", stderr: "inherit" });
    if (run.exitCode !== 0) {
      console.error(`scripts/test.ts: apt-get ${args.join(" ")} failed (exit ${run.exitCode})`);
      return true;
    }
  }
  return true;
}

let missing = TOOLS.filter((tool) => !tool.present());
// An explicit CHROMIUM_PATH is the user's choice of browser: say it is missing rather than install another.
const installable = missing.filter((tool) => tool.pkg !== "chromium" || !process.env.CHROMIUM_PATH);
if (installable.length && aptInstall(installable.map((tool) => tool.pkg))) missing = TOOLS.filter((tool) => !tool.present());
for (const tool of missing) {
  const sudo = Bun.which("apt-get") ? ` (sudo apt-get install -y ${tool.pkg})` : "";
  console.error(`scripts/test.ts: ${tool.name} is missing, so ${tool.neededBy} will fail: ${tool.advice}${sudo}`);
}

const test = Bun.spawn([process.execPath, "test", "--timeout", "120000", ...process.argv.slice(2)], {
  stdio: ["inherit", "inherit", "inherit"],
});
// Ctrl-C reaches bun test too (same process group); wait for it to finish rather than leave it orphaned.
process.on("SIGINT", () => {});
process.exit(await test.exited);
