// What an operator watches, from the compiled binary: GET /metrics (valid by promtool, agreeing with
// GET /queue) and the log on stdout (one JSON line per request and per job end, no prompt, token or secret).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Ollama } from "ollama";
import OpenAI from "openai";
import { FakeOllama } from "../fake-ollama";
import { type ForemanProcess, foremanEnv, spawnForeman, tempDir, until } from "../harness";
import { WebhookReceiver } from "../webhook/receiver";

const TOKEN = "tok-9f8e7d6c5b4a";
const WEBHOOK_SECRET = "whsec_c2VjcmV0LXdlYmhvb2sta2V5LTEyMw==";
const auth = { authorization: `Bearer ${TOKEN}` };

let fake: FakeOllama;
let dir: ReturnType<typeof tempDir>;
let foreman: ForemanProcess;

beforeAll(async () => {
  fake = new FakeOllama({ tokenDelayMs: 5 }).start();
  dir = tempDir();
  // The default log level and format: info, and JSON as stdout is a pipe.
  const env = foremanEnv(fake.url, dir.path, {
    FOREMAN_TOKEN: TOKEN,
    FOREMAN_WEBHOOK_BACKOFF: "50ms",
    FOREMAN_WEBHOOK_ALLOW: "127.0.0.1",
  });
  delete env.FOREMAN_LOG_LEVEL;
  foreman = await spawnForeman(env);
});
afterAll(async () => {
  foreman?.process.kill("SIGTERM");
  await foreman?.process.exited;
  await fake.stop();
  dir.cleanup();
});

const get = (path: string) => fetch(`${foreman.url}${path}`, { headers: auth });

/** Every line of foreman's stdout, each parsed as JSON (a line that is not fails the test). */
function logLines(): Record<string, unknown>[] {
  return foreman
    .stdout()
    .split("\n")
    .filter(Boolean)
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

/** The metric samples of a scrape: "name{labels}" → value (comments skipped). */
function samples(text: string): Map<string, number> {
  const result = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const space = line.lastIndexOf(" ");
    result.set(line.slice(0, space), Number(line.slice(space + 1)));
  }
  return result;
}

