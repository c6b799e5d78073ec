import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import OpenAI from "openai";
import { adapterFor } from "../../src/adapters";
import { IncompleteAnswerError, type WireAdapter } from "../../src/adapters/adapter";
import { ApiError } from "../../src/errors";
import { FakeOllama } from "../fake-ollama";
import { bothAnswers, upstreamAnswer, withoutIds } from "./upstream-answers";

const chat = adapterFor("openai.chat");
const completion = adapterFor("openai.completion");
const responses = adapterFor("openai.responses");

let fake: FakeOllama;
beforeAll(() => {
  fake = new FakeOllama().start();
});
afterAll(async () => {
  await fake.stop();
});

/** The 400 text describe() throws for a body, or "accepted". */
function verdict(adapter: WireAdapter, body: unknown): string {
  try {
    adapter.describe(body);
    return "accepted";
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    return `${error.status} ${error.message}`;
  }
}

const user = (content: string) => [{ role: "user" as const, content }];
const weatherTool = {
  type: "function",
  function: {
    name: "get_weather",
    description: "Weather of a city",
    parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
  },
};
const citySchema = {
  type: "object",
  properties: { city: { type: "string" }, population: { type: "integer" } },
  required: ["city", "population"],
};

describe("describe: Ollama's checks and texts", () => {
  test("chat completions", () => {
    expect(verdict(chat, { model: "llama3.2" })).toBe("400 [] is too short - 'messages'");
    expect(verdict(chat, { model: "llama3.2", messages: [] })).toBe("400 [] is too short - 'messages'");
    expect(verdict(chat, { messages: user("hi") })).toBe("400 model is required");
    expect(verdict(chat, { model: "llama3.2", messages: user("hi"), stream: "yes" })).toBe(
      '400 invalid request: "stream" must be boolean or null',
    );
    expect(verdict(chat, { model: "llama3.2", messages: [{ role: "user", content: 5 }] })).toBe(
      '400 invalid request: "messages.0.content" must be string or array or null',
    );
    expect(verdict(chat, { model: "llama3.2", messages: user("hi"), stream_options: { include_usage: "y" } })).toBe(
      '400 invalid request: "stream_options.include_usage" must be boolean or null',
    );
    expect(verdict(chat, { model: "llama3.2", messages: user("hi"), reasoning_effort: "huge" })).toBe(
      '400 invalid reasoning value: "huge" (must be "minimal", "low", "medium", "high", "xhigh", "ultra", "max", or "none")',
    );
    expect(verdict(chat, [1])).toBe("400 request body must be a JSON object");
    // Nulls are accepted wherever Go's decoder accepts them, unknown fields are ignored.
    expect(verdict(chat, { model: "llama3.2", messages: user("hi"), stop: null, tools: null, n: 1, user: "x" })).toBe("accepted");
  });

  test("completions: prompt is one string; a missing model is the caller's 404", () => {
    expect(verdict(completion, { model: "llama3.2", prompt: ["a", "b"] })).toBe("400 prompt must be a string");
    expect(verdict(completion, { model: "llama3.2", prompt: "hi", max_tokens: 1.5 })).toBe(
      '400 invalid request: "max_tokens" must be integer',
    );
    expect(completion.describe({ prompt: "hi" }).model).toBe("");
  });

  test("responses: input items and content parts as Ollama decodes them", () => {
    const ok = { model: "llama3.2" };
    expect(verdict(responses, { ...ok, input: [{ type: "bogus" }] })).toBe('400 input[0]: unknown input item type: "bogus"');
    expect(verdict(responses, { ...ok, input: ["hi", { content: "x" }] })).toBe("400 input[0]: an input item must be an object");
    expect(verdict(responses, { ...ok, input: [{ content: "x" }] })).toBe(
      "400 input[0]: input item missing required 'type' field",
    );
    expect(verdict(responses, { ...ok, input: [{ role: "user", content: [{ type: "weird" }] }] })).toBe(
      "400 input[0]: content[0]: unknown content type: weird",
    );
    expect(verdict(responses, { ...ok, input: [{ role: "user", content: [{ type: "input_file", file_id: "f" }] }] })).toBe(
      "400 file inputs are not currently supported",
    );
    expect(verdict(responses, { ...ok, input: 3 })).toBe('400 invalid request: "input" must be string or array or null');
    expect(verdict(responses, { input: "hi" })).toBe("400 model is required");
    expect(verdict(responses, { ...ok, input: "hi", reasoning: { effort: "x" } })).toMatch(/^400 invalid reasoning value: "x"/);
    const history = [
      { role: "user", content: [{ type: "input_text", text: "weather?" }] },
      { type: "function_call", call_id: "c1", name: "get_weather", arguments: "{}" },
      { type: "function_call_output", call_id: "c1", output: [{ type: "input_text", text: "sunny" }] },
      { type: "reasoning", summary: [] },
    ];
    expect(verdict(responses, { ...ok, input: history })).toBe("accepted");
  });

  test("stream defaults to false; a /v1 request counts as the same model as a native one", () => {
    const native = adapterFor("chat").describe({ model: "llama3.2", messages: user("hi"), options: { temperature: 0 } });
    for (const [adapter, body] of [
      [chat, { model: "llama3.2", messages: user("hi") }],
      [completion, { model: "llama3.2", prompt: "hi" }],
      [responses, { model: "llama3.2", input: "hi" }],
    ] as const) {
      expect(adapter.describe(body)).toEqual({ model: "llama3.2", modelKey: native.modelKey, stream: false });
      expect(adapter.describe({ ...body, stream: true }).stream).toBe(true);
    }
  });

  test("each schema's example is accepted and does not stream", () => {
    for (const adapter of [chat, completion, responses]) {
      const [example] = adapter.requestSchema.examples as unknown[];
      expect(adapter.describe(example).stream).toBe(false);
    }
  });
});

