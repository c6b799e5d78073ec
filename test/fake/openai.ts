// Ollama's OpenAI-compatible routes (reference §6.1–6.6): each request is rewritten into a native one,
// run on the fake's one GPU, and its answer rewritten back, as Ollama's middleware does.
import type { FakeOllama } from "../fake-ollama";
import { json, tagEntry } from "../fake-ollama";
import {
  encoded,
  frameStream,
  nativeChunks,
  readJson,
  sortedKeys,
  SSE_HEADERS,
  textOf,
  type NativeChunk,
  type NativeFunction,
} from "./native";

type Body = Record<string, unknown>;

/** OpenAI's error body; `type` from the status as Ollama maps it (§6.5). */
export function openaiErrorBody(status: number, message: string) {
  const type = status === 400 ? "invalid_request_error" : status === 404 ? "not_found_error" : "api_error";
  return { error: { message, type, param: null, code: null } };
}

/** An error the middleware raises itself (bad JSON, bad field): gin's c.JSON, no trailing newline. */
const middlewareError = (message: string, status = 400) => json(openaiErrorBody(status, message), status);
/** A native error rewritten by the middleware's writer: json.Encoder, trailing newline. */
const nativeError = (status: number, message: string) => encoded(openaiErrorBody(status, message), status);
const methodNotAllowed = () => new Response("405 method not allowed", { status: 405, headers: { "content-type": "text/plain" } });
/** A connection that drops before any byte, as the native call under it did. */
const dropped = () => new Response(new ReadableStream({ pull: (controller) => controller.error() }));
const seconds = () => Math.floor(Date.now() / 1000);

/** Answers /v1/* routes, or null for a path Ollama does not serve. */
export async function handleOpenAI(fake: FakeOllama, request: Request, path: string): Promise<Response | null> {
  const method = request.method;
  if (path === "/v1/models") return method === "GET" ? listModels(fake) : methodNotAllowed();
  if (path.startsWith("/v1/models/")) {
    if (method !== "GET") return methodNotAllowed();
    return retrieveModel(fake, decodeURIComponent(path.slice("/v1/models/".length)));
  }
  const routes: Record<string, (fake: FakeOllama, body: Body, request: Request) => Promise<Response>> = {
    "/v1/chat/completions": chatCompletions,
    "/v1/completions": completions,
    "/v1/embeddings": embeddings,
    "/v1/responses": responses,
  };
  const route = routes[path];
  if (!route) return null;
  if (method !== "POST") return methodNotAllowed();
  const parsed = await readJson(request);
  if ("error" in parsed) return middlewareError(parsed.error);
  return route(fake, parsed.body, request);
}

function modelEntry(name: string) {
  const created = Math.floor(Date.parse(tagEntry(name).modified_at) / 1000);
  const slash = name.lastIndexOf("/");
  return { id: name, object: "model", created, owned_by: slash > 0 ? name.slice(0, slash).split("/").at(-1) : "library" };
}

function listModels(fake: FakeOllama): Response {
  const names = [...fake.models, ...fake.embedModels];
  // Ollama never allocates the slice when there are no models, so `data` is null then (§6.4).
  return encoded({ object: "list", data: names.length ? names.map(modelEntry) : null });
}

function retrieveModel(fake: FakeOllama, model: string): Response {
  if (!fake.has(model)) return nativeError(404, `model '${model}' not found`);
  return encoded({ ...modelEntry(model), id: model });
}

/**
 * OpenAI sampling fields as native options, with Ollama's defaults of 1.0 for temperature and top_p.
 * Unlike Ollama, `max_tokens` is not mapped to `num_predict`: in this fake `num_predict` means "answer
 * that many numbered words" (the benchmarks' long answers), not a cap.
 */
function nativeOptions(body: Body): Body {
  const options: Body = { temperature: body.temperature ?? 1.0, top_p: body.top_p || 1.0 };
  for (const field of ["seed", "frequency_penalty", "presence_penalty"])
    if (body[field] !== undefined) options[field] = body[field];
  if (body.stop !== undefined) options.stop = typeof body.stop === "string" ? [body.stop] : body.stop;
  return options;
}

