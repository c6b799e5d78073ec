// The dashboard's routes, in-process: the page and its assets are public and self-contained, the feed
// needs the token and sends a bounded snapshot (grouped by model, the first 20 of each, a count of the
// rest), live token counts of the running job, and a new snapshot when a job is canceled.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { DashboardSnapshot, TokenUpdate } from "../../src/dashboard/types";
import { type SseEvent, readSse } from "../../src/ui/sse";
import { join } from "node:path";
import { DashboardFeed } from "../../src/dashboard/feed";
import { SnapshotBuilder, sqliteDashboardReads } from "../../src/dashboard/snapshot";
import { JobEventHub } from "../../src/worker/job-events";
import { openDatabase } from "../../src/queue/db";
import { DashboardQueries } from "../../src/queue/dashboard-queries";
import { JobStore } from "../../src/queue/store";
import { StorageHealth } from "../../src/queue/storage-health";
import { tempDir, until } from "../harness";
import { type InProcessStack, capturingLogger, startInProcess } from "../in-process";

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
    expect(first.running).toMatchObject({ type: "generate", preview: "hold" });
    expect(first.degraded).toEqual([]);
    expect(first.queue.total).toBe(48);
    // The group with the higher priority first; within a group, claim order (priority, then age).
    expect(first.queue.groups.map((g) => [g.model, g.count, g.jobs.length, g.more])).toEqual([
      ["mistral:latest", 3, 3, 0],
      ["qwen3:latest", 45, 20, 25],
    ]);
    expect(first.queue.groups[0]!.jobs[0]!.id).toBe(urgent.id);
    const qwen = first.queue.groups[1]!.jobs;
    expect(qwen.map((job) => job.id)).toEqual(qwen.map((job) => job.id).sort());
    expect(qwen[0]).toMatchObject({ model: "qwen3", type: "generate", preview: "x", source: "jobs", priority: 0 });
    // Expected starts: in claim order, the urgent group first; a group starts with its first job (0 is "next").
    const at = (start: number | null) => (start === 0 ? first.now : start!);
    for (const group of first.queue.groups) {
      expect(group.estimatedStartAt).not.toBeNull();
      expect(at(group.estimatedStartAt)).toBe(at(group.jobs[0]!.estimatedStartAt));
      const starts = group.jobs.map((job) => at(job.estimatedStartAt));
      expect(starts).toEqual([...starts].sort((a, b) => a - b));
    }
    expect(at(first.queue.groups[0]!.estimatedStartAt)).toBeLessThanOrEqual(at(first.queue.groups[1]!.estimatedStartAt));
    // The GPU timeline's window starts on a whole minute (so an unchanged queue sends nothing new).
    expect(first.timeline).toMatchObject({ windowMs: 600_000, truncated: false });
    expect(first.timeline.since % 60_000).toBe(0);
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
      modelKey: "qwen3:latest",
      type: "generate",
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
    // The banner's reason, and no expected start: nothing starts until Ollama answers.
    expect(before.degraded).toEqual([{ reason: "ollama_unreachable", message: expect.stringContaining("the queue is held") }]);
    expect(before.queue.groups[0]!.estimatedStartAt).toBeNull();
    expect(before.queue.groups[0]!.jobs[0]!.estimatedStartAt).toBeNull();

    // Nothing runs, so nothing else changes: the only news is the second job.
    expect((await submit()).status).toBe(202);
    const second = await watch();
    expect((await second.snapshot()).queue.total).toBe(2);
    expect((await first.snapshot()).queue.total).toBe(2);
    await first.close();
    await second.close();
  }, 10_000);
});

describe("the feed while the database cannot be written", () => {
  test("says so in the banner at once, in GET /queue and /metrics, and clears when a write lands", async () => {
    const local = await startInProcess({ env: { FOREMAN_TOKEN: TOKEN } });
    const events = readSse((await local.request("GET", "/ui/events", undefined, auth)).body!);
    const snapshot = async (check: (s: DashboardSnapshot) => boolean) => {
      for (;;) {
        const { value, done } = await events.next();
        if (done) throw new Error("the feed ended");
        const parsed = JSON.parse(value.data) as DashboardSnapshot;
        if (value.event === "snapshot" && check(parsed)) return parsed;
      }
    };
    const queue = async () => (await (await local.request("GET", "/queue", undefined, auth)).json()) as Record<string, unknown>;
    const metric = async () =>
      (await (await local.request("GET", "/metrics", undefined, auth)).text()).match(
        /^foreman_degraded\{reason="storage"\} (\d)$/m,
      )?.[1];
    try {
      expect((await snapshot(() => true)).degraded).toEqual([]);
      expect(await queue()).toMatchObject({ degraded: false, reasons: [] });
      expect(await metric()).toBe("0");
      // The worker's word that its pending write fails for space: nothing else happens, yet the page is told.
      local.jobs.storage.worker("database or disk is full");
      const full = await snapshot((s) => s.degraded.length > 0);
      expect(full.degraded).toEqual([
        { reason: "storage", message: expect.stringContaining("queue is held until space returns") },
      ]);
      expect(await queue()).toMatchObject({ degraded: true, reasons: [expect.stringContaining("database cannot be written")] });
      expect(await metric()).toBe("1");
      local.jobs.storage.worker(undefined);
      expect((await snapshot((s) => s.degraded.length === 0)).degraded).toEqual([]);
      expect(await queue()).toMatchObject({ degraded: false, reasons: [] });
      expect(await metric()).toBe("0");
    } finally {
      await events.return(undefined);
      await local.stop();
    }
  }, 10_000);
});

