// The dashboard, in headless Chromium with no network beyond foreman: 30 jobs over three models drain
// live on the page model by model, the running job's token count moves, a queued job is canceled from
// the page, and screenshots (desktop and phone) show the parts the test expects. Runs the compiled
// binary with FOREMAN_TOKEN set, so the page must ask for the token.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import { type Browser, type Page, chromium } from "playwright-core";
import { FakeOllama } from "../fake-ollama";
import { type ForemanProcess, foremanEnv, spawnForeman, tempDir, until } from "../harness";

/** Debian's Chromium (apt-get install chromium); .ci/run installs it. Override with CHROMIUM_PATH. */
const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const TOKEN = "dashboard-token";
const MODELS = ["llama3.2", "qwen3", "mistral"];
/** A model name that is markup: the page must show it as text. */
const HOSTILE = `<img src=x onerror="document.body.dataset.pwned=1">`;
const auth = { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" };

let fake: FakeOllama;
let foreman: ForemanProcess;
let dir: ReturnType<typeof tempDir>;
let browser: Browser;

beforeAll(async () => {
  // 30 tokens at 10 ms: each job runs about 0.3 s, so the 30 drain in about ten seconds, slow enough to watch.
  fake = new FakeOllama({ tokenDelayMs: 10, loadDelayMs: 150, models: [...MODELS, HOSTILE] }).start();
  dir = tempDir();
  foreman = await spawnForeman(foremanEnv(fake.url, dir.path, { FOREMAN_TOKEN: TOKEN, FOREMAN_LOG_LEVEL: "error" }));
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
});
afterAll(async () => {
  await browser?.close();
  foreman?.process.kill();
  await foreman?.process.exited;
  await fake?.stop();
  dir?.cleanup();
});

/** What the page showed as running, each time it changed. */
interface Seen {
  id: string | null;
  model: string | null;
  tokens: number | null;
}

/** Records the running job the page shows (its model, id and token count) on every change of #running. */
async function recordRunning(page: Page): Promise<() => Promise<Seen[]>> {
  await page.evaluate(() => {
    const log: Seen[] = [];
    (window as unknown as { seen: Seen[] }).seen = log;
    const box = document.getElementById("running")!;
    const read = () => {
      const running = box.querySelector<HTMLElement>(".running");
      const tokens = document.getElementById("tokens")?.textContent;
      const entry = {
        id: running?.dataset.id ?? null,
        model: running?.dataset.model ?? null,
        tokens: tokens ? Number(tokens) : null,
      };
      const last = log[log.length - 1];
      if (!last || last.id !== entry.id || last.tokens !== entry.tokens) log.push(entry);
    };
    new MutationObserver(read).observe(box, { childList: true, subtree: true, characterData: true });
    read();
  });
  return () => page.evaluate(() => (window as unknown as { seen: Seen[] }).seen);
}

/** A page on /ui that refuses (and remembers) anything off foreman's origin, and remembers script errors. */
async function openDashboard() {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const origin = new URL(foreman.url).origin;
  const offOrigin: string[] = [];
  const requested: string[] = [];
  const errors: string[] = [];
  page.on("pageerror", (error) => errors.push(String(error)));
  // The first feed request is refused (no token yet): that 401 is the page asking, not an error.
  page.on("console", (message) => {
    if (message.type() === "error" && !message.text().includes("status of 401")) errors.push(message.text());
  });
  // No network: anything not served by foreman itself is refused and remembered.
  await page.route("**", (route) => {
    const url = route.request().url();
    requested.push(url);
    if (new URL(url).origin === origin) return route.continue();
    offOrigin.push(url);
    return route.abort();
  });
  // The page holds no data: it loads without the token, then asks for it.
  const response = await page.goto(`${foreman.url}/ui`);
  expect(response?.status()).toBe(200);
  await page.locator("#login").waitFor();
  await page.fill("#token", TOKEN);
  await page.click("#login button[type=submit]");
  await page.locator("#connection", { hasText: "live" }).waitFor();
  expect(await page.evaluate(() => localStorage.getItem("foreman.token"))).toBe(TOKEN);
  return { page, origin, offOrigin, requested, errors };
}

const submit = async (model: string, tokens: number) => {
  const submitted = await fetch(`${foreman.url}/jobs`, {
    method: "POST",
    headers: auth,
    body: JSON.stringify({ type: "generate", request: { model, prompt: "x", options: { num_predict: tokens } } }),
  });
  expect(submitted.status).toBe(202);
  return ((await submitted.json()) as { id: string }).id;
};

/** A screenshot saved in the test's folder: a real PNG of some size. */
async function screenshot(page: Page, name: string): Promise<string> {
  const path = join(dir.path, name);
  await page.screenshot({ path, fullPage: true });
  const bytes = new Uint8Array(await Bun.file(path).arrayBuffer());
  expect([...bytes.slice(0, 8)]).toEqual([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  expect(bytes.length).toBeGreaterThan(10_000);
  if (process.env.DASHBOARD_SCREENSHOTS) await Bun.write(join(process.env.DASHBOARD_SCREENSHOTS, name), bytes);
  return path;
}

const jobState = async (id: string) =>
  ((await (await fetch(`${foreman.url}/jobs/${id}`, { headers: auth })).json()) as { state: string }).state;

test("30 jobs over three models drain live on /ui, model by model, and one is canceled from the page", async () => {
  const { page, origin, offOrigin, requested, errors } = await openDashboard();
  await page.locator("#running .empty").waitFor();
  const seen = await recordRunning(page);

  // 30 jobs, the models interleaved: FIFO would swap on every job, drain-by-model swaps twice.
  const ids: string[] = [];
  for (let i = 0; i < 30; i++) ids.push(await submit(MODELS[i % MODELS.length]!, 30));

  // The queue shows up grouped by model, with each job's wait, priority and source and a cancel button.
  // (The last model runs last: its ten jobs are all still waiting once the page has seen every submission.)
  const lastGroup = page.locator(`#queue .group[data-model="${MODELS[2]}:latest"][data-count="10"]`);
  await lastGroup.waitFor();
  await page.locator("#running .running[data-state=working]").waitFor();
  expect(await lastGroup.locator("li.job").count()).toBe(10);
  expect(await lastGroup.locator("li.job").first().textContent()).toMatch(/waits .*prio 0.*jobs/);

  // Cancel the last model's first job from the page: it ends canceled, and the page says so.
  const victim = (await lastGroup.locator("li.job").first().getAttribute("data-id"))!;
  await page.locator(`#queue li.job[data-id="${victim}"] button.cancel`).click();
  await until(async () => (await jobState(victim)) === "canceled", 10_000, "the job canceled from the page to end canceled");
  await page.locator(`#recent tr[data-id="${victim}"][data-state=canceled]`).waitFor();
  expect(await page.locator(`#queue li.job[data-id="${victim}"]`).count()).toBe(0);

  await screenshot(page, "dashboard-desktop.png");

  // Phone-sized: the same page, readable without sideways scrolling of the page itself.
  await page.setViewportSize({ width: 390, height: 844 });
  await screenshot(page, "dashboard-phone.png");
  expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(390);
  await page.setViewportSize({ width: 1280, height: 900 });

  // The queue drains completely, live.
  await page.locator("#queue-total", { hasText: /^0 waiting$/ }).waitFor({ timeout: 30_000 });
  await page.locator("#running .empty").waitFor({ timeout: 10_000 });
  const states = await Promise.all(ids.map(jobState));
  expect(states.filter((s) => s === "done").length).toBe(29);
  expect(states.filter((s) => s === "canceled")).toEqual(["canceled"]);
  await screenshot(page, "dashboard-drained.png");
  expect(await page.locator("#recent tbody tr").count()).toBe(20);
  expect(await page.locator("#hour-totals").textContent()).toMatch(/^29 done, 3 model swaps/);
  expect(await page.locator("#chart svg.chart rect.done").count()).toBeGreaterThan(0);
  expect(await page.locator("#chart svg.chart rect.swap").count()).toBeGreaterThan(0);

  // Model by model: the running model the page showed changed twice (three groups, no guard promotions),
  // in the order Ollama served them.
  const log = await seen();
  const models = log.map((entry) => entry.model).filter((model): model is string => model !== null);
  const runs = models.filter((model, i) => model !== models[i - 1]);
  expect(runs).toEqual(MODELS.map((model) => `${model}:latest`));
  const served = fake.seen.map((request) => request.key);
  expect(served.filter((model, i) => model !== served[i - 1])).toEqual(runs);
  // The running job's token count moved while it ran: some job was seen with two or more counts, rising.
  const counts = new Map<string, number[]>();
  for (const entry of log)
    if (entry.id && entry.tokens !== null) counts.set(entry.id, [...(counts.get(entry.id) ?? []), entry.tokens]);
  const moving = [...counts.values()].filter((values) => new Set(values).size >= 2);
  expect(moving.length).toBeGreaterThan(0);
  for (const values of moving) expect(values).toEqual([...values].sort((a, b) => a - b));

  expect(offOrigin).toEqual([]);
  expect(requested.every((url) => new URL(url).origin === origin)).toBe(true);
  expect(errors).toEqual([]);
  await page.close();
}, 60_000);

test("a model name that is markup shows as text, and runs nothing", async () => {
  const { page, offOrigin, errors } = await openDashboard();
  const blocker = await submit(MODELS[0]!, 400);
  const hostile = await submit(HOSTILE, 5);
  const group = page.locator("#queue .group").filter({ has: page.locator("h3", { hasText: HOSTILE }) });
  await group.waitFor();
  expect(await group.getAttribute("data-model")).toBe(`${HOSTILE}:latest`);
  expect(await page.locator("#queue img, #running img, #recent img").count()).toBe(0);
  expect(await page.evaluate(() => document.body.dataset.pwned)).toBeUndefined();
  for (const id of [hostile, blocker])
    expect((await fetch(`${foreman.url}/jobs/${id}`, { method: "DELETE", headers: auth })).status).toBe(200);
  await page.locator("#queue-total", { hasText: /^0 waiting$/ }).waitFor();
  expect(offOrigin).toEqual([]);
  expect(errors).toEqual([]);
  await page.close();
}, 30_000);
