// The queue behind /api/chat and /api/generate: one generation at a time, chunks relayed live,
// embeddings beside the queue, cancellation on disconnect, and errors in Ollama's shape. foreman answers
// in this process (test/in-process.ts); disconnects over a real socket are in test/e2e/transport.test.ts.
import { afterEach, describe, expect, test } from "bun:test";
import { Ollama } from "ollama";
import { until } from "../harness";
import { type InProcessStack, startInProcess } from "../in-process";

let stack: InProcessStack | undefined;
afterEach(async () => {
  await stack?.stop();
  stack = undefined;
});

const chatBody = (content: string, extra: Record<string, unknown> = {}) =>
  JSON.stringify({ model: "llama3.2", messages: [{ role: "user", content }], ...extra });

function post(path: string, body: string, init: RequestInit = {}) {
  return stack!.fetch(path, { method: "POST", body, ...init });
}

/** The `ollama` client, pointed at the in-process foreman. */
const ollamaClient = (headers?: Record<string, string>) =>
  new Ollama({ host: stack!.url, fetch: stack!.fetch as typeof fetch, headers });

describe("one GPU, one generation at a time", () => {
  test("10 concurrent chats over two models reach Ollama one at a time, and all are answered", async () => {
    stack = await startInProcess({ fake: { tokenDelayMs: 5, loadDelayMs: 20 } });
    const client = ollamaClient();
    const answers = await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        client.chat({ model: i % 2 ? "qwen3" : "llama3.2", messages: [{ role: "user", content: `question ${i}` }] }),
      ),
    );
    expect(answers.map((a) => a.message.content)).toEqual(Array.from({ length: 10 }, (_, i) => `You said: question ${i}`));
    expect(stack.fake.seen.length).toBe(10);
    expect(stack.fake.maxInFlight).toBe(1);
  });

  test("streamed chunks reach the client before the generation ends", async () => {
    stack = await startInProcess();
    const release = stack.fake.hold(1);
    const response = await post("/api/chat", chatBody("one two three four five"));
    expect(response.headers.get("content-type")).toBe("application/x-ndjson");
    const reader = response.body!.getReader();
    const first = await reader.read();
    // The fake holds the generation after its first token, yet that first line is here.
    expect(stack.fake.inFlight).toBe(1);
    expect(new TextDecoder().decode(first.value)).toContain('"content":"You"');
    release();
    let rest = "";
    for (let part = await reader.read(); !part.done; part = await reader.read()) rest += new TextDecoder().decode(part.value);
    expect(rest.trim().split("\n").at(-1)).toContain('"done":true');
  });

  test("embeddings run concurrently, beside a chat that holds the queue", async () => {
    stack = await startInProcess({ fake: { embedDelayMs: 50 } });
    const release = stack.fake.hold();
    const client = ollamaClient();
    const arrived = stack.fake.nextArrival();
    const chat = client.chat({ model: "llama3.2", messages: [{ role: "user", content: "a b c d e f g h" }] });
    await arrived;
    const embeds = await Promise.all(
      Array.from({ length: 4 }, (_, i) => client.embed({ model: "all-minilm", input: `text ${i}` })),
    );
    expect(embeds.every((e) => e.embeddings.length === 1)).toBe(true);
    expect(stack.fake.maxEmbedInFlight).toBeGreaterThanOrEqual(2);
    expect(stack.fake.inFlight).toBe(1); // the chat was still generating all along
    release();
    await chat;
  });

  test("each answer names its job in X-Foreman-Job-Id", async () => {
    stack = await startInProcess();
    const response = await post("/api/chat", chatBody("hi", { stream: false }));
    const id = response.headers.get("x-foreman-job-id")!;
    expect(id).toMatch(/^[0-9A-HJKMNP-TV-Z]{26}$/);
    // The answer goes out the moment it is whole; the row is marked done right after.
    expect((await stack.ended(id)).state).toBe("done");
  });
});