describe("what the snapshot carries of a request", () => {
  test("the first words of the prompt, whatever the API, and nothing more of a large request", async () => {
    const local = await startInProcess({ fake: { tokenDelayMs: 5 }, env: { FOREMAN_TOKEN: TOKEN } });
    try {
      const hold = { type: "generate", request: { model: "llama3.2", prompt: "hold", options: { num_predict: 100_000 } } };
      const holder = ((await (await local.request("POST", "/jobs", hold, auth)).json()) as { id: string }).id;
      await until(() => local.store.getJob(holder)?.state === "working", 10_000, "the holder to run");
      // 300 KB of prompt with a marker far past the preview; then each API's place for the prompt.
      const big = `Please read all of this carefully before answering. ${"lorem ipsum ".repeat(25_000)} MARKER-AT-THE-END`;
      const bodies: Array<[string, unknown, string]> = [
        [
          "/jobs",
          { type: "generate", request: { model: "qwen3", prompt: big } },
          "Please read all of this carefully before answering. lorem…",
        ],
        [
          "/jobs",
          {
            type: "chat",
            request: {
              model: "qwen3",
              messages: [
                { role: "system", content: "sys" },
                { role: "user", content: "<b>hi</b>\n  there" },
              ],
            },
          },
          "<b>hi</b> there",
        ],
      ];
      for (const [path, body] of bodies) expect((await local.request("POST", path, body, auth)).status).toBe(202);
      // OpenAI's chat with content parts, queued by a client that waits (not read here).
      const parts = {
        model: "qwen3",
        messages: [{ role: "user", content: [{ type: "text", text: "what is in the picture?" }] }],
      };
      const waiting = local.request("POST", "/v1/chat/completions", parts, auth);

      const response = await local.request("GET", "/ui/events", undefined, auth);
      const events = readSse(response.body!);
      let raw = "";
      let snapshot: DashboardSnapshot | undefined;
      while (!snapshot) {
        const { value } = await events.next();
        if (value?.event !== "snapshot") continue;
        const parsed = JSON.parse(value.data) as DashboardSnapshot;
        if (parsed.queue.total === 3) [raw, snapshot] = [value.data, parsed];
      }
      await events.return(undefined);
      const jobs = snapshot.queue.groups.flatMap((group) => group.jobs);
      expect(jobs.map((job) => [job.type, job.preview])).toEqual([
        ["generate", bodies[0]![2]],
        ["chat", bodies[1]![2]],
        ["openai.chat", "what is in the picture?"],
      ]);
      expect(raw).not.toContain("MARKER");
      expect(raw.length).toBeLessThan(20_000);
      void waiting.catch(() => {}); // answered 503 as the stack stops
    } finally {
      await local.stop();
    }
  }, 30_000);
});

