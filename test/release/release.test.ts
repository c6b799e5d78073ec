// `bun run release`: four executables and SHA256SUMS, each file the format its name promises (read from
// its header, not from file(1)), and the one this machine can run answers --version.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { readFileSync, statSync } from "node:fs";
import { arch, platform } from "node:os";
import { join } from "node:path";
import pkg from "../../package.json";
import { tempDir } from "../harness";

const ROOT = join(import.meta.dir, "../..");

type Format = { kind: "Mach-O" | "ELF"; cpu: "arm64" | "x86-64" | "other"; codeSigned?: boolean };

/** Reads the executable's header: 64-bit little-endian Mach-O or ELF, its CPU, and for Mach-O whether it carries a code signature. */
function executableFormat(bytes: Uint8Array): Format | undefined {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.getUint32(0, true) === 0xfeedfacf) {
    const cputype = view.getUint32(4, true);
    // CPU_TYPE_ARM64 = CPU_TYPE_ARM (12) | CPU_ARCH_ABI64; CPU_TYPE_X86_64 = 7 | CPU_ARCH_ABI64.
    const cpu = cputype === 0x0100000c ? "arm64" : cputype === 0x01000007 ? "x86-64" : "other";
    // Apple Silicon refuses to run an arm64 binary without a signature (LC_CODE_SIGNATURE, 0x1d).
    let offset = 32;
    let codeSigned = false;
    for (let i = 0, n = view.getUint32(16, true); i < n; i++) {
      if (view.getUint32(offset, true) === 0x1d) codeSigned = true;
      offset += view.getUint32(offset + 4, true);
    }
    return { kind: "Mach-O", cpu, codeSigned };
  }
  const elf = bytes[0] === 0x7f && bytes[1] === 0x45 && bytes[2] === 0x4c && bytes[3] === 0x46;
  // ELFCLASS64 and little-endian; e_machine at 18: EM_X86_64 = 62, EM_AARCH64 = 183.
  if (elf && bytes[4] === 2 && bytes[5] === 1) {
    const machine = view.getUint16(18, true);
    return { kind: "ELF", cpu: machine === 62 ? "x86-64" : machine === 183 ? "arm64" : "other" };
  }
  return undefined;
}

const EXPECTED: Record<string, Format> = {
  "foreman-darwin-arm64": { kind: "Mach-O", cpu: "arm64", codeSigned: true },
  "foreman-darwin-x64": { kind: "Mach-O", cpu: "x86-64", codeSigned: true },
  "foreman-linux-x64": { kind: "ELF", cpu: "x86-64" },
  "foreman-linux-arm64": { kind: "ELF", cpu: "arm64" },
};

describe("bun run release", () => {
  const dir = tempDir();
  let build: { exitCode: number | null; output: string };

  beforeAll(() => {
    const child = Bun.spawnSync(["bun", "run", "release", dir.path], { cwd: ROOT, stdout: "pipe", stderr: "pipe" });
    build = { exitCode: child.exitCode, output: `${child.stdout}${child.stderr}` };
  }, 300_000); // four cross-compiles, one after another
  afterAll(() => dir.cleanup());

  test("builds the four executables and SHA256SUMS that match them", () => {
    expect(build.exitCode, build.output).toBe(0);
    const sums = readFileSync(join(dir.path, "SHA256SUMS"), "utf8");
    const lines = sums.trimEnd().split("\n");
    expect(lines.map((line) => line.split("  ")[1])).toEqual(Object.keys(EXPECTED));
    for (const line of lines) {
      // `sha256sum -c SHA256SUMS` format: hex digest, two spaces, file name.
      const [, digest, name] = /^([0-9a-f]{64}) {2}(\S+)$/.exec(line) ?? [];
      const bytes = readFileSync(join(dir.path, name!));
      expect(createHash("sha256").update(bytes).digest("hex"), name).toBe(digest!);
      expect(statSync(join(dir.path, name!)).mode & 0o111, `${name} is executable`).toBe(0o111);
    }
  });

  test("each executable is the format and CPU its name says", () => {
    for (const [name, expected] of Object.entries(EXPECTED)) {
      const header = readFileSync(join(dir.path, name)).subarray(0, 64 * 1024);
      expect(executableFormat(header), name).toEqual(expected);
    }
  });

  test.skipIf(platform() !== "linux" || arch() !== "x64")("the linux-x64 executable runs here", () => {
    const run = Bun.spawnSync([join(dir.path, "foreman-linux-x64"), "--version"], { stdout: "pipe", stderr: "pipe" });
    expect(run.stderr.toString()).toBe("");
    expect(run.stdout.toString()).toBe(`foreman ${pkg.version}\n`);
    expect(run.exitCode).toBe(0);
  });
});