describe("a client that goes away cancels its job", () => {
  test("a queued job never reaches Ollama", async () => {
    stack = await startInProcess();
    const release = stack.fake.hold();
    const arrived = stack.fake.nextArrival();
    const first = post("/api/chat", chatBody("a b c d e f", { stream: false }));
    await arrived;
    const controller = new AbortController();
    const second = post("/api/chat", chatBody("never sent"), { signal: controller.signal });
    await until(() => stack!.store.queuedCount() === 1, 5000, "the second job to queue");
    const [queued] = stack.store.listJobs({ state: "queued", limit: 1 });
    controller.abort();
    expect((await second).status).toBe(499);
    expect((await stack.ended(queued!.id)).state).toBe("canceled");
    release();
    expect((await first).status).toBe(200);
    // A job queued after it runs once the first is done: had the canceled one run, it would come between.
    expect((await post("/api/chat", chatBody("after", { stream: false }))).status).toBe(200);
    expect(stack.fake.seen.map((s) => (s.body.messages as { content: string }[])[0]!.content)).toEqual(["a b c d e f", "after"]);
  });

  test("a running job has its upstream call aborted, freeing the GPU", async () => {
    stack = await startInProcess();
    stack.fake.hold(1);
    const controller = new AbortController();
    const response = await post("/api/chat", chatBody("a b c d e f g h i j"), { signal: controller.signal });
    const id = response.headers.get("x-foreman-job-id")!;
    const reader = response.body!.getReader();
    await reader.read();
    controller.abort();
    await until(() => stack!.fake.seen[0]?.aborted === true, 5000, "the upstream call to be aborted");
    expect(stack.fake.inFlight).toBe(0);
    expect(stack.store.getJob(id)?.state).toBe("canceled");
  });
});

describe("a client that reads slowly", () => {
  /** Tokens enough for an answer of about 5 MB, past the backlog a client is kept (4 MiB). */
  const BIG = { options: { num_predict: 60_000 } };

  test("past its backlog, is relayed the rest from the stored stream once the job ends, byte for byte", async () => {
    stack = await startInProcess();
    const response = await post("/api/chat", chatBody("long", BIG));
    const id = response.headers.get("x-foreman-job-id")!;
    // Not read until the job is done: the GPU did not wait, and the records past the backlog were not kept.
    expect((await stack.ended(id)).state).toBe("done");
    const body = Buffer.from(await response.arrayBuffer());
    const stored = Buffer.from(stack.store.artifacts.get(id, "stream.ndjson")!.data);
    expect(body.byteLength).toBeGreaterThan(4 * 1024 * 1024);
    expect(body.equals(stored)).toBe(true);
  });

  test("past its backlog, still gets the API's last error record when the job is canceled meanwhile", async () => {
    stack = await startInProcess();
    const release = stack.fake.hold(50_000);
    const response = await post("/api/chat", chatBody("long", BIG));
    const id = response.headers.get("x-foreman-job-id")!;
    await until(() => stack!.fake.seen.length === 1 && stack!.store.getJob(id)!.state === "working", 5000, "the job to run");
    await Bun.sleep(200); // its 50,000 records reach the waiting relay
    expect((await stack.request("DELETE", `/jobs/${id}`)).status).toBe(200);
    release();
    const lines = (await response.text()).trimEnd().split("\n");
    // What it read was Ollama's records; nothing of the rest is stored (canceled), so its end says why.
    expect(lines.length).toBeLessThan(50_000);
    expect(JSON.parse(lines.at(-2)!)).toMatchObject({ done: false });
    expect(JSON.parse(lines.at(-1)!)).toEqual({ error: "request canceled" });
  });
});

