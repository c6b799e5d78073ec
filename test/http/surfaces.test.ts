// Every API Ollama serves, through one queue: native, OpenAI (chat, completions, responses) and
// Anthropic requests wait in the same line and reach Ollama one at a time in drain-by-model order;
// the routes beside the queue (models, embeddings, pull, blobs) relay as they stream; CORS as Ollama.
// foreman answers in this process (test/in-process.ts); the fake Ollama is a real server.
import { afterEach, describe, expect, test } from "bun:test";
import { until } from "../harness";
import { type InProcessStack, startInProcess } from "../in-process";

let stack: InProcessStack | undefined;
afterEach(async () => {
  await stack?.stop();
  stack = undefined;
});

const post = (path: string, body: unknown, headers: Record<string, string> = {}) =>
  stack!.fetch(path, { method: "POST", body: JSON.stringify(body), headers: { "content-type": "application/json", ...headers } });

/** One request per generation surface for `model`, each tagged so the fake's log says which it was. */
function surfaces(model: string, tag: string) {
  const text = `${tag} a b`;
  return [
    ["/api/chat", { model, messages: [{ role: "user", content: text }], stream: false }],
    ["/api/generate", { model, prompt: text, stream: false }],
    ["/v1/chat/completions", { model, messages: [{ role: "user", content: text }] }],
    ["/v1/completions", { model, prompt: text }],
    ["/v1/responses", { model, input: text }],
    ["/v1/messages", { model, max_tokens: 64, messages: [{ role: "user", content: text }] }],
  ] as const;
}

describe("one queue for every API", () => {
  test("mixed requests over six surfaces and two models reach Ollama one at a time, drained by model", async () => {
    stack = await startInProcess({ fake: { tokenDelayMs: 2, loadDelayMs: 30 } });
    // Hold the GPU with one job so everything else queues behind it, then send the mix interleaved.
    const release = stack.fake.hold();
    const arrived = stack.fake.nextArrival();
    const blocker = post("/api/generate", { model: "llama3.2", prompt: "hold", stream: false });
    await arrived;
    const a = surfaces("qwen3", "A");
    const b = surfaces("llama3.2", "B");
    const mixed = a.flatMap((entry, i) => [entry, b[i]!]);
    const pending = mixed.map(([path, body]) => post(path, body));
    await until(() => stack!.store.queuedCount() === mixed.length, 5000, "the mix to queue");
    release();
    const answers = await Promise.all(pending);
    expect(answers.map((r) => r.status)).toEqual(mixed.map(() => 200));
    expect(answers.every((r) => /^[0-9A-Z]{26}$/.test(r.headers.get("x-foreman-job-id") ?? ""))).toBe(true);
    await blocker;
    expect(stack.fake.maxInFlight).toBe(1);
    // Drain by model: after the blocker (llama3.2), all the llama3.2 jobs, then all qwen3: one swap.
    const order = stack.fake.seen.slice(1).map((seen) => seen.model.replace(/:latest$/, ""));
    expect(order).toEqual([...b.map(() => "llama3.2"), ...a.map(() => "qwen3")]);
    const jobs = (await (await stack!.fetch("/jobs?limit=20")).json()) as { jobs: { type: string; source: string }[] };
    expect(new Set(jobs.jobs.map((j) => j.type))).toEqual(
      new Set(["chat", "generate", "openai.chat", "openai.completion", "openai.responses", "anthropic.messages"]),
    );
    expect(new Set(jobs.jobs.map((j) => j.source))).toEqual(new Set(["ollama", "openai", "anthropic"]));
  });

  test("errors come in each API's shape with the right status", async () => {
    stack = await startInProcess();
    const openai404 = await post("/v1/chat/completions", { model: "nope", messages: [{ role: "user", content: "x" }] });
    expect(openai404.status).toBe(404);
    expect(await openai404.json()).toEqual({
      error: { message: "model 'nope' not found", type: "not_found_error", param: null, code: null },
    });
    const openai400 = await stack!.fetch("/v1/chat/completions", { method: "POST", body: "{not json" });
    expect(openai400.status).toBe(400);
    expect(((await openai400.json()) as { error: { type: string } }).error.type).toBe("invalid_request_error");
    const anthropic400 = await post("/v1/messages", { model: "llama3.2", messages: [{ role: "user", content: "x" }] });
    expect(anthropic400.status).toBe(400);
    expect(await anthropic400.json()).toMatchObject({
      type: "error",
      error: { type: "invalid_request_error", message: "max_tokens is required and must be positive" },
    });
    const anthropic404 = await post("/v1/messages", { model: "nope", max_tokens: 5, messages: [{ role: "user", content: "x" }] });
    expect(anthropic404.status).toBe(404);
    expect(await anthropic404.json()).toMatchObject({ type: "error", error: { type: "not_found_error" } });
    const missing = await stack!.fetch("/v1/models/nope");
    expect(missing.status).toBe(404);
    expect(((await missing.json()) as { error: { message: string } }).error.message).toBe("model 'nope' not found");
    expect(stack.fake.seen.length).toBe(0);
  });

  test("a mid-stream failure ends an OpenAI stream with an error frame the SDK raises", async () => {
    stack = await startInProcess();
    stack.fake.failures.push({ kind: "mid-stream", afterChunks: 2, error: "the GPU fell over" });
    const response = await post("/v1/chat/completions", {
      model: "llama3.2",
      messages: [{ role: "user", content: "a b c d" }],
      stream: true,
    });
    expect(response.status).toBe(200);
    const text = await response.text();
    const records = text.trim().split("\n\n");
    expect(records).not.toContain("data: [DONE]");
    const last = records.at(-1)!;
    expect(JSON.parse(last.replace(/^data: /, ""))).toMatchObject({ error: { message: expect.any(String) } });
  });
});

