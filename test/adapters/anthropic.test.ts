import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import Anthropic from "@anthropic-ai/sdk";
import { adapterFor } from "../../src/adapters";
import { IncompleteAnswerError } from "../../src/adapters/adapter";
import { ApiError } from "../../src/errors";
import { FakeOllama } from "../fake-ollama";
import { bothAnswers, upstreamAnswer, withoutIds } from "./upstream-answers";

const messages = adapterFor("anthropic.messages");

let fake: FakeOllama;
beforeAll(() => {
  fake = new FakeOllama().start();
});
afterAll(async () => {
  await fake.stop();
});

function verdict(body: unknown): string {
  try {
    messages.describe(body);
    return "accepted";
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    return `${error.status} ${error.message}`;
  }
}

const user = (content: unknown) => [{ role: "user", content }];
const ok = { model: "llama3.2", max_tokens: 32 };
const event = (type: string, data: object) => `event: ${type}\ndata: ${JSON.stringify({ type, ...data })}`;

describe("describe: Ollama's checks and texts", () => {
  test("model, max_tokens and messages are required, in that order", () => {
    expect(verdict({})).toBe("400 model is required");
    expect(verdict({ model: "llama3.2", messages: user("hi") })).toBe("400 max_tokens is required and must be positive");
    expect(verdict({ model: "llama3.2", max_tokens: 0, messages: user("hi") })).toBe(
      "400 max_tokens is required and must be positive",
    );
    expect(verdict({ ...ok })).toBe("400 messages is required");
    expect(verdict({ ...ok, messages: [] })).toBe("400 messages is required");
  });

  test("wrong types and blocks Ollama refuses", () => {
    expect(verdict({ ...ok, max_tokens: "32", messages: user("hi") })).toBe(
      '400 invalid request: "max_tokens" must be integer or null',
    );
    expect(verdict({ ...ok, messages: user([{ type: "text", text: 5 }]) })).toBe(
      '400 invalid request: "messages.0.content.0.text" must be string or null',
    );
    expect(verdict({ ...ok, messages: user([{ type: "image", source: { type: "url", url: "https://x/y.png" } }]) })).toBe(
      "400 invalid image source type: url. Only base64 images are supported.",
    );
    expect(verdict({ ...ok, messages: [{ role: "assistant", content: [{ type: "tool_use", name: "f", input: {} }] }] })).toBe(
      "400 tool_use block missing required 'id' field",
    );
    expect(verdict("hi")).toBe("400 request body must be a JSON object");
  });

  test("stream defaults to false; the model key is the native one; the example is accepted", () => {
    const native = adapterFor("chat").describe({ model: "llama3.2", messages: user("hi") });
    expect(messages.describe({ ...ok, messages: user("hi"), system: [{ type: "text", text: "Be brief." }] })).toEqual({
      model: "llama3.2",
      modelKey: native.modelKey,
      stream: false,
    });
    expect(messages.describe({ ...ok, messages: user("hi"), stream: true }).stream).toBe(true);
    const [example] = messages.requestSchema.examples as unknown[];
    expect(messages.describe(example).stream).toBe(false);
  });
});

