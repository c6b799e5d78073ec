// The dashboard's routes, in-process: the page and its assets are public and self-contained, the feed
// needs the token and sends a bounded snapshot (grouped by model, the first 20 of each, a count of the
// rest), live token counts of the running job, and a new snapshot when a job is canceled.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { DashboardSnapshot, TokenUpdate } from "../../src/dashboard/types";
import { type SseEvent, readSse } from "../../src/ui/sse";
import { until } from "../harness";
import { type InProcessStack, startInProcess } from "../in-process";

const TOKEN = "ui-token";
const auth = { authorization: `Bearer ${TOKEN}` };

let stack: InProcessStack;
let blocker: string;

beforeAll(async () => {
  stack = await startInProcess({ fake: { tokenDelayMs: 5 }, env: { FOREMAN_TOKEN: TOKEN } });
  // A job long enough to hold the GPU for the whole file (the stack's stop aborts it).
  const response = await stack.request(
    "POST",
    "/jobs",
    { type: "generate", request: { model: "llama3.2", prompt: "hold", options: { num_predict: 100_000 } } },
    auth,
  );
  blocker = ((await response.json()) as { id: string }).id;
  await until(() => stack.store.getJob(blocker)?.state === "working", 10_000, "the blocker to run");
});
afterAll(async () => {
  await stack?.stop();
});

const get = (path: string, headers: Record<string, string> = {}, method = "GET") =>
  stack.request(method, path, undefined, headers);