function parseArguments(raw: unknown): Record<string, unknown> {
  if (raw && typeof raw === "object") return raw as Record<string, unknown>;
  try {
    return JSON.parse(String(raw ?? "{}"));
  } catch {
    return {};
  }
}

/** OpenAI chat messages as native ones: text parts joined, tool calls' argument strings parsed. */
function nativeMessages(messages: Body[]): Body[] {
  return messages.map((message) => {
    const native: Body = { role: String(message.role ?? "").toLowerCase(), content: textOf(message.content) };
    const calls = message.tool_calls as Array<{ id?: string; function?: { name?: string; arguments?: unknown } }> | undefined;
    if (Array.isArray(calls)) {
      native.tool_calls = calls.map((call, index) => ({
        id: call.id,
        function: { index, name: call.function?.name, arguments: parseArguments(call.function?.arguments) },
      }));
    }
    if (typeof message.tool_call_id === "string") native.tool_call_id = message.tool_call_id;
    return native;
  });
}

function formatOf(responseFormat: unknown): unknown {
  const format = responseFormat as { type?: string; json_schema?: { schema?: unknown } } | undefined;
  if (format?.type === "json_object") return "json";
  if (format?.type === "json_schema") return format.json_schema?.schema;
  return undefined;
}

function openaiToolCalls(calls: Array<{ id: string; function: NativeFunction }>) {
  return calls.map((call, index) => ({
    id: call.id,
    index,
    type: "function",
    function: { name: call.function.name, arguments: JSON.stringify(call.function.arguments) },
  }));
}

const usageOf = (chunk: NativeChunk) => {
  const prompt = chunk.prompt_eval_count ?? 0;
  const completion = chunk.eval_count ?? 0;
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion };
};

/** Runs a native request; a native error comes back already rewritten in OpenAI's shape. */
async function runNative(
  fake: FakeOllama,
  kind: "/api/chat" | "/api/generate",
  native: Body,
  request: Request,
  client: { path: string; body: Body },
): Promise<{ answer: Response } | { failed: Response }> {
  const answer = await fake.generate(kind, native, request, client);
  if (answer.status === 200) return { answer };
  if (!(answer.headers.get("content-type") ?? "").includes("json")) return { failed: answer };
  const { error } = (await answer.json()) as { error: string };
  return { failed: nativeError(answer.status, error) };
}

/** The native answer of a non-streamed request, or null if its connection dropped. */
async function nativeAnswer(answer: Response): Promise<NativeChunk | null> {
  try {
    return (await answer.json()) as NativeChunk;
  } catch {
    return null;
  }
}

