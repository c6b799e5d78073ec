// The Swagger page renders in headless Chromium with no network at all beyond foreman itself, and
// lists every job route with its schema.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import { type Browser, chromium } from "playwright-core";
import { type Stack, startStack } from "../harness";

/** Debian's Chromium (apt-get install chromium); .ci/run installs it. Override with CHROMIUM_PATH. */
const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";

let stack: Stack;
let browser: Browser;

beforeAll(async () => {
  stack = await startStack({ env: { FOREMAN_TOKEN: "docs-token" } });
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
});
afterAll(async () => {
  await browser?.close();
  await stack.stop();
});

test("/swagger renders offline and lists every job route with its schema", async () => {
  const page = await browser.newPage({ viewport: { width: 1280, height: 2400 } });
  const origin = new URL(stack.foreman.url).origin;
  const blocked: string[] = [];
  // No network: anything not served by foreman itself is refused and remembered.
  await page.route("**/*", (route) => {
    if (new URL(route.request().url()).origin === origin) return route.continue();
    blocked.push(route.request().url());
    return route.abort();
  });
  const response = await page.goto(`${stack.foreman.url}/swagger`);
  expect(response?.status()).toBe(200);
  await page.waitForSelector(".opblock-summary-path", { timeout: 30_000 });

  const operations = await page.$$eval(".opblock-summary", (nodes) =>
    nodes.map(
      (node) =>
        `${node.querySelector(".opblock-summary-method")?.textContent} ${node.querySelector(".opblock-summary-path")?.getAttribute("data-path")}`,
    ),
  );
  for (const route of [
    "POST /jobs",
    "GET /jobs",
    "GET /jobs/{id}",
    "DELETE /jobs/{id}",
    "GET /jobs/{id}/events",
    "GET /jobs/{id}/artifacts",
    "GET /jobs/{id}/artifacts/{name}",
    "GET /queue",
  ]) {
    expect(operations).toContain(route);
  }
  expect(await page.textContent(".info .title")).toContain("foreman");
  // Markdown: the paths read as written, not as italics between two asterisks.
  expect(await page.textContent(".info")).toContain(
    "Ollama's own API (/api/*) and the OpenAI and Anthropic APIs it serves (/v1/*)",
  );
  expect(await page.locator(".info em").count()).toBe(0);
  // The page links foreman's icon, and it is there (it was a 404). Fetched from here: under page.route,
  // Chromium fails a page's fetch of its own icon.
  const href = await page.evaluate(() => document.querySelector<HTMLLinkElement>('link[rel="icon"]')?.href);
  expect(new URL(href!).pathname).toBe("/favicon.ico");
  const icon = await fetch(href!);
  expect([icon.status, icon.headers.get("content-type")]).toEqual([200, "image/svg+xml"]);

  // Open POST /jobs: its summary, and the request body's schema with every field.
  const submit = page.locator(".opblock-post", { hasText: "/jobs" }).first();
  await submit.locator(".opblock-summary").click();
  expect(await submit.locator(".opblock-summary-description").textContent()).toBe("Submit a job");
  await submit.locator(".opblock-description-wrapper").first().waitFor();
  expect(await submit.locator(".opblock-description-wrapper").first().textContent()).toContain(
    "Queues an Ollama chat or generate request",
  );
  // The Schema tab of the request body shows the model with every field.
  const requestBody = submit.locator(".opblock-section-request-body");
  await requestBody.locator("button.tablinks", { hasText: "Schema" }).click();
  await requestBody.locator(".model-box").first().waitFor();
  const schemaText = (await requestBody.textContent()) ?? "";
  for (const field of ["type", "request", "priority", "webhook", "idempotency_key"]) expect(schemaText).toContain(field);

  const shot = join(stack.dir, "swagger.png");
  await page.screenshot({ path: shot, fullPage: false });
  expect(Bun.file(shot).size).toBeGreaterThan(10_000);
  if (process.env.SWAGGER_SCREENSHOT) await Bun.write(process.env.SWAGGER_SCREENSHOT, Bun.file(shot));
  expect(blocked).toEqual([]);
}, 60_000);

test("/swagger/ (trailing slash) loads the document too, and Try it out on /api/chat opens a body editor with the example", async () => {
  const page = await browser.newPage({ viewport: { width: 1280, height: 2400 } });
  // No token: the page and its document are public.
  const response = await page.goto(`${stack.foreman.url}/swagger/`);
  expect(response?.status()).toBe(200);
  await page.waitForSelector(".opblock-summary-path", { timeout: 30_000 });
  expect(await page.locator(".errors-wrapper").count()).toBe(0);

  const chat = page.locator(".opblock-post", { has: page.locator('[data-path="/api/chat"]') }).first();
  await chat.locator(".opblock-summary").click();
  await chat.locator("button.try-out__btn").click();
  const editor = chat.locator("textarea.body-param__text");
  await editor.waitFor();
  const body = JSON.parse(await editor.inputValue());
  expect(body).toEqual({
    model: "llama3.2",
    messages: [{ role: "user", content: "Why is the sky blue? One sentence." }],
    stream: false,
  });
  await page.close();
}, 60_000);

test("X-Foreman-Target: Swagger documents it on the management routes, and a browser's preflight for it is allowed", async () => {
  const page = await browser.newPage({ viewport: { width: 1280, height: 2400 } });
  await page.goto(`${stack.foreman.url}/swagger`);
  await page.waitForSelector(".opblock-summary-path", { timeout: 30_000 });
  const pull = page.locator(".opblock-post", { has: page.locator('[data-path="/api/pull"]') }).first();
  await pull.locator(".opblock-summary").click();
  const parameter = pull.locator(".parameters tr", { hasText: "X-Foreman-Target" });
  await parameter.waitFor();
  expect(await parameter.textContent()).toContain("header");

  // A page on another origin (127.0.0.1 calling localhost, both loopback, allowed as Ollama allows them) sends
  // the header: the browser asks first (a custom header), and the request goes through only if the preflight
  // lists it.
  const other = stack.foreman.url.replace("127.0.0.1", "localhost");
  const answer = await page.evaluate(async (url) => {
    try {
      const response = await fetch(`${url}/api/tags`, {
        headers: { authorization: "Bearer docs-token", "X-Foreman-Target": "gpu-a" },
      });
      return { status: response.status, models: Array.isArray(((await response.json()) as { models: unknown }).models) };
    } catch (error) {
      return { error: String(error) };
    }
  }, other);
  expect(answer).toEqual({ status: 200, models: true });
  await page.close();
}, 60_000);