describe("routes beside the queue", () => {
  test("/v1/models and /v1/models/{model} come from the inventory in OpenAI's shape", async () => {
    stack = await startInProcess();
    const list = (await (await stack!.fetch("/v1/models")).json()) as { object: string; data: { id: string; object: string }[] };
    expect(list.object).toBe("list");
    expect(list.data.map((m) => m.id)).toContain("llama3.2:latest");
    expect(list.data.every((m) => m.object === "model")).toBe(true);
    const one = await (await stack!.fetch("/v1/models/llama3.2")).json();
    expect(one).toMatchObject({ id: "llama3.2", object: "model", owned_by: "library" });
    // A name that is not valid percent-encoding (found by the fuzzer: it was a 500).
    const bad = await stack!.fetch("/v1/models/%ff");
    expect(bad.status).toBe(400);
    expect(await bad.json()).toMatchObject({ error: { type: "invalid_request_error" } });
    // Under a namespace the wildcard takes the name as it came: no such model.
    expect((await stack!.fetch("/v1/models/library/%ff")).status).toBe(404);
  });

  test("/v1/embeddings goes straight to Ollama, beside a running generation", async () => {
    stack = await startInProcess();
    const release = stack.fake.hold();
    const arrived = stack.fake.nextArrival();
    const chat = post("/api/chat", { model: "llama3.2", messages: [{ role: "user", content: "a b c d e f" }], stream: false });
    await arrived;
    const response = await post("/v1/embeddings", { model: "all-minilm", input: ["one", "two"] });
    expect(response.status).toBe(200);
    const body = (await response.json()) as { object: string; data: unknown[] };
    expect(body.object).toBe("list");
    expect(body.data.length).toBe(2);
    expect(stack.fake.inFlight).toBe(1);
    release();
    await chat;
  });

  test("/api/pull streams its progress lines as Ollama writes them, then the model list is refreshed", async () => {
    stack = await startInProcess({ fake: { pullDelayMs: 50 } });
    const response = await post("/api/pull", { model: "fresh-model" });
    expect(response.headers.get("content-type")).toContain("ndjson");
    const reader = response.body!.getReader();
    const arrivals: number[] = [];
    let text = "";
    for (let part = await reader.read(); !part.done; part = await reader.read()) {
      arrivals.push(performance.now());
      text += new TextDecoder().decode(part.value);
    }
    const lines = text.trim().split("\n");
    expect(lines.length).toBeGreaterThan(2);
    expect(JSON.parse(lines.at(-1)!)).toEqual({ status: "success" });
    // Not buffered to the end: the reads spread over the pull, as the fake spaced its lines.
    expect(arrivals.length).toBeGreaterThan(2);
    expect(arrivals.at(-1)! - arrivals[0]!).toBeGreaterThan(50);
    await until(
      async () =>
        ((await (await stack!.fetch("/api/tags")).json()) as { models: { name: string }[] }).models.some(
          (m) => m.name === "fresh-model:latest",
        ),
      3000,
      "the pulled model to be listed",
    );
  });

  test("HEAD and POST /api/blobs/{digest} relay a streamed upload and its digest check", async () => {
    stack = await startInProcess();
    const data = new Uint8Array(3 * 1024 * 1024).map((_, i) => i % 251);
    const digest = `sha256:${new Bun.CryptoHasher("sha256").update(data).digest("hex")}`;
    expect((await stack!.fetch(`/api/blobs/${digest}`, { method: "HEAD" })).status).toBe(404);
    const upload = await stack!.fetch(`/api/blobs/${digest}`, { method: "POST", body: data });
    expect(upload.status).toBe(201);
    expect(stack.fake.blobs.get(digest)).toBe(data.length);
    expect((await stack!.fetch(`/api/blobs/${digest}`, { method: "HEAD" })).status).toBe(200);
    const wrong = await stack!.fetch(`/api/blobs/sha256:${"0".repeat(64)}`, { method: "POST", body: data });
    expect(wrong.status).toBe(400);
  });

  test("/api/ps shows the model the last job ran on within a second, without waiting for the poll", async () => {
    stack = await startInProcess({ env: { FOREMAN_POLL_INTERVAL: "1h" } });
    const ps = async () =>
      ((await (await stack!.fetch("/api/ps")).json()) as { models: { name: string }[] }).models.map((m) => m.name);
    expect(await ps()).toEqual([]);
    await post("/api/generate", { model: "qwen3", prompt: "hi", stream: false });
    await until(async () => (await ps()).includes("qwen3:latest"), 1000, "/api/ps to show qwen3");
    await post("/v1/chat/completions", { model: "mistral", messages: [{ role: "user", content: "hi" }] });
    await until(async () => (await ps()).includes("mistral:latest"), 1000, "/api/ps to show mistral");
    const queue = (await (await stack!.fetch("/queue")).json()) as { resident: string[] };
    expect(queue.resident).toContain("mistral:latest");
  });
});