describe("chat completions from the fake's records", () => {
  const cases: Record<string, Record<string, unknown>> = {
    text: { model: "llama3.2", messages: user("why is the sky blue") },
    "tool calls": { model: "llama3.2", messages: user("get_weather for Paris"), tools: [weatherTool] },
    "structured output": {
      model: "llama3.2",
      messages: user("a city in France"),
      response_format: { type: "json_schema", json_schema: { name: "city", schema: citySchema } },
    },
  };
  for (const [name, body] of Object.entries(cases)) {
    test(`${name}: the stream assembles to the non-streaming body; only [DONE] is final`, async () => {
      const { streamed, whole } = await bothAnswers(fake, chat, body);
      expect(streamed.framing).toBe("sse");
      expect(streamed.records.map((r) => chat.isFinal(r, "sse"))).toEqual(
        streamed.records.map((_, i, all) => i === all.length - 1),
      );
      expect(streamed.records.every((r) => chat.recordError(r, "sse") === undefined)).toBe(true);
      const assembled = JSON.parse(chat.assemble(streamed.records, "sse"));
      expect(whole.framing).toBe("whole");
      expect(withoutIds(assembled)).toEqual(withoutIds(JSON.parse(whole.records[0]!)));
      // A whole body is kept byte for byte.
      expect(chat.isFinal(whole.records[0]!, "whole")).toBe(true);
      expect(chat.assemble(whole.records, "whole")).toBe(whole.records[0]!);
    });
  }

  test("the tool call and the structured answer come through as OpenAI shapes them", async () => {
    const tools = JSON.parse(chat.assemble((await bothAnswers(fake, chat, cases["tool calls"]!)).streamed.records, "sse"));
    expect(tools.choices[0].finish_reason).toBe("tool_calls");
    expect(tools.choices[0].message.tool_calls).toEqual([
      {
        id: expect.stringMatching(/^call_/),
        index: 0,
        type: "function",
        function: { name: "get_weather", arguments: '{"city":"Paris"}' },
      },
    ]);
    const structured = (await bothAnswers(fake, chat, cases["structured output"]!)).streamed;
    expect(structured.records.length).toBeGreaterThan(4);
    expect(JSON.parse(JSON.parse(chat.assemble(structured.records, "sse")).choices[0].message.content)).toEqual({
      city: "France",
      population: 42,
    });
  });

  test("a stream that breaks off before [DONE] is incomplete", async () => {
    fake.failures.push({ kind: "mid-stream", afterChunks: 2, error: "runner crashed" });
    const { records } = await upstreamAnswer(fake, chat, chat.streamingBody(cases.text!));
    expect(records.some((r) => chat.isFinal(r, "sse"))).toBe(false);
    expect(() => chat.assemble(records, "sse")).toThrow(IncompleteAnswerError);
    expect(() => chat.assemble([], "whole")).toThrow(IncompleteAnswerError);
    expect(() => chat.assemble(['{"id":"chatcmpl-1","obj'], "whole")).toThrow(IncompleteAnswerError);
  });

  test("OpenAI-style streams: reasoning, tool-call fragments merged by index, logprobs, usage", () => {
    const frame = (choice: object, extra: object = {}) =>
      `data: ${JSON.stringify({ id: "chatcmpl-9", object: "chat.completion.chunk", created: 7, model: "m", system_fingerprint: "fp", choices: [choice], ...extra })}`;
    const records = [
      frame({ index: 0, delta: { role: "assistant", reasoning: "Think" }, finish_reason: null }),
      frame({ index: 0, delta: { reasoning: "ing." }, finish_reason: null }),
      frame({
        index: 0,
        delta: { content: "Sure" },
        logprobs: { content: [{ token: "Sure", logprob: -0.1 }] },
        finish_reason: null,
      }),
      frame({
        index: 0,
        delta: { tool_calls: [{ index: 0, id: "call_a", type: "function", function: { name: "f", arguments: "" } }] },
        finish_reason: null,
      }),
      frame({ index: 0, delta: { tool_calls: [{ index: 0, function: { arguments: '{"x":' } }] }, finish_reason: null }),
      frame({ index: 0, delta: { tool_calls: [{ index: 0, function: { arguments: "1}" } }] }, finish_reason: null }),
      // Ollama numbers calls per chunk: a new id at index 0 is a second call.
      frame({
        index: 0,
        delta: { tool_calls: [{ index: 0, id: "call_b", type: "function", function: { name: "g", arguments: "{}" } }] },
        finish_reason: null,
      }),
      frame({ index: 0, delta: {}, finish_reason: "tool_calls" }),
      `data: ${JSON.stringify({ id: "chatcmpl-9", object: "chat.completion.chunk", created: 7, model: "m", system_fingerprint: "fp", choices: [], usage: { prompt_tokens: 3, completion_tokens: 5, total_tokens: 8 } })}`,
      "data: [DONE]",
    ];
    expect(JSON.parse(chat.assemble(records, "sse"))).toEqual({
      id: "chatcmpl-9",
      object: "chat.completion",
      created: 7,
      model: "m",
      system_fingerprint: "fp",
      choices: [
        {
          index: 0,
          message: {
            role: "assistant",
            content: "Sure",
            reasoning: "Thinking.",
            tool_calls: [
              { id: "call_a", index: 0, type: "function", function: { name: "f", arguments: '{"x":1}' } },
              { id: "call_b", index: 0, type: "function", function: { name: "g", arguments: "{}" } },
            ],
          },
          finish_reason: "tool_calls",
          logprobs: { content: [{ token: "Sure", logprob: -0.1 }] },
        },
      ],
      usage: { prompt_tokens: 3, completion_tokens: 5, total_tokens: 8 },
    });
  });

  test("recordError reads an error frame, not a text that mentions errors", () => {
    const error = 'data: {"error":{"message":"model crashed","type":"api_error","param":null,"code":null}}';
    expect(chat.recordError(error, "sse")).toBe("model crashed");
    const text = `data: ${JSON.stringify({ object: "chat.completion.chunk", choices: [{ index: 0, delta: { content: '{"error": 1}' } }] })}`;
    expect(chat.recordError(text, "sse")).toBeUndefined();
    expect(chat.recordError('{"error":{"message":"no","type":"api_error"}}\n', "whole")).toBe("no");
    expect(chat.isFinal('{"error":{"message":"no","type":"api_error"}}\n', "whole")).toBe(false);
  });

  test("the streaming body asks for a stream and its usage, keeping the client's stream options", () => {
    expect(chat.streamingBody({ model: "m", stream_options: { include_usage: false, extra: 1 } })).toEqual({
      model: "m",
      stream: true,
      stream_options: { include_usage: true, extra: 1 },
    });
    expect(responses.streamingBody({ model: "m", stream: false })).toEqual({ model: "m", stream: true });
  });
});