async function chatCompletions(fake: FakeOllama, body: Body, request: Request): Promise<Response> {
  if (!Array.isArray(body.messages) || body.messages.length === 0) return middlewareError("[] is too short - 'messages'");
  const stream = body.stream === true;
  const native: Body = {
    model: body.model,
    messages: nativeMessages(body.messages as Body[]),
    stream,
    options: nativeOptions(body),
  };
  const format = formatOf(body.response_format);
  if (format !== undefined) native.format = format;
  if (Array.isArray(body.tools)) native.tools = body.tools;
  const run = await runNative(fake, "/api/chat", native, request, { path: "/v1/chat/completions", body });
  if ("failed" in run) return run.failed;
  const id = `chatcmpl-${Math.floor(Math.random() * 999)}`;
  const created = seconds();

  if (!stream) {
    const done = await nativeAnswer(run.answer);
    if (!done) return dropped();
    const calls = done.message?.tool_calls ?? [];
    const message: Body = { role: "assistant", content: done.message?.content ?? "" };
    if (calls.length) message.tool_calls = openaiToolCalls(calls);
    return encoded({
      id,
      object: "chat.completion",
      created,
      model: body.model,
      system_fingerprint: "fp_ollama",
      choices: [{ index: 0, message, finish_reason: calls.length ? "tool_calls" : (done.done_reason ?? "stop") }],
      usage: usageOf(done),
    });
  }

  const includeUsage = (body.stream_options as { include_usage?: boolean } | undefined)?.include_usage === true;
  const reader = run.answer.body!.getReader();
  const frame = (choices: unknown[], extra: Body = {}) =>
    `data: ${JSON.stringify({ id, object: "chat.completion.chunk", created, model: body.model, system_fingerprint: "fp_ollama", choices, ...extra })}\n\n`;
  async function* frames(): AsyncGenerator<string> {
    let first = true;
    let calledTools = false;
    for await (const chunk of nativeChunks(reader)) {
      // A native mid-stream error carries no chat fields: the stream just ends, without [DONE] (§6.5).
      if (chunk.error !== undefined) return;
      if (chunk.done) {
        yield frame([{ index: 0, delta: {}, finish_reason: calledTools ? "tool_calls" : (chunk.done_reason ?? "stop") }]);
        if (includeUsage) yield frame([], { usage: usageOf(chunk) });
        yield "data: [DONE]\n\n";
        return;
      }
      const delta: Body = first ? { role: "assistant" } : {};
      delta.content = chunk.message?.content ?? "";
      const calls = chunk.message?.tool_calls;
      if (calls?.length) {
        calledTools = true;
        delta.tool_calls = openaiToolCalls(calls);
      }
      first = false;
      yield frame([{ index: 0, delta, finish_reason: null }]);
    }
  }
  return new Response(frameStream(frames(), reader), { headers: SSE_HEADERS });
}

async function completions(fake: FakeOllama, body: Body, request: Request): Promise<Response> {
  if (body.prompt !== undefined && typeof body.prompt !== "string") return middlewareError("prompt must be a string");
  const stream = body.stream === true;
  const native: Body = { model: body.model, prompt: body.prompt ?? "", stream, options: nativeOptions(body) };
  if (typeof body.suffix === "string") native.suffix = body.suffix;
  const run = await runNative(fake, "/api/generate", native, request, { path: "/v1/completions", body });
  if ("failed" in run) return run.failed;
  const id = `cmpl-${Math.floor(Math.random() * 999)}`;
  const created = seconds();

  if (!stream) {
    const done = await nativeAnswer(run.answer);
    if (!done) return dropped();
    return encoded({
      id,
      object: "text_completion",
      created,
      model: body.model,
      system_fingerprint: "fp_ollama",
      choices: [{ text: done.response ?? "", index: 0, finish_reason: done.done_reason ?? "stop" }],
      usage: usageOf(done),
    });
  }

  const includeUsage = (body.stream_options as { include_usage?: boolean } | undefined)?.include_usage === true;
  const zero = { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 };
  const reader = run.answer.body!.getReader();
  // In the completion chunk struct `choices` comes before `model` (§6.2).
  const frame = (choices: unknown[], usage?: unknown) =>
    `data: ${JSON.stringify({ id, object: "text_completion", created, choices, model: body.model, system_fingerprint: "fp_ollama", ...(usage ? { usage } : {}) })}\n\n`;
  async function* frames(): AsyncGenerator<string> {
    for await (const chunk of nativeChunks(reader)) {
      if (chunk.error !== undefined) return;
      const finish = chunk.done ? (chunk.done_reason ?? "stop") : null;
      yield frame([{ text: chunk.response ?? "", index: 0, finish_reason: finish }], includeUsage ? zero : undefined);
      if (chunk.done) {
        if (includeUsage) yield frame([], usageOf(chunk));
        yield "data: [DONE]\n\n";
        return;
      }
    }
  }
  return new Response(frameStream(frames(), reader), { headers: SSE_HEADERS });
}

