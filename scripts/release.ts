// `bun run release [outdir]`: the four release binaries, one after another (a cross-compile is mostly
// I/O on a 112 MB file; parallel builds only contend), and SHA256SUMS in `sha256sum -c` format.
import { createHash } from "node:crypto";
import { mkdirSync } from "node:fs";
import { basename, join, resolve } from "node:path";
import { RELEASE_TARGETS, compile } from "./build";

const outdir = resolve(join(import.meta.dir, ".."), process.argv[2] ?? "dist");
mkdirSync(outdir, { recursive: true });

const sums: string[] = [];
for (const { target, name } of RELEASE_TARGETS) {
  const file = join(outdir, `foreman-${name}`);
  try {
    compile(file, target);
  } catch (error) {
    console.error(`release: ${(error as Error).message}`);
    process.exit(1);
  }
  const digest = createHash("sha256")
    .update(await Bun.file(file).bytes())
    .digest("hex");
  sums.push(`${digest}  ${basename(file)}\n`);
  console.log(`${file}  ${digest}`);
}
await Bun.write(join(outdir, "SHA256SUMS"), sums.join(""));
console.log(join(outdir, "SHA256SUMS"));