describe("the page", () => {
  test("/ui and its assets are open without the token, self-contained, and the page forbids other origins", async () => {
    const page = await get("/ui");
    expect(page.status).toBe(200);
    expect(page.headers.get("content-type")).toBe("text/html; charset=utf-8");
    const csp = page.headers.get("content-security-policy") ?? "";
    for (const rule of ["default-src 'none'", "script-src 'self'", "connect-src 'self'", "style-src 'self'"])
      expect(csp).toContain(rule);
    const html = await page.text();
    expect(html).toContain('<script type="module" src="ui/app.js">');
    expect(html).not.toMatch(/https?:\/\//);

    const script = await get("/ui/app.js");
    expect(script.status).toBe(200);
    expect(script.headers.get("content-type")).toBe("text/javascript; charset=utf-8");
    const js = await script.text();
    // Bundled for the browser: no module imports left, no TypeScript, no address beyond its own origin.
    expect(js).not.toMatch(/^\s*import\s/m);
    expect(js).not.toContain("interface ");
    expect(js).toContain("ui/events");
    expect(js.match(/https?:\/\/[^"'`\s]*/g) ?? []).toEqual(["http://www.w3.org/2000/svg"]);

    const css = await get("/ui/style.css");
    expect(css.status).toBe(200);
    expect(css.headers.get("content-type")).toBe("text/css; charset=utf-8");
    expect(await css.text()).toContain("@media (max-width");
    expect((await get("/ui", {}, "HEAD")).status).toBe(200);
  });

  test("/ui/ sends the browser to /ui (relative, so a path prefix survives), and the icon is an SVG, both without the token", async () => {
    // The page's URLs are relative: served at /ui/ it asked for /ui/ui/app.js and drew nothing.
    for (const method of ["GET", "HEAD"]) {
      const slash = await get("/ui/", {}, method);
      expect([slash.status, slash.headers.get("location")]).toEqual([308, "../ui"]);
      expect(new URL(slash.headers.get("location")!, "http://foreman.test/prefix/ui/").pathname).toBe("/prefix/ui");
    }
    const icon = await get("/favicon.ico");
    expect(icon.status).toBe(200);
    expect(icon.headers.get("content-type")).toBe("image/svg+xml");
    const svg = await icon.text();
    expect(svg).toStartWith("<svg");
    expect(svg.length).toBeLessThan(1024);
    expect(await (await get("/ui")).text()).toContain('<link rel="icon" href="favicon.ico" type="image/svg+xml" />');
  });

  test("HEAD on the feed answers its headers at once and opens no watcher (found by the fuzzer: it hung)", async () => {
    const head = await get("/ui/events", auth, "HEAD");
    expect(head.status).toBe(200);
    expect(head.headers.get("content-type")).toBe("text/event-stream");
    expect(await head.text()).toBe("");
  });

  test("the feed, and anything near the page's paths, needs the token", async () => {
    for (const [method, path] of [
      ["GET", "/ui/events"],
      ["POST", "/ui"],
      ["GET", "/ui/x"],
      ["GET", "/favicon.svg"],
      ["GET", "/UI"],
      ["GET", "/ui/index.html"],
      ["DELETE", "/ui/app.js"],
    ] as const) {
      const response = await get(path, {}, method);
      expect(`${method} ${path} ${response.status}`).toBe(`${method} ${path} 401`);
    }
  });
});

/** Reads the feed's events one at a time. */
async function openFeed() {
  const response = await get("/ui/events", auth);
  expect(response.status).toBe(200);
  expect(response.headers.get("content-type")).toBe("text/event-stream");
  const events = readSse(response.body!);
  const next = async (): Promise<SseEvent> => {
    const { value, done } = await events.next();
    if (done) throw new Error("the feed ended");
    return value;
  };
  /** The next snapshot that passes `check`, skipping token updates and other snapshots. */
  const snapshot = async (check: (s: DashboardSnapshot) => boolean = () => true) => {
    for (;;) {
      const event = await next();
      if (event.event !== "snapshot") continue;
      const parsed = JSON.parse(event.data) as DashboardSnapshot;
      if (check(parsed)) return parsed;
    }
  };
  return { next, snapshot, close: () => events.return(undefined) };
}

describe("the feed", () => {
  test("a snapshot on connect: the running job, the queue by model (20 listed per model, the rest counted)", async () => {
    const submit = (model: string, priority = 0) =>
      stack.request("POST", "/jobs", { type: "generate", request: { model, prompt: "x" }, priority }, auth);
    for (let i = 0; i < 45; i++) expect((await submit("qwen3")).status).toBe(202);
    for (let i = 0; i < 2; i++) expect((await submit("mistral")).status).toBe(202);
    const urgent = (await (await submit("mistral", 5)).json()) as { id: string };

    const feed = await openFeed();
    const first = await feed.snapshot();
    expect(Math.abs(first.now - Date.now())).toBeLessThan(60_000);
    expect(first.ollama.reachable).toBe(true);
    expect(first.running).toMatchObject({
      id: blocker,
      model: "llama3.2",
      modelKey: "llama3.2:latest",
      state: "working",
      source: "jobs",
      swapped: true,
    });
    expect(first.running!.tokens).toBeGreaterThan(0);
    expect(first.queue.total).toBe(48);
    // The group with the higher priority first; within a group, claim order (priority, then age).
    expect(first.queue.groups.map((g) => [g.model, g.count, g.jobs.length, g.more])).toEqual([
      ["mistral:latest", 3, 3, 0],
      ["qwen3:latest", 45, 20, 25],
    ]);
    expect(first.queue.groups[0]!.jobs[0]!.id).toBe(urgent.id);
    const qwen = first.queue.groups[1]!.jobs;
    expect(qwen.map((job) => job.id)).toEqual(qwen.map((job) => job.id).sort());
    expect(qwen[0]).toMatchObject({ model: "qwen3", type: "generate", source: "jobs", priority: 0 });
    expect(first.hour.done).toHaveLength(60);
    expect(first.hour.since % 60_000).toBe(0);

    // Between snapshots, the running job's count rises.
    const counts: number[] = [];
    while (counts.length < 2) {
      const event = await feed.next();
      if (event.event !== "tokens") continue;
      const update = JSON.parse(event.data) as TokenUpdate;
      expect(update.id).toBe(blocker);
      counts.push(update.tokens);
    }
    expect(counts[1]!).toBeGreaterThan(counts[0]!);
    expect(counts[0]!).toBeGreaterThanOrEqual(first.running!.tokens);

    // A cancel shows at once: one fewer waiting, and the job among the recent ones, canceled.
    const victim = qwen[3]!.id;
    expect((await stack.request("DELETE", `/jobs/${victim}`, undefined, auth)).status).toBe(200);
    const after = await feed.snapshot((s) => s.queue.total === 47);
    expect(after.queue.groups.find((g) => g.model === "qwen3:latest")).toMatchObject({ count: 44, more: 24 });
    expect(after.recent[0]).toMatchObject({
      id: victim,
      model: "qwen3",
      state: "canceled",
      error: "request canceled",
      runMs: null,
    });
    await feed.close();
  });
});

describe("the feed while Ollama is away", () => {
  let away: InProcessStack;
  beforeAll(async () => {
    away = await startInProcess({ env: { FOREMAN_TOKEN: TOKEN } });
    await away.fake.stop();
    await away.jobs.inventory.refresh();
  });
  afterAll(async () => {
    await away?.stop();
  });

  test("says Ollama is unreachable, holds the queue, and a second watcher joining does not cost the first a change", async () => {
    const watch = async () => {
      const response = await away.request("GET", "/ui/events", undefined, auth);
      const events = readSse(response.body!);
      const snapshot = async (check: (s: DashboardSnapshot) => boolean = () => true) => {
        for (;;) {
          const { value, done } = await events.next();
          if (done) throw new Error("the feed ended");
          const parsed = JSON.parse(value.data) as DashboardSnapshot;
          if (value.event === "snapshot" && check(parsed)) return parsed;
        }
      };
      return { snapshot, close: () => events.return(undefined) };
    };
    const submit = () => away.request("POST", "/jobs", { type: "chat", request: { model: "llama3.2", messages: [] } }, auth);
    expect((await submit()).status).toBe(202);
    const first = await watch();
    const before = await first.snapshot();
    expect(before.ollama.reachable).toBe(false);
    expect(before.running).toBeNull();
    expect(before.queue.total).toBe(1);

    // Nothing runs, so nothing else changes: the only news is the second job.
    expect((await submit()).status).toBe(202);
    const second = await watch();
    expect((await second.snapshot()).queue.total).toBe(2);
    expect((await first.snapshot()).queue.total).toBe(2);
    await first.close();
    await second.close();
  }, 10_000);
});