describe("errors look like Ollama's", () => {
  test("bad bodies get 400 or 404 with {error}, and never reach Ollama", async () => {
    stack = await startInProcess();
    const cases: Array<[string, string, number, string]> = [
      ["/api/chat", "", 400, "missing request body"],
      ["/api/chat", "{not json", 400, "invalid JSON"],
      ["/api/chat", "[1,2]", 400, "JSON object"],
      ["/api/generate", "null", 400, "JSON object"],
      ["/api/chat", '"text"', 400, "JSON object"],
      ["/api/chat", JSON.stringify({ messages: [] }), 400, "model is required"],
      ["/api/generate", JSON.stringify({ prompt: "x" }), 404, "model '' not found"],
      ["/api/chat", JSON.stringify({ model: "llama3.2", messages: "hi" }), 400, '"messages" must be array'],
      ["/api/chat", JSON.stringify({ model: "llama3.2", messages: [{ role: "user", content: 5 }] }), 400, "messages.0.content"],
      ["/api/generate", JSON.stringify({ model: "llama3.2", prompt: "x", stream: "yes" }), 400, '"stream" must be boolean'],
      ["/api/chat", JSON.stringify({ model: "ghost", messages: [] }), 404, "model 'ghost' not found"],
    ];
    for (const [path, body, status, text] of cases) {
      const response = await post(path, body);
      expect({ path, body, status: response.status }).toEqual({ path, body, status });
      expect(response.headers.get("content-type")).toContain("application/json");
      expect(((await response.json()) as { error: string }).error).toContain(text);
    }
    expect(stack.fake.seen.length).toBe(0);
    expect(stack.store.listJobs({ limit: 10 }).length).toBe(0);
  });

  test("a model without a tag means :latest, and a freshly pulled model is found by one re-poll", async () => {
    stack = await startInProcess({ env: { FOREMAN_POLL_INTERVAL: "1h" } });
    expect((await post("/api/chat", chatBody("x", { model: "llama3.2:latest", stream: false }))).status).toBe(200);
    stack.fake.models.push("fresh:latest");
    expect((await post("/api/chat", chatBody("x", { model: "fresh", stream: false }))).status).toBe(200);
  });

  test("Ollama's error status passes through before the first chunk; after it, a last {error} line", async () => {
    stack = await startInProcess();
    stack.fake.failures.push({ kind: "status", status: 500, error: "llama-server process has terminated" });
    const before = await post("/api/chat", chatBody("x"));
    expect(before.status).toBe(500);
    expect(await before.json()).toEqual({ error: "llama-server process has terminated" });

    stack.fake.failures.push({ kind: "mid-stream", afterChunks: 2, error: "an error was encountered while running the model" });
    const after = await post("/api/chat", chatBody("one two three"));
    expect(after.status).toBe(200);
    const lines = (await after.text()).trim().split("\n");
    expect(lines.length).toBe(3);
    expect(JSON.parse(lines[2]!)).toEqual({ error: "an error was encountered while running the model" });

    const client = ollamaClient();
    stack.fake.failures.push({ kind: "mid-stream", afterChunks: 1, error: "boom" });
    const stream = await client.chat({ model: "llama3.2", messages: [{ role: "user", content: "x y" }], stream: true });
    await expect(
      (async () => {
        for await (const _ of stream);
      })(),
    ).rejects.toThrow("boom");
  });

  test("a stream that breaks off after output ends with an {error} line (tokens cannot be taken back)", async () => {
    stack = await startInProcess();
    stack.fake.failures.push({ kind: "drop", afterChunks: 1 });
    const streamed = await post("/api/chat", chatBody("one two three"));
    const lines = (await streamed.text()).trim().split("\n");
    expect(JSON.parse(lines.at(-1)!).error).toBeString();
  });

  test("a connection lost before any output is retried up to FOREMAN_MAX_ATTEMPTS, then 502", async () => {
    stack = await startInProcess({ env: { FOREMAN_MAX_ATTEMPTS: "2" } });
    stack.fake.failures.push({ kind: "drop", afterChunks: 0 }, { kind: "drop", afterChunks: 0 });
    const response = await post("/api/chat", chatBody("x", { stream: false }));
    expect(response.status).toBe(502);
    expect(((await response.json()) as { error: string }).error).toMatch(/unreachable|connection/);
    const job = stack.store.getJob(response.headers.get("x-foreman-job-id")!)!;
    expect(job.state).toBe("failed");
    expect(job.attempts).toBe(2);
    expect(stack.fake.seen.length).toBe(2);
  });

  test("a connection lost once is retried and the client gets its answer", async () => {
    stack = await startInProcess();
    stack.fake.failures.push({ kind: "drop", afterChunks: 0 });
    const response = await post("/api/chat", chatBody("again", { stream: false }));
    expect(response.status).toBe(200);
    expect(((await response.json()) as { message: { content: string } }).message.content).toBe("You said: again");
    expect(stack.store.getJob(response.headers.get("x-foreman-job-id")!)!.attempts).toBe(2);
  });

  test("unknown routes are 404 {error}; oversized bodies 413", async () => {
    stack = await startInProcess({ env: { FOREMAN_MAX_BODY: "1000" } });
    const missing = await stack.fetch("/api/nothing");
    expect(missing.status).toBe(404);
    expect(((await missing.json()) as { error: string }).error).toBeString();
    // A client states the length (fetch does); over a socket, Bun's backstop too: test/e2e/transport.test.ts.
    const body = chatBody("x".repeat(1500));
    const big = await post("/api/chat", body, { headers: { "content-length": String(body.length) } });
    expect(big.status).toBe(413);
    expect(((await big.json()) as { error: string }).error).toContain("too large");
  });
});

