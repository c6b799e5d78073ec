// The fake Ollama's own wire format beyond what the client libraries check: exact framing, error bodies,
// one GPU shared by every route, unbuffered pull progress, blobs, and connection drops that stay quiet.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { FakeOllama } from "../fake-ollama";

let fake: FakeOllama;
beforeAll(() => {
  fake = new FakeOllama().start();
});
afterAll(async () => {
  await fake.stop();
});

const post = (path: string, body: unknown, method = "POST") =>
  fetch(`${fake.url}${path}`, { method, body: typeof body === "string" ? body : JSON.stringify(body) });
const user = (content: string) => [{ role: "user", content }];

describe("OpenAI and Anthropic framing", () => {
  test("chat completions: data frames, a finish frame, usage, [DONE]; non-streamed JSON ends with a newline", async () => {
    const streamed = await post("/v1/chat/completions", {
      model: "llama3.2",
      messages: user("a b"),
      stream: true,
      stream_options: { include_usage: true },
    });
    expect(streamed.headers.get("content-type")).toBe("text/event-stream");
    const text = await streamed.text();
    expect(text).toMatch(/^(data: \{[^\n]+\}\n\n)+data: \[DONE\]\n\n$/);
    const frames = text
      .split("\n\n")
      .filter((f) => f.startsWith("data: {"))
      .map((f) => JSON.parse(f.slice(6)));
    expect(frames[0].choices[0].delta).toEqual({ role: "assistant", content: "You" });
    expect(frames[1].choices[0].delta).toEqual({ content: " said:" });
    expect(frames.at(-2).choices).toEqual([{ index: 0, delta: {}, finish_reason: "stop" }]);
    expect(frames.at(-1)).toMatchObject({ choices: [], usage: { completion_tokens: 4 } });

    const plain = await post("/v1/chat/completions", { model: "llama3.2", messages: user("a b") });
    expect(plain.headers.get("content-type")).toBe("application/json");
    expect((await plain.text()).endsWith("}\n")).toBe(true);
  });

  test("responses and messages stream event: and data: pairs, first and last events as Ollama sends them", async () => {
    const responses = await (await post("/v1/responses", { model: "llama3.2", input: "hi", stream: true })).text();
    const events = [...responses.matchAll(/event: (\S+)\ndata: (\{[^\n]+\})\n\n/g)];
    expect(events.map((e) => e[0]).join("")).toBe(responses);
    expect(events[0]![1]).toBe("response.created");
    expect(events.at(-1)![1]).toBe("response.completed");
    expect(events.map((e) => JSON.parse(e[2]!).sequence_number)).toEqual(events.map((_, i) => i));
    expect(responses).not.toContain("[DONE]");

    const messages = await (
      await post("/v1/messages", { model: "llama3.2", max_tokens: 8, messages: user("hi"), stream: true })
    ).text();
    const names = [...messages.matchAll(/event: (\S+)\ndata: \{[^\n]+\}\n\n/g)].map((e) => e[1]);
    expect(names[0]).toBe("message_start");
    expect(names.slice(-2)).toEqual(["message_delta", "message_stop"]);
  });

  test("errors in each API's shape and status", async () => {
    const openai = await post("/v1/chat/completions", { model: "nope", messages: user("hi") });
    expect(openai.status).toBe(404);
    expect(await openai.text()).toBe(
      '{"error":{"message":"model \'nope\' not found","type":"not_found_error","param":null,"code":null}}\n',
    );
    const badJson = await post("/v1/chat/completions", "{");
    expect(badJson.status).toBe(400);
    expect((await badJson.json()).error.type).toBe("invalid_request_error");
    const empty = await post("/v1/chat/completions", { model: "llama3.2", messages: [] });
    expect((await empty.json()).error.message).toBe("[] is too short - 'messages'");

    const anthropic = await post("/v1/messages", { model: "nope", max_tokens: 8, messages: user("hi") });
    expect(anthropic.status).toBe(404);
    expect(await anthropic.json()).toMatchObject({
      type: "error",
      error: { type: "not_found_error", message: "model 'nope' not found" },
    });
    const noMax = await post("/v1/messages", { model: "llama3.2", messages: user("hi") });
    expect(noMax.status).toBe(400);
    expect((await noMax.json()).error).toEqual({
      type: "invalid_request_error",
      message: "max_tokens is required and must be positive",
    });

    expect((await fetch(`${fake.url}/v1/nowhere`)).status).toBe(404);
    expect((await fetch(`${fake.url}/v1/chat/completions`)).status).toBe(405);
  });

  test("a failure mid-stream ends the SSE stream without its closing frame", async () => {
    fake.failures.push({ kind: "mid-stream", afterChunks: 1, error: "boom" });
    const openai = await (await post("/v1/chat/completions", { model: "llama3.2", messages: user("a b"), stream: true })).text();
    expect(openai).toContain('"content":"You"');
    expect(openai).not.toContain("[DONE]");
    fake.failures.push({ kind: "mid-stream", afterChunks: 1, error: "boom" });
    const body = { model: "llama3.2", max_tokens: 8, messages: user("a b"), stream: true };
    const anthropic = await (await post("/v1/messages", body)).text();
    expect(anthropic).toContain("message_start");
    expect(anthropic).not.toContain("message_stop");
  });
});