async function embeddings(fake: FakeOllama, body: Body): Promise<Response> {
  const encoding = body.encoding_format ?? "float";
  if (encoding !== "float" && encoding !== "base64") {
    return middlewareError(`Invalid value for 'encoding_format' = ${String(encoding)}. Supported values: ['float', 'base64'].`);
  }
  if (body.input === undefined || (Array.isArray(body.input) && body.input.length === 0)) return middlewareError("invalid input");
  const native: Body = { model: body.model, input: body.input };
  if (body.dimensions !== undefined) native.dimensions = body.dimensions;
  const answer = await fake.embed(native, false);
  const result = (await answer.json()) as { error?: string; embeddings?: number[][]; prompt_eval_count?: number };
  if (answer.status !== 200) return nativeError(answer.status, result.error ?? "");
  const vectors = result.embeddings ?? [];
  const asBase64 = (vector: number[]) => Buffer.from(new Float32Array(vector).buffer).toString("base64");
  const tokens = result.prompt_eval_count ?? 0;
  return encoded({
    object: "list",
    data: vectors.map((vector, index) => ({
      object: "embedding",
      embedding: encoding === "base64" ? asBase64(vector) : vector,
      index,
    })),
    model: body.model,
    usage: { prompt_tokens: tokens, total_tokens: tokens },
  });
}

/** Responses input items as native messages, or the 400 message for an item Ollama refuses. */
function responsesMessages(body: Body): Body[] | string {
  const messages: Body[] = [];
  if (typeof body.instructions === "string" && body.instructions) messages.push({ role: "system", content: body.instructions });
  if (typeof body.input === "string") messages.push({ role: "user", content: body.input });
  else if (Array.isArray(body.input)) {
    for (const [index, item] of (body.input as Body[]).entries()) {
      const type = item.type ?? (item.role ? "message" : undefined);
      if (type === "message") messages.push({ role: item.role, content: textOf(item.content) });
      else if (type === "function_call") {
        messages.push({
          role: "assistant",
          content: "",
          tool_calls: [{ id: item.call_id, function: { index: 0, name: item.name, arguments: parseArguments(item.arguments) } }],
        });
      } else if (type === "function_call_output") {
        messages.push({ role: "tool", content: textOf(item.output), tool_call_id: item.call_id });
      } else if (type !== "reasoning") return `input[${index}]: unknown input item type: ${JSON.stringify(type)}`;
    }
  }
  return messages;
}