async function promtoolCheck(text: string): Promise<{ code: number; output: string }> {
  const child = Bun.spawn(["promtool", "check", "metrics"], { stdin: new Blob([text]), stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([
    new Response(child.stdout).text(),
    new Response(child.stderr).text(),
    child.exited,
  ]);
  return { code, output: out + err };
}

/** The queue as /metrics shows it, in GET /queue's terms. */
function queueFromMetrics(metrics: Map<string, number>) {
  const byModel: Record<string, number> = {};
  let running: { model: string; state: string } | null = null;
  for (const [key, value] of metrics) {
    const match = /^foreman_queue_jobs\{model="([^"]+)",state="([^"]+)"\}$/.exec(key);
    if (!match) continue;
    if (match[2] === "queued") byModel[match[1]!] = value;
    else if (value === 1) running = { model: match[1]!, state: match[2]! };
  }
  return { depth: metrics.get("foreman_queue_depth"), by_model: byModel, running };
}

/** A scrape and GET /queue taken while nothing moved (the same scrape before and after), so they must agree. */
async function steadyScrape() {
  for (;;) {
    const before = await (await get("/metrics")).text();
    const queue = (await (await get("/queue")).json()) as {
      depth: number;
      by_model: Record<string, number>;
      running: { model: string; state: string } | null;
      degraded: boolean;
    };
    const after = await (await get("/metrics")).text();
    const [a, b] = [queueFromMetrics(samples(before)), queueFromMetrics(samples(after))];
    if (JSON.stringify(a) === JSON.stringify(b)) return { text: after, metrics: samples(after), fromMetrics: b, queue };
  }
}

describe("GET /metrics", () => {
  test("needs the token; passes promtool; agrees with GET /queue while jobs wait and after they end", async () => {
    expect((await fetch(`${foreman.url}/metrics`)).status).toBe(401);

    const baseline = samples(await (await get("/metrics")).text());
    const ended = (key: string) => baseline.get(key) ?? 0;
    fake.tokenDelayMs = 150;
    // A slow job runs; five more of two models wait behind it.
    const ids: string[] = [];
    for (const model of ["llama3.2", "qwen3", "qwen3", "llama3.2", "mistral", "qwen3"]) {
      const response = await fetch(`${foreman.url}/jobs`, {
        method: "POST",
        headers: auth,
        body: JSON.stringify({ type: "generate", request: { model, prompt: "a b c d e f" } }),
      });
      expect(response.status).toBe(202);
      ids.push(((await response.json()) as { id: string }).id);
    }
    await until(() => fake.inFlight === 1, 10_000, "the first job to run");

    const during = await steadyScrape();
    expect(await promtoolCheck(during.text)).toEqual({ code: 0, output: "" });
    expect(during.queue.depth).toBeGreaterThan(0);
    expect(during.fromMetrics).toEqual({
      depth: during.queue.depth,
      by_model: during.queue.by_model,
      running: during.queue.running && { model: during.queue.running.model, state: during.queue.running.state },
    });
    expect(during.metrics.get("foreman_ollama_up")).toBe(during.queue.degraded ? 0 : 1);
    expect(during.metrics.get('foreman_build_info{version="0.1.0"}')).toBe(1);

    fake.tokenDelayMs = 5;
    await until(
      async () => {
        const states = await Promise.all(
          ids.map(async (id) => ((await (await get(`/jobs/${id}`)).json()) as { state: string }).state),
        );
        return states.every((s) => s === "done");
      },
      30_000,
      "every job to end",
    );
    const after = await steadyScrape();
    expect(await promtoolCheck(after.text)).toEqual({ code: 0, output: "" });
    expect(after.queue).toMatchObject({ depth: 0, by_model: {}, running: null });
    expect(after.fromMetrics).toEqual({ depth: 0, by_model: {}, running: null });

    // The counters moved by exactly these jobs, as their rows tell.
    const views = await Promise.all(
      ids.map(
        async (id) => (await (await get(`/jobs/${id}`)).json()) as { model: string; output_tokens: number; swapped: boolean },
      ),
    );
    for (const model of ["llama3.2", "qwen3", "mistral"]) {
      const mine = views.filter((v) => v.model === model);
      const key = `foreman_jobs_ended_total{type="generate",model="${model}",outcome="done",source="jobs"}`;
      expect(after.metrics.get(key)! - ended(key)).toBe(mine.length);
      const tokens = `foreman_tokens_generated_total{model="${model}"}`;
      expect(after.metrics.get(tokens)! - ended(tokens)).toBe(mine.reduce((sum, v) => sum + v.output_tokens, 0));
      const swaps = `foreman_model_swaps_total{model="${model}"}`;
      expect((after.metrics.get(swaps) ?? 0) - ended(swaps)).toBe(mine.filter((v) => v.swapped).length);
      const waits = `foreman_job_wait_seconds_count{model="${model}"}`;
      expect(after.metrics.get(waits)! - ended(waits)).toBe(mine.length);
      const rates = `foreman_tokens_per_second_count{model="${model}"}`;
      expect(after.metrics.get(rates)! - ended(rates)).toBe(mine.length);
    }
  }, 60_000);

  test("counts failed attempts by kind and their retries", async () => {
    const before = samples(await (await get("/metrics")).text());
    fake.failures.push({ kind: "status", status: 503, error: "server busy" }, { kind: "drop", afterChunks: 1 });
    const response = await fetch(`${foreman.url}/jobs`, {
      method: "POST",
      headers: auth,
      body: JSON.stringify({ type: "chat", request: { model: "llama3.2", messages: [{ role: "user", content: "hi" }] } }),
    });
    const { id } = (await response.json()) as { id: string };
    await until(
      async () => ((await (await get(`/jobs/${id}`)).json()) as { state: string }).state === "done",
      30_000,
      "the job to succeed on its third attempt",
    );
    const after = samples(await (await get("/metrics")).text());
    const delta = (key: string) => after.get(key)! - before.get(key)!;
    expect(delta('foreman_upstream_errors_total{kind="http_5xx"}')).toBe(1);
    expect(delta('foreman_upstream_errors_total{kind="connection"}')).toBe(1);
    expect(delta("foreman_job_retries_total")).toBe(2);
    // The dropped connection is reported in foreman's words, without Bun's advice to developers.
    const retried = logLines().filter((line) => line.msg === "job attempt failed, retrying" && line.job === id);
    expect(retried).toHaveLength(2);
    expect(String(retried[1]!.error)).toStartWith("connection to ollama lost mid-response");
    expect(foreman.stdout()).not.toContain("verbose");
  }, 60_000);
});

describe("the log", () => {
  test("30 jobs at the default level: one JSON line per request and per job end, no prompt, token or secret", async () => {
    const receiver = new WebhookReceiver(WEBHOOK_SECRET).start();
    // A request's line is written in the turn after its answer: the last test's last one may still be on
    // its way. One more request, and its line, put every earlier line before the skip.
    const health = () => logLines().filter((l) => l.msg === "request" && l.path === "/healthz").length;
    const healthBefore = health();
    await fetch(`${foreman.url}/healthz`);
    await until(() => health() > healthBefore, 10_000, "the /healthz request line");
    const skip = logLines().length;
    const marker = (i: number) => `PROMPT-MARKER-${i}-zq`;
    const ollama = new Ollama({ host: foreman.url, headers: auth });
    const openai = new OpenAI({ baseURL: `${foreman.url}/v1`, apiKey: TOKEN, maxRetries: 0 });
    const work: Promise<unknown>[] = [];
    for (let i = 0; i < 20; i++) {
      const messages = [{ role: "user", content: marker(i) }];
      work.push(i % 2 ? ollama.chat({ model: "llama3.2", messages }) : ollama.chat({ model: "qwen3", messages, stream: false }));
    }
    for (let i = 20; i < 25; i++) {
      work.push(openai.chat.completions.create({ model: "llama3.2", messages: [{ role: "user", content: marker(i) }] }));
    }
    for (let i = 25; i < 30; i++) {
      work.push(
        fetch(`${foreman.url}/jobs`, {
          method: "POST",
          headers: auth,
          body: JSON.stringify({
            type: "generate",
            request: { model: "mistral", prompt: marker(i) },
            webhook: { url: receiver.url, secret: WEBHOOK_SECRET },
          }),
        }).then((r) => r.json()),
      );
    }
    await Promise.all(work);
    // Two refusals the log must show too: no token, and an unknown path.
    expect((await fetch(`${foreman.url}/queue`)).status).toBe(401);
    expect((await get("/no/such/route?x=1")).status).toBe(404);
    await until(
      () =>
        logLines()
          .slice(skip)
          .filter((l) => l.msg === "job ended").length >= 30,
      30_000,
      "30 job-end lines",
    );
    await until(() => receiver.deliveredIds.size >= 5, 10_000, "the webhooks");
    await receiver.stop();
    // A request's line is written in the turn after its answer left (off the request's path).
    await until(
      () =>
        logLines()
          .slice(skip)
          .filter((l) => l.msg === "request" && l.path !== "/healthz").length >= 32,
      10_000,
      "32 request lines",
    );

    const lines = logLines().slice(skip);
    // (Types checked through typeof: bun's toMatchObject writes its asymmetric matchers into the object it checks.)
    for (const line of lines)
      expect([typeof line.time, typeof line.level, typeof line.msg]).toEqual(["string", "string", "string"]);
    // The default level shows no debug lines.
    expect(lines.filter((l) => l.level === "debug")).toEqual([]);

    const requests = lines.filter((l) => l.msg === "request" && l.path !== "/healthz");
    expect(requests).toHaveLength(32);
    for (const line of requests) {
      expect([typeof line.method, typeof line.path, typeof line.status, typeof line.duration_ms]).toEqual([
        "string",
        "string",
        "number",
        "number",
      ]);
    }
    const generations = requests.filter((l) => l.path !== "/queue" && !String(l.path).startsWith("/no/"));
    expect(generations).toHaveLength(30);
    for (const line of generations) expect(line.job).toMatch(/^[0-9A-HJKMNP-TV-Z]{26}$/);
    expect(requests.filter((l) => l.status === 401).map((l) => l.path)).toEqual(["/queue"]);
    // The query is never logged.
    expect(requests.filter((l) => l.status === 404).map((l) => l.path)).toEqual(["/no/such/route"]);

    const ends = lines.filter((l) => l.msg === "job ended");
    expect(ends).toHaveLength(30);
    expect(new Set(ends.map((l) => l.job))).toEqual(new Set(generations.map((l) => l.job)));
    for (const line of ends) {
      expect([line.level, line.outcome, line.attempts]).toEqual(["info", "done", 1]);
      expect(["ollama", "openai", "jobs"]).toContain(String(line.source));
      const kinds = ["model", "wait_ms", "run_ms", "output_tokens", "tokens_per_s", "swapped"].map((k) => typeof line[k]);
      expect(kinds).toEqual(["string", "number", "number", "number", "number", "boolean"]);
    }
    expect(ends.filter((l) => l.source === "openai")).toHaveLength(5);
    expect(ends.filter((l) => l.source === "jobs")).toHaveLength(5);

    const text = foreman.stdout() + foreman.stderr();
    expect(text).not.toContain("PROMPT-MARKER");
    expect(text).not.toContain(TOKEN);
    expect(text).not.toContain(WEBHOOK_SECRET);
    expect(text).not.toContain(WEBHOOK_SECRET.slice("whsec_".length));
  }, 90_000);
});