describe("the GPU timeline", () => {
  test("a bar per job that ran, oldest first, its model load marked; canceled-before-start jobs are not there", async () => {
    const local = await startInProcess({ fake: { tokenDelayMs: 1, loadDelayMs: 20 }, env: { FOREMAN_TOKEN: TOKEN } });
    try {
      const ids: string[] = [];
      for (const model of ["llama3.2", "qwen3", "llama3.2", "qwen3"]) {
        const body = { type: "generate", request: { model, prompt: "x", options: { num_predict: 5 } } };
        ids.push(((await (await local.request("POST", "/jobs", body, auth)).json()) as { id: string }).id);
      }
      for (const id of ids) await local.ended(id);
      const response = await local.request("GET", "/ui/events", undefined, auth);
      const events = readSse(response.body!);
      const { value } = await events.next();
      await events.return(undefined);
      const { timeline } = JSON.parse(value!.data) as DashboardSnapshot;
      const bars = timeline.jobs;
      expect(bars.map((bar) => bar.id).sort()).toEqual([...ids].sort());
      expect(bars.map((bar) => bar.startedAt)).toEqual(bars.map((bar) => bar.startedAt).sort((a, b) => a - b));
      for (const bar of bars) {
        expect(bar.finishedAt).toBeGreaterThanOrEqual(bar.startedAt);
        expect(bar).toMatchObject({ type: "generate", state: "done" });
      }
      // Each claim that changed the model loaded it: the first, and each change of model after it.
      expect(bars.map((bar) => bar.swapped)).toEqual(bars.map((bar, i) => i === 0 || bar.modelKey !== bars[i - 1]!.modelKey));
      // Ollama's load_duration, where it loaded.
      expect(bars.filter((bar) => bar.swapped).every((bar) => bar.loadMs !== null)).toBe(true);
    } finally {
      await local.stop();
    }
  }, 30_000);

  test("bounded at 100,000 ended jobs: the newest 500, read from the finish index, in milliseconds", () => {
    const dir = tempDir();
    const db = openDatabase(join(dir.path, "t.db"));
    try {
      const store = new JobStore(db);
      const now = Date.now();
      const insert = db.query(
        `INSERT INTO jobs (id, type, model, model_key, request, source, state, priority, attempts, max_attempts, run_after,
           created_at, started_at, finished_at, swapped)
         VALUES (?1, 'generate', 'm', ?2, '{"prompt":"x"}', 'jobs', 'done', 0, 1, 3, ?3, ?3, ?3, ?4, ?5)`,
      );
      db.transaction(() => {
        // 100,000 jobs of 5 ms each over the last ~8 minutes (all inside the window).
        for (let i = 0; i < 100_000; i++) {
          const end = now - 500_000 + i * 5;
          insert.run(`job${String(i).padStart(6, "0")}`, `m${i % 3}`, end - 4, end, i % 50 === 0 ? 1 : 0);
        }
      })();
      const builder = new SnapshotBuilder(
        sqliteDashboardReads(store, new DashboardQueries(db), () => ({ now, groups: new Map(), cost: () => ({}) }) as never),
        { snapshot: { models: [], running: [], degraded: false, updatedAt: now } } as never,
      );
      builder.build(() => ({ tokens: 0, tokensPerS: null }), now); // warm: statements prepared, pages cached
      const started = performance.now();
      const { timeline } = builder.build(() => ({ tokens: 0, tokensPerS: null }), now);
      const ms = performance.now() - started;
      expect(timeline.jobs).toHaveLength(500);
      expect(timeline.truncated).toBe(true);
      expect(timeline.jobs.at(-1)!.id).toBe("job099999");
      // Generous on a shared machine; measured about a millisecond.
      expect(ms).toBeLessThan(250);
      if (process.env.DASHBOARD_TIMING) console.log(`snapshot at 100,000 ended jobs: ${ms.toFixed(2)} ms`);
    } finally {
      db.close();
      dir.cleanup();
    }
  });
});

describe("the running job's live count", () => {
  test("stays while the next job is claimed ahead (it was reset to 0, and the page's count went back)", async () => {
    const dir = tempDir();
    const db = openDatabase(join(dir.path, "t.db"));
    const store = new JobStore(db);
    const hub = new JobEventHub(capturingLogger("test", []));
    const now = Date.now();
    const inventory = {
      snapshot: { models: [], running: [], degraded: false, updatedAt: now },
      onChange: () => {},
      residentKeys: () => [],
    };
    const jobs = {
      store,
      inventory,
      link: hub,
      storage: new StorageHealth(() => {}),
      log: capturingLogger("test", []),
      queuePlan: () => ({ now: Date.now(), groups: new Map(), cost: () => ({}) }),
    };
    const feed = new DashboardFeed(jobs as never, new DashboardQueries(db));
    const running = (id: string, state: string, startedAt: number) =>
      db.run(
        `INSERT INTO jobs (id, type, model, model_key, request, source, state, priority, attempts, max_attempts, run_after, created_at, started_at)
         VALUES (?, 'generate', 'm', 'm:latest', '{}', 'jobs', ?, 0, 1, 3, ?, ?, ?)`,
        [id, state, startedAt, startedAt, startedAt],
      );
    const events = readSse(feed.connect().body!);
    const snapshot = async () => {
      for (;;) {
        const { value } = await events.next();
        if (value!.event === "snapshot") return JSON.parse(value!.data) as DashboardSnapshot;
      }
    };
    try {
      await snapshot();
      // Job A streams five records.
      running("A", "working", now - 1000);
      hub.emit("A", { type: "state", state: "loading" });
      hub.emit("A", { type: "state", state: "working", contentType: "application/x-ndjson" });
      for (let i = 0; i < 5; i++) hub.emit("A", { type: "chunk", bytes: new TextEncoder().encode('{"response":"x"}\n') });
      expect((await snapshot()).running).toMatchObject({ id: "A", tokens: 5 });
      // Its body is ending: job B is claimed ahead, and A is still the running job shown.
      running("B", "loading", now);
      hub.emit("B", { type: "state", state: "loading" });
      // A watcher joining now is sent the snapshot as it stands.
      const late = readSse(feed.connect().body!);
      const { value } = await late.next();
      await late.return(undefined);
      expect((JSON.parse(value!.data) as DashboardSnapshot).running).toMatchObject({ id: "A", tokens: 5 });
    } finally {
      await events.return(undefined);
      db.close();
      dir.cleanup();
    }
  });
});