describe("CORS, as Ollama does it", () => {
  test("local origins get allow headers; a preflight needs no token; other origins are refused", async () => {
    stack = await startInProcess({
      env: { FOREMAN_TOKEN: "t0ken", FOREMAN_ORIGINS: "https://app.example.com,https://*.trusted.dev" },
    });
    const preflight = await stack!.fetch("/v1/chat/completions", {
      method: "OPTIONS",
      headers: {
        origin: "http://localhost:5173",
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization,content-type,x-stainless-os",
      },
    });
    expect(preflight.status).toBe(204);
    expect(preflight.headers.get("access-control-allow-origin")).toBe("http://localhost:5173");
    expect(preflight.headers.get("access-control-allow-headers")).toContain("X-Stainless-Os");
    expect(preflight.headers.get("access-control-allow-headers")).toContain("Authorization");

    for (const origin of ["http://127.0.0.1:3000", "app://obsidian.md", "https://app.example.com", "https://x.trusted.dev"]) {
      const response = await stack!.fetch("/api/tags", { headers: { origin, authorization: "Bearer t0ken" } });
      expect(response.status).toBe(200);
      expect(response.headers.get("access-control-allow-origin")).toBe(origin);
    }
    const evil = await stack!.fetch("/api/chat", {
      method: "POST",
      headers: { origin: "https://evil.example", "content-type": "text/plain" },
      body: JSON.stringify({ model: "llama3.2", messages: [{ role: "user", content: "x" }] }),
    });
    expect(evil.status).toBe(403);
    expect(evil.headers.get("access-control-allow-origin")).toBeNull();
    expect(((await evil.json()) as { error: string }).error).toContain("FOREMAN_ORIGINS");
    const noToken = await stack!.fetch("/api/tags", { headers: { origin: "http://localhost:5173" } });
    expect(noToken.status).toBe(401);
    expect(stack.fake.seen.length).toBe(0);
  });
});