describe("completions from the fake's records", () => {
  test("the stream (zero usage on every frame, counts on the last) assembles to the non-streaming body", async () => {
    const { streamed, whole } = await bothAnswers(fake, completion, { model: "llama3.2", prompt: "The sky is" });
    expect(streamed.records.filter((r) => completion.isFinal(r, "sse"))).toEqual(["data: [DONE]"]);
    const assembled = JSON.parse(completion.assemble(streamed.records, "sse"));
    expect(withoutIds(assembled)).toEqual(withoutIds(JSON.parse(whole.records[0]!)));
    expect(assembled.usage.completion_tokens).toBeGreaterThan(0);
    expect(assembled.choices[0].text).toBe("You said: The sky is");
  });

  test("a stream without [DONE] is incomplete", async () => {
    fake.failures.push({ kind: "drop", afterChunks: 1 });
    const { records, broken } = await upstreamAnswer(
      fake,
      completion,
      completion.streamingBody({ model: "llama3.2", prompt: "x y" }),
    );
    expect(broken).toBe(true);
    expect(records.length).toBeGreaterThan(0);
    expect(() => completion.assemble(records, "sse")).toThrow(IncompleteAnswerError);
  });
});

describe("responses from the fake's records", () => {
  const cases: Record<string, Record<string, unknown>> = {
    text: { model: "llama3.2", input: "why is the sky blue", instructions: "Be brief." },
    "tool calls": {
      model: "llama3.2",
      input: [{ role: "user", content: "get_weather for Paris" }],
      tools: [{ type: "function", ...weatherTool.function }],
    },
    "structured output": {
      model: "llama3.2",
      input: "a city in France",
      text: { format: { type: "json_schema", name: "city", schema: citySchema } },
    },
  };
  for (const [name, body] of Object.entries(cases)) {
    test(`${name}: response.completed's response is the non-streaming body`, async () => {
      const { streamed, whole } = await bothAnswers(fake, responses, body);
      const finals = streamed.records.filter((r) => responses.isFinal(r, "sse"));
      expect(finals).toEqual([streamed.records.at(-1)!]);
      expect(streamed.records.every((r) => responses.recordError(r, "sse") === undefined)).toBe(true);
      const assembled = JSON.parse(responses.assemble(streamed.records, "sse"));
      expect(withoutIds(assembled)).toEqual(withoutIds(JSON.parse(whole.records[0]!)));
      // Its `"error": null` is no error.
      expect(responses.isFinal(whole.records[0]!, "whole")).toBe(true);
      expect(responses.recordError(whole.records[0]!, "whole")).toBeUndefined();
      expect(responses.assemble(whole.records, "whole")).toBe(whole.records[0]!);
    });
  }

  test("failures: error and response.failed events; a stream without response.completed is incomplete", async () => {
    expect(responses.recordError('event: error\ndata: {"type":"error","code":null,"message":"boom","param":null}', "sse")).toBe(
      "boom",
    );
    const failed = {
      type: "response.failed",
      response: { status: "failed", error: { code: "server_error", message: "search failed" } },
    };
    expect(responses.recordError(`event: response.failed\ndata: ${JSON.stringify(failed)}`, "sse")).toBe("search failed");
    fake.failures.push({ kind: "mid-stream", afterChunks: 1, error: "runner crashed" });
    const { records } = await upstreamAnswer(fake, responses, responses.streamingBody(cases.text!));
    expect(() => responses.assemble(records, "sse")).toThrow(IncompleteAnswerError);
  });
});

