// The client-library conformance suite: the official clients of every API Ollama serves, pointed at a
// base URL (the fake Ollama directly, or foreman in front of it), must get the same answers. The expected
// values follow the fake's documented rules (test/fake/reply.ts): "You said: <prompt>", a tool call when
// the prompt names a tool (string arguments = the prompt's last word), "Tool said: <result>" after a tool
// result, and a schema-shaped JSON answer for structured output. Ids, timestamps and durations are never
// compared. The `fake` handle is only used to slow tokens down (for abort) and for names unique to a run.
import Anthropic from "@anthropic-ai/sdk";
import { createOpenAICompatible } from "@ai-sdk/openai-compatible";
import { AIMessageChunk } from "@langchain/core/messages";
import { ChatOllama } from "@langchain/ollama";
import { ChatOpenAI } from "@langchain/openai";
import { generateText, isStepCount, jsonSchema, Output, streamText, tool, type LanguageModel } from "ai";
import { describe, expect, test } from "bun:test";
import { Ollama } from "ollama";
import { createOllama } from "ollama-ai-provider-v2";
import OpenAI from "openai";
import type { FakeOllama } from "../fake-ollama";

/** Where the suite sends its requests, and the fake Ollama that answers them in the end. */
export interface ConformanceTarget {
  baseUrl: string;
  fake: FakeOllama;
  /** The key each client is given the way its users give it (an API key, or a Bearer header); default "ollama". */
  apiKey?: string;
}

const MODEL = "llama3.2";
const EMBED_MODEL = "all-minilm";
const PROMPT = "Hello there, conformance";
const ANSWER = `You said: ${PROMPT}`;
const TOOL_PROMPT = "Use get_weather for Paris";
const TOOL_ARGS = { city: "Paris" };
const TOOL_RESULT = "18C and sunny";
const TOOL_ANSWER = `Tool said: ${TOOL_RESULT}`;
const WEATHER_PARAMETERS = {
  type: "object" as const,
  properties: { city: { type: "string", description: "a city name" } },
  required: ["city"],
  additionalProperties: false,
};
const STRUCTURED_PROMPT = "Describe the city of Lyon";
const CITY_SCHEMA = {
  type: "object" as const,
  properties: { city: { type: "string" }, population: { type: "integer" }, capital: { type: "boolean" } },
  required: ["city", "population", "capital"],
  additionalProperties: false,
};
const CITY = { city: "Lyon", population: 42, capital: true };

