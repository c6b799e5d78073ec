// A Bun macro (imported `with { type: "macro" }`): runs when foreman is bundled or transpiled, not when
// it serves. It bundles the page's TypeScript for the browser and reads its HTML and CSS, so the
// compiled binary carries the whole dashboard as four strings: no files beside it, no CDN.
import { readFileSync } from "node:fs";
import { join } from "node:path";

/** The dashboard page, its stylesheet, its script (bundled, minified) and foreman's icon (SVG). */
export interface UiAssets {
  html: string;
  css: string;
  js: string;
  icon: string;
}

/** Bundles src/ui/app.ts with the `bun build` CLI (a macro may not call Bun.build: the bundler waits on it). */
export function uiAssets(): UiAssets {
  const dir = import.meta.dir;
  const build = Bun.spawnSync([process.execPath, "build", join(dir, "app.ts"), "--target=browser", "--minify"], {
    stdout: "pipe",
    stderr: "pipe",
    env: { ...process.env, NO_COLOR: "1" },
  });
  if (build.exitCode !== 0) throw new Error(`bundling src/ui/app.ts failed:\n${build.stderr.toString()}`);
  const read = (name: string) => readFileSync(join(dir, name), "utf8");
  return { html: read("index.html"), css: read("style.css"), js: build.stdout.toString(), icon: read("favicon.svg") };
}