describe("the rest of Ollama's surface", () => {
  test("GET and HEAD / say Ollama is running; /healthz reports degraded while Ollama is down", async () => {
    stack = await startInProcess({ env: { FOREMAN_POLL_INTERVAL: "100ms" } });
    const root = await stack!.fetch(`/`);
    expect(await root.text()).toBe("Ollama is running");
    expect(root.headers.get("content-type")).toBe("text/plain; charset=utf-8");
    expect((await stack!.fetch(`/`, { method: "HEAD" })).status).toBe(200);
    const health = async () => (await (await stack!.fetch(`/healthz`)).json()) as { degraded: boolean };
    expect(await health()).toEqual({ status: "ok", degraded: false, reasons: [] } as never);
    const models = await (await stack!.fetch(`/api/tags`)).json();
    await stack.fake.stop();
    await until(async () => (await health()).degraded, 5000, "degraded");
    expect(await health()).toEqual({ status: "ok", degraded: true, reasons: ["ollama unreachable"] } as never);
    // The last known model list is kept while Ollama is away.
    expect(await (await stack!.fetch(`/api/tags`)).json()).toEqual(models);
    stack.fake.start();
    await until(async () => !(await health()).degraded, 5000, "recovery");
  });
});

describe("the bearer token", () => {
  test("every route but /healthz needs it, and it is never forwarded; FOREMAN_OLLAMA_TOKEN is", async () => {
    stack = await startInProcess({ env: { FOREMAN_TOKEN: "s3cret", FOREMAN_OLLAMA_TOKEN: "upstream-token" } });
    expect((await stack!.fetch(`/healthz`)).status).toBe(200);
    for (const auth of [undefined, "Bearer wrong", "Bearer s3cre", "s3cret", "Bearer s3cretX"]) {
      const response = await post("/api/chat", chatBody("x"), { headers: auth ? { authorization: auth } : {} });
      expect(response.status).toBe(401);
      expect(await response.json()).toEqual({ error: "unauthorized" });
    }
    expect((await stack!.fetch(`/api/tags`)).status).toBe(401);
    const client = ollamaClient({ authorization: "Bearer s3cret" });
    expect((await client.chat({ model: "llama3.2", messages: [{ role: "user", content: "hi" }] })).message.content).toBe(
      "You said: hi",
    );
    expect(stack.fake.seen[0]!.headers.authorization).toBe("Bearer upstream-token");
  });
});