describe("messages from the fake's records", () => {
  const weather = {
    name: "get_weather",
    description: "Weather of a city",
    input_schema: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
  };
  const cases: Record<string, Record<string, unknown>> = {
    text: { ...ok, system: "Be brief.", messages: user("why is the sky blue") },
    "tool use": { ...ok, messages: user("get_weather for Paris"), tools: [weather] },
    "text then tool use": {
      ...ok,
      messages: [
        { role: "user", content: "get_weather for Paris" },
        { role: "assistant", content: [{ type: "tool_use", id: "call_1", name: "get_weather", input: { city: "Paris" } }] },
        { role: "user", content: [{ type: "tool_result", tool_use_id: "call_1", content: "sunny" }] },
      ],
      tools: [weather],
    },
  };
  for (const [name, body] of Object.entries(cases)) {
    test(`${name}: the stream assembles to the non-streaming body; only message_stop is final`, async () => {
      const { streamed, whole } = await bothAnswers(fake, messages, body);
      expect(streamed.framing).toBe("sse");
      expect(streamed.records.map((r) => messages.isFinal(r, "sse"))).toEqual(
        streamed.records.map((_, i, all) => i === all.length - 1),
      );
      expect(streamed.records.every((r) => messages.recordError(r, "sse") === undefined)).toBe(true);
      const assembled = JSON.parse(messages.assemble(streamed.records, "sse"));
      expect(withoutIds(assembled)).toEqual(withoutIds(JSON.parse(whole.records[0]!)));
      expect(messages.isFinal(whole.records[0]!, "whole")).toBe(true);
      expect(messages.assemble(whole.records, "whole")).toBe(whole.records[0]!);
    });
  }

  test("the tool's streamed input JSON becomes its input object", async () => {
    const { streamed } = await bothAnswers(fake, messages, cases["tool use"]!);
    const assembled = JSON.parse(messages.assemble(streamed.records, "sse"));
    expect(assembled.content).toEqual([
      { type: "tool_use", id: expect.stringMatching(/^call_/), name: "get_weather", input: { city: "Paris" } },
    ]);
    expect(assembled.stop_reason).toBe("tool_use");
  });

  test("a stream that ends without message_stop is incomplete", async () => {
    fake.failures.push({ kind: "mid-stream", afterChunks: 2, error: "runner crashed" });
    const { records } = await upstreamAnswer(fake, messages, messages.streamingBody({ ...cases.text!, stream: false }));
    expect(records[0]).toStartWith("event: message_start");
    expect(() => messages.assemble(records, "sse")).toThrow(IncompleteAnswerError);
  });

  test("Anthropic's own stream: thinking with its signature, split input JSON, ping, cumulative usage", () => {
    const records = [
      event("message_start", {
        message: {
          id: "msg_1",
          type: "message",
          role: "assistant",
          model: "m",
          content: [],
          stop_reason: null,
          stop_sequence: null,
          usage: { input_tokens: 10, output_tokens: 1 },
        },
      }),
      event("content_block_start", { index: 0, content_block: { type: "thinking", thinking: "", signature: "" } }),
      event("content_block_delta", { index: 0, delta: { type: "thinking_delta", thinking: "Look it " } }),
      event("content_block_delta", { index: 0, delta: { type: "thinking_delta", thinking: "up." } }),
      event("content_block_delta", { index: 0, delta: { type: "signature_delta", signature: "sig" } }),
      event("content_block_stop", { index: 0 }),
      event("ping", {}),
      event("content_block_start", { index: 1, content_block: { type: "text", text: "" } }),
      event("content_block_delta", { index: 1, delta: { type: "text_delta", text: "Checking." } }),
      event("content_block_stop", { index: 1 }),
      event("content_block_start", { index: 2, content_block: { type: "tool_use", id: "toolu_1", name: "f", input: {} } }),
      event("content_block_delta", { index: 2, delta: { type: "input_json_delta", partial_json: "" } }),
      event("content_block_delta", { index: 2, delta: { type: "input_json_delta", partial_json: '{"city": "Pa' } }),
      event("content_block_delta", { index: 2, delta: { type: "input_json_delta", partial_json: 'ris"}' } }),
      event("content_block_stop", { index: 2 }),
      event("message_delta", { delta: { stop_reason: "tool_use", stop_sequence: null }, usage: { output_tokens: 42 } }),
      event("message_stop", {}),
    ];
    expect(JSON.parse(messages.assemble(records, "sse"))).toEqual({
      id: "msg_1",
      type: "message",
      role: "assistant",
      model: "m",
      content: [
        { type: "thinking", thinking: "Look it up.", signature: "sig" },
        { type: "text", text: "Checking." },
        { type: "tool_use", id: "toolu_1", name: "f", input: { city: "Paris" } },
      ],
      stop_reason: "tool_use",
      stop_sequence: null,
      usage: { input_tokens: 10, output_tokens: 42 },
    });
  });

  test("recordError reads an error event only", () => {
    const error = event("error", { error: { type: "overloaded_error", message: "Overloaded" } });
    expect(messages.recordError(error, "sse")).toBe("Overloaded");
    expect(
      messages.recordError(event("content_block_delta", { index: 0, delta: { type: "text_delta", text: "error" } }), "sse"),
    ).toBe(undefined);
    const body = '{"type":"error","error":{"type":"api_error","message":"no"}}';
    expect(messages.recordError(body, "whole")).toBe("no");
    expect(messages.isFinal(body, "whole")).toBe(false);
  });
});

describe("a late failure as the Anthropic SDK sees it", () => {
  test("the error event raises an error with the message", async () => {
    const { records } = await upstreamAnswer(fake, messages, messages.streamingBody({ ...ok, messages: user("a b c") }));
    const sent = records.slice(0, 3);
    const failure = messages.failureRecord("ollama went away", "sse", sent.at(-1));
    expect(messages.recordError(failure.trimEnd(), "sse")).toBe("ollama went away");
    const text = sent.map((r) => `${r}\n\n`).join("") + failure;
    const server = Bun.serve({
      port: 0,
      hostname: "127.0.0.1",
      fetch: () => new Response(text, { headers: { "content-type": "text/event-stream" } }),
    });
    try {
      const client = new Anthropic({ baseURL: `http://127.0.0.1:${server.port}`, apiKey: "x", maxRetries: 0 });
      const stream = await client.messages.create({ ...ok, messages: [{ role: "user", content: "a b c" }], stream: true });
      const types: string[] = [];
      const run = async () => {
        for await (const item of stream) types.push(item.type);
      };
      await expect(run()).rejects.toThrow("ollama went away");
      expect(types[0]).toBe("message_start");
    } finally {
      await server.stop(true);
    }
  });
});