describe("one GPU for every route", () => {
  test("generations on native, OpenAI and Anthropic routes count in the same inFlight and seen", async () => {
    const busy = new FakeOllama({ tokenDelayMs: 20 }).start();
    try {
      const send = (path: string, body: unknown) => fetch(`${busy.url}${path}`, { method: "POST", body: JSON.stringify(body) });
      const arrivals = Promise.all([busy.nextArrival(), busy.nextArrival()]);
      const answers = await Promise.all([
        send("/api/chat", { model: "llama3.2", messages: user("a"), stream: false }),
        send("/v1/chat/completions", { model: "llama3.2", messages: user("b") }),
        send("/v1/responses", { model: "llama3.2", input: "c" }),
        send("/v1/messages", { model: "llama3.2", max_tokens: 8, messages: user("d") }),
        send("/v1/completions", { model: "llama3.2", prompt: "e" }),
      ]);
      await arrivals;
      expect(answers.map((a) => a.status)).toEqual([200, 200, 200, 200, 200]);
      expect(busy.seen.map((s) => s.path).sort()).toEqual(
        ["/api/chat", "/v1/chat/completions", "/v1/completions", "/v1/messages", "/v1/responses"].sort(),
      );
      // All five were in flight together: the count any caller of foreman must keep at 1.
      expect(busy.maxInFlight).toBe(5);
      expect(busy.inFlight).toBe(0);
      expect(busy.seen.find((s) => s.path === "/v1/messages")!.body).toMatchObject({ max_tokens: 8 });
    } finally {
      await busy.stop();
    }
  });
});

describe("model management", () => {
  test("pull progress lines arrive one by one, as they are made", async () => {
    const slow = new FakeOllama({ pullDelayMs: 40 }).start();
    try {
      const response = await fetch(`${slow.url}/api/pull`, { method: "POST", body: JSON.stringify({ name: "phi3" }) });
      expect(response.headers.get("content-type")).toBe("application/x-ndjson");
      const reader = response.body!.getReader();
      const decoder = new TextDecoder();
      const reads: string[] = [];
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        reads.push(decoder.decode(value));
      }
      expect(reads.length).toBe(7);
      for (const read of reads) expect(read).toMatch(/^\{[^\n]+\}\n$/);
      expect(JSON.parse(reads.at(-1)!)).toEqual({ status: "success" });
      expect(slow.models).toContain("phi3:latest");
    } finally {
      await slow.stop();
    }
  });

  test("blobs: HEAD 404 then 200; POST checks the sha256 of a streamed body and records its size", async () => {
    const parts = ["first part, ", "second part"].map((s) => new TextEncoder().encode(s));
    const digest = `sha256:${new Bun.CryptoHasher("sha256").update(parts.map((p) => new TextDecoder().decode(p)).join("")).digest("hex")}`;
    expect((await fetch(`${fake.url}/api/blobs/${digest}`, { method: "HEAD" })).status).toBe(404);
    const body = () =>
      new ReadableStream<Uint8Array>({
        start(controller) {
          for (const part of parts) controller.enqueue(part);
          controller.close();
        },
      });
    const created = await fetch(`${fake.url}/api/blobs/${digest}`, { method: "POST", body: body() });
    expect(created.status).toBe(201);
    expect(fake.blobs.get(digest)).toBe(23);
    expect((await fetch(`${fake.url}/api/blobs/${digest}`, { method: "POST", body: body() })).status).toBe(200);
    expect((await fetch(`${fake.url}/api/blobs/${digest}`, { method: "HEAD" })).status).toBe(200);
    const wrong = await fetch(`${fake.url}/api/blobs/sha256:${"0".repeat(64)}`, { method: "POST", body: "other" });
    expect(wrong.status).toBe(400);
    expect((await wrong.json()).error).toStartWith("digest mismatch");
  });

  test("copy and delete answer an empty 200; unknown models 404 with Ollama's texts", async () => {
    const copied = await post("/api/copy", { source: "llama3.2", destination: "llama-copy" });
    expect([copied.status, await copied.text()]).toEqual([200, ""]);
    const deleted = await post("/api/delete", { name: "llama-copy" }, "DELETE");
    expect([deleted.status, await deleted.text()]).toEqual([200, ""]);
    const again = await post("/api/delete", { name: "llama-copy" }, "DELETE");
    expect([again.status, await again.json()]).toEqual([404, { error: "model 'llama-copy' not found" }]);
    const copyMissing = await post("/api/copy", { source: "nope", destination: "x" });
    expect([copyMissing.status, await copyMissing.json()]).toEqual([404, { error: 'model "nope" not found' }]);
  });
});

test("a dropped connection prints nothing in the fake's process", async () => {
  const script = `
    import { FakeOllama } from ${JSON.stringify(`${import.meta.dir}/../fake-ollama.ts`)};
    const fake = new FakeOllama().start();
    fake.failures.push({ kind: "drop", afterChunks: 1 }, { kind: "drop", afterChunks: 0 });
    console.log(fake.port);
  `;
  const child = Bun.spawn(["bun", "-e", script], { stdout: "pipe", stderr: "pipe" });
  try {
    const reader = child.stdout.getReader();
    const port = Number(new TextDecoder().decode((await reader.read()).value).trim());
    const chat = (stream: boolean) =>
      fetch(`http://127.0.0.1:${port}/api/chat`, {
        method: "POST",
        body: JSON.stringify({ model: "llama3.2", messages: user("a b"), stream }),
      });
    const streamed = await chat(true);
    expect(await streamed.text().catch((e: Error) => e)).toBeInstanceOf(Error);
    expect(
      await chat(false)
        .then((r) => r.text())
        .catch((e: Error) => e),
    ).toBeInstanceOf(Error);
    // The fake still answers, and has written nothing to stderr.
    expect((await (await chat(false)).json()).message.content).toBe("You said: a b");
  } finally {
    child.kill();
  }
  await child.exited;
  expect(await new Response(child.stderr).text()).toBe("");
});
