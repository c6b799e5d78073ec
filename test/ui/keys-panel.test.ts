// The dashboard's Keys panel, in headless Chromium against the compiled binary: hidden while no key exists;
// once keys do, an admin's page lists every key with today's tokens, GPU time, jobs waiting and done (a
// running job counts as waiting, then as done with its GPU time); a client key's page lists its own line
// alone. Every wait is on the page's content, never on time.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { type Browser, type Page, chromium } from "playwright-core";
import { FakeOllama } from "../fake-ollama";
import { type ForemanProcess, foremanEnv, spawnForeman, tempDir } from "../harness";

const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const TOKEN = "keys-panel-token";
const ADMIN = { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" };

let fake: FakeOllama;
let foreman: ForemanProcess;
let dir: ReturnType<typeof tempDir>;
let browser: Browser;

beforeAll(async () => {
  fake = new FakeOllama({ tokenDelayMs: 2, models: ["llama3.2"] }).start();
  dir = tempDir();
  foreman = await spawnForeman(foremanEnv(fake.url, dir.path, { FOREMAN_TOKEN: TOKEN, FOREMAN_LOG_LEVEL: "warn" }));
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
});
afterAll(async () => {
  await browser?.close();
  foreman?.process.kill();
  await foreman?.process.exited;
  await fake?.stop();
  dir?.cleanup();
});

/** The dashboard, logged in with `secret`; script errors are collected. */
async function openAs(secret: string): Promise<{ page: Page; errors: string[] }> {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const errors: string[] = [];
  page.on("pageerror", (error) => errors.push(String(error)));
  await page.goto(`${foreman.url}/ui`);
  await page.locator("#login").waitFor();
  await page.fill("#token", secret);
  await page.click("#login button[type=submit]");
  await page.locator("#connection", { hasText: "live" }).waitFor();
  return { page, errors };
}

/** The Keys table as the page shows it: one array of cell texts per row. */
const keyRows = (page: Page) =>
  page
    .locator("#keys tbody tr")
    .evaluateAll((rows) => rows.map((row) => [...row.children].map((cell) => cell.textContent ?? "")));

async function createKey(name: string): Promise<string> {
  const made = await fetch(`${foreman.url}/admin/keys`, {
    method: "POST",
    headers: ADMIN,
    body: JSON.stringify({ name, role: "client" }),
  });
  expect(made.status).toBe(201);
  return ((await made.json()) as { secret: string }).secret;
}

test("hidden without keys; an admin sees each key's day, a client key its own line alone", async () => {
  const { page: admin, errors } = await openAs(TOKEN);
  // A snapshot has arrived (the queue line is drawn), and it carries no Keys lines: the panel stays hidden.
  await admin.locator("#queue-total", { hasText: "waiting" }).waitFor();
  expect(await admin.locator("#keys-section").isHidden()).toBe(true);

  const alice = await createKey("alice");
  await createKey("bob");
  const release = fake.hold(0);
  const submitted = await fetch(`${foreman.url}/jobs`, {
    method: "POST",
    headers: { authorization: `Bearer ${alice}` },
    body: JSON.stringify({ type: "generate", request: { model: "llama3.2", prompt: "one two three" } }),
  });
  expect(submitted.status).toBe(202);
  const { id } = (await submitted.json()) as { id: string };

  // While it runs: alice has one job waiting, nothing done yet.
  await admin.waitForFunction(() => document.querySelector('#keys tr[data-key="alice"] td:nth-child(4)')?.textContent === "1");
  expect(await admin.locator("#keys-section").isVisible()).toBe(true);
  expect(await keyRows(admin)).toEqual([
    ["alice", "0", "0 ms", "1", "0"],
    ["bob", "0", "0 ms", "0", "0"],
  ]);
  release();

  // Once it is done: its tokens and GPU time, as the admin API counts them.
  await admin.waitForFunction(() => document.querySelector('#keys tr[data-key="alice"] td:nth-child(5)')?.textContent === "1");
  const job = (await (await fetch(`${foreman.url}/jobs/${id}`, { headers: ADMIN })).json()) as { state: string };
  expect(job.state).toBe("done");
  const view = (await (await fetch(`${foreman.url}/admin/keys/alice`, { headers: ADMIN })).json()) as {
    today: { prompt_tokens: number; output_tokens: number; gpu_seconds: number };
  };
  expect(view.today.gpu_seconds).toBeGreaterThan(0);
  const [aliceRow, bobRow] = await keyRows(admin);
  expect(aliceRow![0]).toBe("alice");
  expect(Number(aliceRow![1]!.replace(/,/g, ""))).toBe(view.today.prompt_tokens + view.today.output_tokens);
  expect(aliceRow![2]).toMatch(/^\d+ ms$|^\d+\.\d s$/);
  expect(aliceRow![2]).not.toBe("0 ms");
  expect(aliceRow!.slice(3)).toEqual(["0", "1"]);
  expect(bobRow).toEqual(["bob", "0", "0 ms", "0", "0"]);

  // alice's own page: her line alone, never bob's.
  const { page: own, errors: ownErrors } = await openAs(alice);
  await own.locator('#keys tr[data-key="alice"]').waitFor();
  expect(await keyRows(own)).toEqual([aliceRow!]);
  expect(errors).toEqual([]);
  expect(ownErrors).toEqual([]);
  await admin.close();
  await own.close();
});