describe("a late failure as the openai SDK sees it", () => {
  /** Serves the records of a real stream, cut before its end, then the adapter's failure record. */
  async function failingStream(adapter: WireAdapter, body: Record<string, unknown>, keep: number) {
    const { records } = await upstreamAnswer(fake, adapter, adapter.streamingBody(body));
    const sent = records.slice(0, keep);
    const text = sent.map((r) => `${r}\n\n`).join("") + adapter.failureRecord("ollama went away", "sse", sent.at(-1));
    const server = Bun.serve({
      port: 0,
      hostname: "127.0.0.1",
      fetch: () => new Response(text, { headers: { "content-type": "text/event-stream" } }),
    });
    return { server, client: new OpenAI({ baseURL: `http://127.0.0.1:${server.port}/v1`, apiKey: "x", maxRetries: 0 }), sent };
  }

  test("chat completions: the error frame raises an APIError with the message", async () => {
    const { server, client } = await failingStream(chat, { model: "llama3.2", messages: user("a b c") }, 2);
    try {
      const stream = await client.chat.completions.create({ model: "llama3.2", messages: user("a b c"), stream: true });
      const seen: string[] = [];
      const run = async () => {
        for await (const chunk of stream) seen.push(chunk.choices[0]?.delta.content ?? "");
      };
      await expect(run()).rejects.toThrow("ollama went away");
      expect(seen.join("")).toBe("You said:");
    } finally {
      await server.stop(true);
    }
  });

  test("responses: the error event raises, numbered after the last event sent", async () => {
    const { server, client, sent } = await failingStream(responses, { model: "llama3.2", input: "a b c" }, 4);
    try {
      const record = responses.failureRecord("ollama went away", "sse", sent.at(-1));
      expect(JSON.parse(record.split("data: ")[1]!)).toEqual({
        type: "error",
        code: null,
        message: "ollama went away",
        param: null,
        sequence_number: 4,
      });
      expect(responses.recordError(record.trimEnd(), "sse")).toBe("ollama went away");
      const stream = await client.responses.create({ model: "llama3.2", input: "a b c", stream: true });
      const types: string[] = [];
      const run = async () => {
        for await (const event of stream) types.push(event.type);
      };
      await expect(run()).rejects.toThrow("ollama went away");
      expect(types[0]).toBe("response.created");
    } finally {
      await server.stop(true);
    }
  });
});
