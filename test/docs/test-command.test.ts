// The README's test command, `bun run test`, on a machine where it cannot install Chromium and promtool
// (here: no apt-get on the PATH, an explicit CHROMIUM_PATH that does not exist): it says what is missing,
// which tests will fail and what to install, and still runs the tests it was given.
import { expect, test } from "bun:test";
import { mkdtempSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const ROOT = join(import.meta.dir, "..", "..");

test("names each missing tool and what to install, then runs the tests given", async () => {
  const bin = mkdtempSync(join(tmpdir(), "foreman-path-"));
  try {
    symlinkSync(process.execPath, join(bin, "bun"));
    const child = Bun.spawn(["bun", "run", "test", "test/log.test.ts"], {
      cwd: ROOT,
      env: { ...process.env, PATH: bin, CHROMIUM_PATH: join(bin, "no-chromium") },
      stdout: "pipe",
      stderr: "pipe",
    });
    const [stderr, code] = await Promise.all([
      new Response(child.stderr).text(),
      child.exited,
      new Response(child.stdout).text(),
    ]);
    expect(stderr).toContain(
      `scripts/test.ts: chromium (${join(bin, "no-chromium")}) is missing, so the Swagger and dashboard page tests will fail`,
    );
    expect(stderr).toContain("scripts/test.ts: promtool is missing, so the metrics test will fail");
    expect(stderr).not.toContain("installing");
    // The test file given ran (and passed).
    expect(stderr).toMatch(/\d+ pass\n\s*0 fail/);
    expect(stderr).toContain("across 1 file");
    expect(code).toBe(0);
  } finally {
    rmSync(bin, { recursive: true, force: true });
  }
});
