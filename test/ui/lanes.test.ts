// The dashboard with several Ollama targets, in headless Chromium: a lane per GPU that shows where each
// job runs, and a target that stops answering marked on its own lane while the others keep working.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { type Browser, chromium } from "playwright-core";
import { FakeOllama } from "../fake-ollama";
import { type ForemanProcess, foremanEnv, spawnForeman, tempDir } from "../harness";

const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";

let a: FakeOllama;
let b: FakeOllama;
let foreman: ForemanProcess;
let dir: ReturnType<typeof tempDir>;
let browser: Browser;

beforeAll(async () => {
  a = new FakeOllama({ models: ["llama3.2"] }).start();
  b = new FakeOllama({ models: ["qwen3"] }).start();
  dir = tempDir();
  foreman = await spawnForeman(foremanEnv(`a=${a.url},b=${b.url}`, dir.path, { FOREMAN_LOG_LEVEL: "warn" }));
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
});
afterAll(async () => {
  await browser?.close();
  foreman?.process.kill();
  await foreman?.process.exited;
  await a?.stop();
  await b?.stop();
  dir?.cleanup();
});

test("a lane per target: the job shows on the GPU running it; a target that goes away is marked alone", async () => {
  const page = await browser.newPage();
  const errors: string[] = [];
  page.on("pageerror", (error) => errors.push(String(error)));
  await page.goto(`${foreman.url}/ui`);
  await page.locator("#connection", { hasText: "live" }).waitFor();
  await page.waitForFunction(() => document.querySelectorAll("#lanes .lane").length === 2);
  expect(await page.locator("#lanes .lane").evaluateAll((lanes) => lanes.map((l) => (l as HTMLElement).dataset.target))).toEqual([
    "a",
    "b",
  ]);

  const release = b.hold(1);
  const submitted = await fetch(`${foreman.url}/jobs`, {
    method: "POST",
    body: JSON.stringify({ type: "generate", request: { model: "qwen3", prompt: "one two three" } }),
  });
  const { id } = (await submitted.json()) as { id: string };
  await page.waitForFunction((id) => !!document.querySelector(`#lanes .lane[data-target="b"] li[data-id="${id}"]`), id);
  expect(await page.locator('#lanes .lane[data-target="a"] .empty').textContent()).toBe("Idle.");
  expect(await page.locator('#lanes .lane[data-target="b"] .slots').textContent()).toBe("1/1 slots");
  release();
  await page.waitForFunction(() => !document.querySelector('#lanes .lane[data-target="b"] li'));

  // One job on each GPU at once: each lane shows its own (the Running card has room for one).
  const releases = [a.hold(0), b.hold(0)];
  const both = await Promise.all(
    [
      ["llama3.2", "a"],
      ["qwen3", "b"],
    ].map(async ([model, target]) => {
      const answer = await fetch(`${foreman.url}/jobs`, {
        method: "POST",
        body: JSON.stringify({ type: "generate", request: { model, prompt: "four five six" } }),
      });
      return { id: ((await answer.json()) as { id: string }).id, target: target! };
    }),
  );
  await page.waitForFunction(
    (both) =>
      both.every(({ id, target }) => !!document.querySelector(`#lanes .lane[data-target="${target}"] li[data-id="${id}"]`)),
    both,
  );
  expect(await page.locator("#lanes .lane li").count()).toBe(2);
  for (const open of releases) open();
  await page.waitForFunction(() => !document.querySelector("#lanes .lane li"));

  await a.stop();
  await page.waitForFunction(
    () => document.querySelector<HTMLElement>('#lanes .lane[data-target="a"]')?.dataset.reachable === "false",
  );
  expect(await page.locator('#lanes .lane[data-target="b"]').getAttribute("data-reachable")).toBe("true");
  // Degraded only when no target answers: the page's pill still says Ollama is reachable.
  expect(await page.locator("#ollama").textContent()).toBe("Ollama reachable");
  a.start();
  await page.waitForFunction(
    () => document.querySelector<HTMLElement>('#lanes .lane[data-target="a"]')?.dataset.reachable === "true",
  );
  expect(errors).toEqual([]);
}, 60_000);