/** Registers the conformance tests for every client library against `target()` (read when tests run). */
export function describeClientConformance(name: string, target: () => ConformanceTarget): void {
  const url = () => target().baseUrl;
  const key = () => target().apiKey ?? "ollama";
  const bearer = () => ({ Authorization: `Bearer ${key()}` });

  describe(`${name}: openai`, () => {
    const client = () => new OpenAI({ baseURL: `${url()}/v1`, apiKey: key(), maxRetries: 0 });

    test("chat, not streamed", async () => {
      const completion = await client().chat.completions.create({ model: MODEL, messages: [{ role: "user", content: PROMPT }] });
      expect(completion.object).toBe("chat.completion");
      expect(completion.model).toBe(MODEL);
      expect(completion.choices[0]!.message).toMatchObject({ role: "assistant", content: ANSWER });
      expect(completion.choices[0]!.finish_reason).toBe("stop");
      expect(completion.usage!.completion_tokens).toBeGreaterThan(0);
      expect(completion.usage!.total_tokens).toBe(completion.usage!.prompt_tokens + completion.usage!.completion_tokens);
    });

    test("chat, streamed, with usage", async () => {
      const stream = await client().chat.completions.create({
        model: MODEL,
        messages: [{ role: "user", content: PROMPT }],
        stream: true,
        stream_options: { include_usage: true },
      });
      let text = "";
      const finishes: unknown[] = [];
      let usage: OpenAI.CompletionUsage | undefined;
      let chunks = 0;
      for await (const chunk of stream) {
        chunks++;
        text += chunk.choices[0]?.delta.content ?? "";
        if (chunk.choices[0]?.finish_reason) finishes.push(chunk.choices[0].finish_reason);
        if (chunk.usage) usage = chunk.usage;
      }
      expect(text).toBe(ANSWER);
      expect(chunks).toBeGreaterThan(2);
      expect(finishes).toEqual(["stop"]);
      expect(usage!.completion_tokens).toBeGreaterThan(0);
    });

    test("chat with a tool: the call, then the answer to its result", async () => {
      const tools: OpenAI.ChatCompletionTool[] = [
        { type: "function", function: { name: "get_weather", description: "Weather in a city", parameters: WEATHER_PARAMETERS } },
      ];
      const messages: OpenAI.ChatCompletionMessageParam[] = [{ role: "user", content: TOOL_PROMPT }];
      const first = await client().chat.completions.create({ model: MODEL, messages, tools });
      const choice = first.choices[0]!;
      expect(choice.finish_reason).toBe("tool_calls");
      const call = choice.message.tool_calls![0]! as OpenAI.ChatCompletionMessageFunctionToolCall;
      expect(call.type).toBe("function");
      expect(call.function.name).toBe("get_weather");
      expect(JSON.parse(call.function.arguments)).toEqual(TOOL_ARGS);

      const second = await client().chat.completions.create({
        model: MODEL,
        tools,
        messages: [...messages, choice.message, { role: "tool", tool_call_id: call.id, content: TOOL_RESULT }],
      });
      expect(second.choices[0]!.message.content).toBe(TOOL_ANSWER);

      const stream = await client().chat.completions.create({ model: MODEL, messages, tools, stream: true });
      const streamed: Array<{ name?: string; arguments?: string }> = [];
      for await (const chunk of stream) for (const c of chunk.choices[0]?.delta.tool_calls ?? []) streamed.push(c.function ?? {});
      expect(streamed.map((c) => c.name)).toEqual(["get_weather"]);
      expect(JSON.parse(streamed[0]!.arguments!)).toEqual(TOOL_ARGS);
    });

    test("chat with response_format json_schema answers the schema", async () => {
      const completion = await client().chat.completions.create({
        model: MODEL,
        messages: [{ role: "user", content: STRUCTURED_PROMPT }],
        response_format: { type: "json_schema", json_schema: { name: "city", schema: CITY_SCHEMA, strict: true } },
      });
      expect(JSON.parse(completion.choices[0]!.message.content!)).toEqual(CITY);
    });

    test("completions, not streamed and streamed", async () => {
      const completion = await client().completions.create({ model: MODEL, prompt: PROMPT });
      expect(completion.object).toBe("text_completion");
      expect(completion.choices[0]).toMatchObject({ text: ANSWER, finish_reason: "stop" });
      let text = "";
      for await (const chunk of await client().completions.create({ model: MODEL, prompt: PROMPT, stream: true })) {
        text += chunk.choices[0]?.text ?? "";
      }
      expect(text).toBe(ANSWER);
    });

    test("responses, not streamed and streamed", async () => {
      const response = await client().responses.create({ model: MODEL, input: PROMPT, instructions: "Be brief." });
      expect(response.status).toBe("completed");
      expect(response.output_text).toBe(ANSWER);
      expect(response.usage!.output_tokens).toBeGreaterThan(0);

      const stream = await client().responses.create({ model: MODEL, input: PROMPT, stream: true });
      let text = "";
      const types: string[] = [];
      let completed: OpenAI.Responses.Response | undefined;
      for await (const event of stream) {
        types.push(event.type);
        if (event.type === "response.output_text.delta") text += event.delta;
        if (event.type === "response.completed") completed = event.response;
      }
      expect(text).toBe(ANSWER);
      expect(types[0]).toBe("response.created");
      expect(types.at(-1)).toBe("response.completed");
      expect(completed!.output_text ?? (completed!.output[0] as OpenAI.Responses.ResponseOutputMessage).content[0]).toBeTruthy();
    });

    test("responses with a tool and with a json_schema text format", async () => {
      const response = await client().responses.create({
        model: MODEL,
        input: TOOL_PROMPT,
        tools: [{ type: "function", name: "get_weather", description: "Weather", parameters: WEATHER_PARAMETERS, strict: true }],
      });
      const call = response.output[0] as OpenAI.Responses.ResponseFunctionToolCall;
      expect(call.type).toBe("function_call");
      expect(call.name).toBe("get_weather");
      expect(JSON.parse(call.arguments)).toEqual(TOOL_ARGS);

      const structured = await client().responses.create({
        model: MODEL,
        input: STRUCTURED_PROMPT,
        text: { format: { type: "json_schema", name: "city", schema: CITY_SCHEMA, strict: true } },
      });
      expect(JSON.parse(structured.output_text)).toEqual(CITY);
    });

    test("embeddings, float and base64", async () => {
      const floats = await client().embeddings.create({ model: EMBED_MODEL, input: ["one", "three"], encoding_format: "float" });
      expect(floats.data.map((d) => d.index)).toEqual([0, 1]);
      const base64 = await client().embeddings.create({ model: EMBED_MODEL, input: ["one", "three"] });
      for (const [i, item] of base64.data.entries()) {
        expect(item.embedding.length).toBeGreaterThan(0);
        // Unit vectors either way; base64 carries float32, so compare loosely.
        expect(Math.hypot(...item.embedding)).toBeCloseTo(1, 5);
        item.embedding.forEach((v, j) => expect(v).toBeCloseTo(floats.data[i]!.embedding[j]!, 5));
      }
      expect(base64.data[0]!.embedding).not.toEqual(base64.data[1]!.embedding);
    });

    test("models: list and retrieve", async () => {
      const ids: string[] = [];
      for await (const model of client().models.list()) ids.push(model.id);
      expect(ids).toContain("llama3.2:latest");
      expect(ids).toContain("all-minilm:latest");
      const model = await client().models.retrieve("llama3.2:latest");
      expect(model).toMatchObject({ id: "llama3.2:latest", object: "model", owned_by: "library" });
    });

    test("an unknown model is a NotFoundError with Ollama's message", async () => {
      const error = await client()
        .chat.completions.create({ model: "no-such-model", messages: [{ role: "user", content: PROMPT }] })
        .catch((e: unknown) => e);
      expect(error).toBeInstanceOf(OpenAI.NotFoundError);
      expect((error as InstanceType<typeof OpenAI.NotFoundError>).status).toBe(404);
      expect((error as Error).message).toContain("model 'no-such-model' not found");
      const retrieve = await client()
        .models.retrieve("no-such-model")
        .catch((e: unknown) => e);
      expect(retrieve).toBeInstanceOf(OpenAI.NotFoundError);
    });
  });

  describe(`${name}: @anthropic-ai/sdk`, () => {
    const client = () => new Anthropic({ baseURL: url(), apiKey: key(), maxRetries: 0 });
    const tools: Anthropic.Tool[] = [{ name: "get_weather", description: "Weather in a city", input_schema: WEATHER_PARAMETERS }];

    test("messages.create", async () => {
      const message = await client().messages.create({
        model: MODEL,
        max_tokens: 256,
        system: "Be brief.",
        messages: [{ role: "user", content: PROMPT }],
      });
      expect(message).toMatchObject({ type: "message", role: "assistant", model: MODEL, stop_reason: "end_turn" });
      expect(message.content).toEqual([{ type: "text", text: ANSWER }] as Anthropic.ContentBlock[]);
      expect(message.usage.output_tokens).toBeGreaterThan(0);
    });

    test("messages.stream", async () => {
      const stream = client().messages.stream({ model: MODEL, max_tokens: 256, messages: [{ role: "user", content: PROMPT }] });
      const deltas: string[] = [];
      stream.on("text", (delta) => deltas.push(delta));
      const message = await stream.finalMessage();
      expect(deltas.length).toBeGreaterThan(1);
      expect(deltas.join("")).toBe(ANSWER);
      expect(message.content).toMatchObject([{ type: "text", text: ANSWER }]);
      expect(message.stop_reason).toBe("end_turn");
    });

    test("a tool call, not streamed and streamed, then the answer to its result", async () => {
      const messages: Anthropic.MessageParam[] = [{ role: "user", content: TOOL_PROMPT }];
      const message = await client().messages.create({ model: MODEL, max_tokens: 256, tools, messages });
      expect(message.stop_reason).toBe("tool_use");
      const use = message.content.find((block) => block.type === "tool_use") as Anthropic.ToolUseBlock;
      expect(use).toMatchObject({ name: "get_weather", input: TOOL_ARGS });

      const streamed = await client().messages.stream({ model: MODEL, max_tokens: 256, tools, messages }).finalMessage();
      expect(streamed.stop_reason).toBe("tool_use");
      expect(streamed.content.find((block) => block.type === "tool_use")).toMatchObject({
        name: "get_weather",
        input: TOOL_ARGS,
      });

      const answer = await client().messages.create({
        model: MODEL,
        max_tokens: 256,
        tools,
        messages: [
          ...messages,
          { role: "assistant", content: message.content },
          { role: "user", content: [{ type: "tool_result", tool_use_id: use.id, content: TOOL_RESULT }] },
        ],
      });
      expect(answer.content).toEqual([{ type: "text", text: TOOL_ANSWER }] as Anthropic.ContentBlock[]);
    });

    test("an unknown model is a NotFoundError", async () => {
      const error = await client()
        .messages.create({ model: "no-such-model", max_tokens: 16, messages: [{ role: "user", content: PROMPT }] })
        .catch((e: unknown) => e);
      expect(error).toBeInstanceOf(Anthropic.NotFoundError);
      expect((error as Error).message).toContain("model 'no-such-model' not found");
    });
  });

  describe(`${name}: ollama`, () => {
    const client = () => new Ollama({ host: url(), headers: bearer() });
    // Names unique to this run, so the suite can run again against the same fake.
    const unique = () => `conformance-${target().fake.port}-${Date.now().toString(36)}`;

    test("chat, not streamed and streamed", async () => {
      const reply = await client().chat({ model: MODEL, messages: [{ role: "user", content: PROMPT }] });
      expect(reply).toMatchObject({
        model: MODEL,
        message: { role: "assistant", content: ANSWER },
        done: true,
        done_reason: "stop",
      });
      expect(reply.eval_count).toBeGreaterThan(0);
      let text = "";
      let last: { done: boolean } | undefined;
      for await (const part of await client().chat({
        model: MODEL,
        messages: [{ role: "user", content: PROMPT }],
        stream: true,
      })) {
        text += part.message.content;
        last = part;
      }
      expect(text).toBe(ANSWER);
      expect(last!.done).toBe(true);
    });

    test("generate, not streamed and streamed", async () => {
      const reply = await client().generate({ model: MODEL, prompt: PROMPT });
      expect(reply.response).toBe(ANSWER);
      let text = "";
      for await (const part of await client().generate({ model: MODEL, prompt: PROMPT, stream: true })) text += part.response;
      expect(text).toBe(ANSWER);
    });

    test("chat with tools, and with a format schema", async () => {
      const tools = [
        { type: "function", function: { name: "get_weather", description: "Weather in a city", parameters: WEATHER_PARAMETERS } },
      ];
      const reply = await client().chat({ model: MODEL, messages: [{ role: "user", content: TOOL_PROMPT }], tools });
      expect(reply.message.tool_calls?.map((c) => c.function)).toEqual(
        [{ name: "get_weather", arguments: TOOL_ARGS }].map((f) => expect.objectContaining(f)),
      );
      const answer = await client().chat({
        model: MODEL,
        tools,
        messages: [
          { role: "user", content: TOOL_PROMPT },
          reply.message,
          { role: "tool", content: TOOL_RESULT, tool_name: "get_weather" },
        ],
      });
      expect(answer.message.content).toBe(TOOL_ANSWER);

      const structured = await client().chat({
        model: MODEL,
        messages: [{ role: "user", content: STRUCTURED_PROMPT }],
        format: CITY_SCHEMA,
      });
      expect(JSON.parse(structured.message.content)).toEqual(CITY);
    });

    test("embed", async () => {
      const reply = await client().embed({ model: EMBED_MODEL, input: ["one", "three"] });
      expect(reply.embeddings).toHaveLength(2);
      for (const vector of reply.embeddings) expect(Math.hypot(...vector)).toBeCloseTo(1, 9);
    });

    test("list, ps, show and version", async () => {
      const { models } = await client().list();
      expect(models.map((m) => m.name)).toContain("llama3.2:latest");
      await client().generate({ model: MODEL, prompt: PROMPT });
      const running = await client().ps();
      expect(running.models.map((m) => m.name)).toContain("llama3.2:latest");
      const shown = await client().show({ model: MODEL });
      expect(shown.details.format).toBe("gguf");
      expect(shown.capabilities).toContain("completion");
      const { version } = await client().version();
      expect(version).toMatch(/^\d+\.\d+\.\d+/);
    });

    test("pull with progress, copy and delete", async () => {
      const pulled = `tinyllama:${unique()}`;
      const statuses: string[] = [];
      const completed: number[] = [];
      for await (const progress of await client().pull({ model: pulled, stream: true })) {
        statuses.push(progress.status);
        if (progress.completed) completed.push(progress.completed);
      }
      expect(statuses[0]).toBe("pulling manifest");
      expect(statuses.at(-1)).toBe("success");
      expect(completed.length).toBeGreaterThan(1);
      expect(completed).toEqual([...completed].sort((a, b) => a - b));
      expect((await client().show({ model: pulled })).details.format).toBe("gguf");

      const copy = `${pulled}-copy`;
      expect(await client().copy({ source: pulled, destination: copy })).toEqual({ status: "success" });
      expect((await client().show({ model: copy })).details.format).toBe("gguf");
      expect(await client().delete({ model: copy })).toEqual({ status: "success" });
      const gone = await client()
        .show({ model: copy })
        .catch((e: { status_code?: number; error?: string }) => e);
      expect(gone).toMatchObject({ status_code: 404, error: `model '${copy}' not found` });
      await client().delete({ model: pulled });
    });

    test("a failed pull throws the registry's error while streaming", async () => {
      const stream = await client().pull({ model: `missing-${unique()}`, stream: true });
      const statuses: string[] = [];
      const error = await (async () => {
        for await (const progress of stream) statuses.push(progress.status);
      })().catch((e: Error) => e);
      expect(statuses).toEqual(["pulling manifest"]);
      expect((error as Error).message).toBe("pull model manifest: file does not exist");
    });

    test("errors carry Ollama's status and text", async () => {
      const error = await client()
        .chat({ model: "no-such-model", messages: [{ role: "user", content: PROMPT }] })
        .catch((e: { status_code?: number; error?: string }) => e);
      expect(error).toMatchObject({ name: "ResponseError", status_code: 404, error: "model 'no-such-model' not found" });
    });

    test("abort stops a streaming chat", async () => {
      const fake = target().fake;
      const tokenDelayMs = fake.tokenDelayMs;
      fake.tokenDelayMs = 50;
      try {
        const ollama = client();
        const stream = await ollama.chat({ model: MODEL, messages: [{ role: "user", content: PROMPT }], stream: true });
        let text = "";
        const error = await (async () => {
          for await (const part of stream) {
            text += part.message.content;
            stream.abort();
          }
        })().catch((e: Error) => e);
        expect((error as Error).name).toBe("AbortError");
        expect(text.length).toBeGreaterThan(0);
        expect(ANSWER.startsWith(text)).toBe(true);
        expect(text).not.toBe(ANSWER);
      } finally {
        fake.tokenDelayMs = tokenDelayMs;
      }
      // The next request is answered in full: the aborted one freed the GPU.
      expect((await client().chat({ model: MODEL, messages: [{ role: "user", content: PROMPT }] })).message.content).toBe(ANSWER);
    });
  });

  const aiProviders: Array<[string, () => LanguageModel]> = [
    ["ollama-ai-provider-v2", () => createOllama({ baseURL: `${url()}/api`, headers: bearer() })(MODEL)],
    [
      "@ai-sdk/openai-compatible",
      () =>
        createOpenAICompatible({
          name: "ollama",
          baseURL: `${url()}/v1`,
          apiKey: key(),
          supportsStructuredOutputs: true,
        }).chatModel(MODEL),
    ],
  ];
  for (const [provider, model] of aiProviders) {
    describe(`${name}: ai with ${provider}`, () => {
      test("generateText and streamText", async () => {
        const generated = await generateText({ model: model(), prompt: PROMPT });
        expect(generated.text).toBe(ANSWER);
        expect(generated.finishReason).toBe("stop");
        const streamed = streamText({ model: model(), prompt: PROMPT });
        const parts: string[] = [];
        for await (const part of streamed.textStream) parts.push(part);
        expect(parts.length).toBeGreaterThan(1);
        expect(parts.join("")).toBe(ANSWER);
      });

      test("a tool call runs the tool, and the model answers its result", async () => {
        const calls: unknown[] = [];
        const tools = {
          get_weather: tool({
            description: "Weather in a city",
            inputSchema: jsonSchema<{ city: string }>(WEATHER_PARAMETERS),
            execute: async (input: { city: string }) => {
              calls.push(input);
              return TOOL_RESULT;
            },
          }),
        };
        const result = await generateText({ model: model(), prompt: TOOL_PROMPT, tools, stopWhen: isStepCount(2) });
        expect(calls).toEqual([TOOL_ARGS]);
        expect(result.text).toContain(TOOL_RESULT);
        expect(result.text.startsWith("Tool said: ")).toBe(true);

        const streamed = streamText({ model: model(), prompt: TOOL_PROMPT, tools });
        const toolCalls = await streamed.toolCalls;
        expect(toolCalls.map((c) => [c.toolName, c.input])).toEqual([["get_weather", TOOL_ARGS]]);
      });

      test("structured output", async () => {
        const result = await generateText({
          model: model(),
          prompt: STRUCTURED_PROMPT,
          output: Output.object({ schema: jsonSchema<typeof CITY>(CITY_SCHEMA) }),
        });
        expect(result.output).toEqual(CITY);
      });
    });
  }

  const langchainModels: Array<[string, () => ChatOllama | ChatOpenAI]> = [
    ["@langchain/ollama", () => new ChatOllama({ model: MODEL, baseUrl: url(), headers: bearer() })],
    [
      "@langchain/openai",
      () => new ChatOpenAI({ model: MODEL, apiKey: key(), maxRetries: 0, configuration: { baseURL: `${url()}/v1` } }),
    ],
  ];
  for (const [library, chat] of langchainModels) {
    describe(`${name}: ${library}`, () => {
      test("invoke and stream", async () => {
        const message = await chat().invoke(PROMPT);
        expect(message.content).toBe(ANSWER);
        let text = "";
        let chunks = 0;
        for await (const chunk of await chat().stream(PROMPT)) {
          expect(chunk).toBeInstanceOf(AIMessageChunk);
          text += typeof chunk.content === "string" ? chunk.content : "";
          chunks++;
        }
        expect(chunks).toBeGreaterThan(1);
        expect(text).toBe(ANSWER);
      });

      test("tool calls and structured output", async () => {
        const withTools = chat().bindTools([
          {
            type: "function",
            function: { name: "get_weather", description: "Weather in a city", parameters: WEATHER_PARAMETERS },
          },
        ]);
        const message = await withTools.invoke(TOOL_PROMPT);
        expect(message.tool_calls?.map((c) => [c.name, c.args])).toEqual([["get_weather", TOOL_ARGS]]);

        const structured = chat().withStructuredOutput(CITY_SCHEMA, { name: "city", method: "jsonSchema" });
        expect(await structured.invoke(STRUCTURED_PROMPT)).toEqual(CITY);
      });
    });
  }
}