async function responses(fake: FakeOllama, body: Body, request: Request): Promise<Response> {
  const messages = responsesMessages(body);
  if (typeof messages === "string") return middlewareError(messages);
  const stream = body.stream === true;
  const options: Body = { temperature: body.temperature ?? 1.0 };
  if (body.top_p !== undefined) options.top_p = body.top_p;
  const native: Body = { model: body.model, messages, stream, options };
  const textFormat = (body.text as { format?: { type?: string; schema?: unknown } } | undefined)?.format;
  if (textFormat?.type === "json_schema") native.format = textFormat.schema;
  else if (textFormat?.type === "json_object") native.format = "json";
  const tools = (Array.isArray(body.tools) ? body.tools : []) as Body[];
  const functions = tools.filter((tool) => tool.type === "function");
  if (functions.length) {
    native.tools = functions.map((tool) => ({
      type: "function",
      function: { name: tool.name, description: tool.description, parameters: tool.parameters },
    }));
  }
  const run = await runNative(fake, "/api/chat", native, request, { path: "/v1/responses", body });
  if ("failed" in run) return run.failed;

  const responseId = `resp_${Math.floor(Math.random() * 999999)}`;
  const messageId = `msg_${Math.floor(Math.random() * 999999)}`;
  const createdAt = seconds();
  const outputText = (text: string) => ({ type: "output_text", text, annotations: [], logprobs: [] });
  const messageItem = (text: string) => ({
    id: messageId,
    type: "message",
    status: "completed",
    role: "assistant",
    content: [outputText(text)],
  });
  const callItem = (call: { id: string; function: NativeFunction }, index: number) => ({
    id: `fc_${responseId}_${index}`,
    type: "function_call",
    status: "completed",
    call_id: call.id,
    name: call.function.name,
    arguments: JSON.stringify(call.function.arguments),
  });
  const responseObject = (status: string, output: unknown[], usage: unknown, completed: boolean) => ({
    id: responseId,
    object: "response",
    created_at: createdAt,
    completed_at: completed ? seconds() : null,
    status,
    incomplete_details: null,
    model: body.model,
    previous_response_id: null,
    instructions: body.instructions ?? null,
    output,
    error: null,
    tools,
    tool_choice: "auto",
    truncation: "disabled",
    parallel_tool_calls: true,
    text: body.text ?? { format: { type: "text" } },
    top_p: body.top_p ?? 1,
    presence_penalty: 0,
    frequency_penalty: 0,
    top_logprobs: 0,
    temperature: body.temperature ?? 1,
    reasoning: body.reasoning ?? null,
    usage,
    max_output_tokens: body.max_output_tokens ?? null,
    max_tool_calls: null,
    store: false,
    background: false,
    service_tier: "default",
    metadata: {},
    safety_identifier: null,
    prompt_cache_key: null,
  });
  const usageOfResponse = (chunk: NativeChunk) => {
    const input = chunk.prompt_eval_count ?? 0;
    const output = chunk.eval_count ?? 0;
    return {
      input_tokens: input,
      output_tokens: output,
      total_tokens: input + output,
      input_tokens_details: { cached_tokens: 0 },
      output_tokens_details: { reasoning_tokens: 0 },
    };
  };

  if (!stream) {
    const done = await nativeAnswer(run.answer);
    if (!done) return dropped();
    const calls = done.message?.tool_calls ?? [];
    // Tool calls replace the message item (§6.6).
    const output = calls.length ? calls.map(callItem) : [messageItem(done.message?.content ?? "")];
    return encoded(responseObject("completed", output, usageOfResponse(done), true));
  }

  const reader = run.answer.body!.getReader();
  let sequence = 0;
  const event = (type: string, data: Body) =>
    `event: ${type}\ndata: ${JSON.stringify(sortedKeys({ ...data, type, sequence_number: sequence++ }))}\n\n`;
  async function* frames(): AsyncGenerator<string> {
    yield event("response.created", { response: responseObject("in_progress", [], null, false) });
    yield event("response.in_progress", { response: responseObject("in_progress", [], null, false) });
    let text = "";
    let textStarted = false;
    const output: unknown[] = [];
    for await (const chunk of nativeChunks(reader)) {
      // A native mid-stream error yields no event: the stream ends without response.completed (§6.6).
      if (chunk.error !== undefined) return;
      const content = chunk.message?.content ?? "";
      if (content) {
        if (!textStarted) {
          textStarted = true;
          yield event("response.output_item.added", {
            item: { id: messageId, type: "message", status: "in_progress", role: "assistant", content: [] },
            output_index: 0,
          });
          yield event("response.content_part.added", {
            content_index: 0,
            item_id: messageId,
            output_index: 0,
            part: outputText(""),
          });
        }
        text += content;
        yield event("response.output_text.delta", {
          content_index: 0,
          delta: content,
          item_id: messageId,
          logprobs: [],
          output_index: 0,
        });
      }
      for (const call of chunk.message?.tool_calls ?? []) {
        const index = output.length;
        const item = callItem(call, index);
        yield event("response.output_item.added", {
          item: { ...item, status: "in_progress", arguments: "" },
          output_index: index,
        });
        yield event("response.function_call_arguments.delta", { delta: item.arguments, item_id: item.id, output_index: index });
        yield event("response.function_call_arguments.done", {
          arguments: item.arguments,
          item_id: item.id,
          output_index: index,
        });
        yield event("response.output_item.done", { item, output_index: index });
        output.push(item);
      }
      if (chunk.done) {
        if (textStarted && output.length === 0) {
          yield event("response.output_text.done", { content_index: 0, item_id: messageId, logprobs: [], output_index: 0, text });
          yield event("response.content_part.done", {
            content_index: 0,
            item_id: messageId,
            output_index: 0,
            part: outputText(text),
          });
          yield event("response.output_item.done", { item: messageItem(text), output_index: 0 });
          output.push(messageItem(text));
        }
        yield event("response.completed", { response: responseObject("completed", output, usageOfResponse(chunk), true) });
        return;
      }
    }
  }
  return new Response(frameStream(frames(), reader), { headers: SSE_HEADERS });
}
