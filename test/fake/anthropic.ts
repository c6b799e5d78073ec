// Ollama's Anthropic Messages route, POST /v1/messages (reference §6.7): the request is rewritten into a
// native /api/chat one, run on the fake's one GPU, and its answer rewritten back.
import type { FakeOllama } from "../fake-ollama";
import { json } from "../fake-ollama";
import { encoded, frameStream, nativeChunks, randomHex, readJson, SSE_HEADERS, textOf, type NativeChunk } from "./native";

type Body = Record<string, unknown>;
type Block = Record<string, unknown> & { type?: string };

/** Anthropic's error body; `type` from the status as Ollama maps it. */
export function anthropicErrorBody(status: number, message: string) {
  const types: Record<number, string> = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
  };
  return { type: "error", error: { type: types[status] ?? "api_error", message }, request_id: `req_${randomHex(24)}` };
}

const middlewareError = (message: string) => json(anthropicErrorBody(400, message), 400);
const nativeError = (status: number, message: string) => encoded(anthropicErrorBody(status, message), status);

/** Answers POST /v1/messages, or null for another path. */
export async function handleAnthropic(fake: FakeOllama, request: Request, path: string): Promise<Response | null> {
  if (path !== "/v1/messages") return null;
  if (request.method !== "POST") {
    return new Response("405 method not allowed", { status: 405, headers: { "content-type": "text/plain" } });
  }
  const parsed = await readJson(request);
  if ("error" in parsed) return middlewareError(parsed.error);
  const body = parsed.body;
  if (typeof body.model !== "string" || !body.model) return middlewareError("model is required");
  if (typeof body.max_tokens !== "number" || body.max_tokens <= 0)
    return middlewareError("max_tokens is required and must be positive");
  if (!Array.isArray(body.messages) || body.messages.length === 0) return middlewareError("messages is required");

  const stream = body.stream === true;
  // max_tokens is not mapped to num_predict as Ollama does: in this fake num_predict means "answer that
  // many numbered words", and every Anthropic request carries max_tokens.
  const options: Body = {};
  for (const field of ["temperature", "top_p", "top_k"]) if (body[field] !== undefined) options[field] = body[field];
  if (Array.isArray(body.stop_sequences)) options.stop = body.stop_sequences;
  const native: Body = { model: body.model, messages: nativeMessages(body), stream, options };
  const tools = (Array.isArray(body.tools) ? body.tools : []) as Body[];
  if (tools.length) {
    native.tools = tools.map((tool) => ({
      type: "function",
      function: { name: tool.name, description: tool.description, parameters: tool.input_schema },
    }));
  }
  const answer = await fake.generate("/api/chat", native, request, { path: "/v1/messages", body });
  if (answer.status !== 200) {
    if (!(answer.headers.get("content-type") ?? "").includes("json")) return answer;
    const { error } = (await answer.json()) as { error: string };
    return nativeError(answer.status, error);
  }

  const id = `msg_${randomHex(24)}`;
  const usage = (chunk: NativeChunk) => ({ input_tokens: chunk.prompt_eval_count ?? 0, output_tokens: chunk.eval_count ?? 0 });
  const stopReason = (chunk: NativeChunk, calledTools: boolean) => {
    if (calledTools) return "tool_use";
    if (chunk.done_reason === "stop") return "end_turn";
    if (chunk.done_reason === "length") return "max_tokens";
    return chunk.done_reason ? "stop_sequence" : undefined;
  };

  if (!stream) {
    let done: NativeChunk;
    try {
      done = (await answer.json()) as NativeChunk;
    } catch {
      return new Response(new ReadableStream({ pull: (controller) => controller.error() }));
    }
    const calls = done.message?.tool_calls ?? [];
    const content: Block[] = [];
    if (done.message?.content) content.push({ type: "text", text: done.message.content });
    for (const call of calls)
      content.push({ type: "tool_use", id: call.id, name: call.function.name, input: call.function.arguments });
    return encoded({
      id,
      type: "message",
      role: "assistant",
      model: body.model,
      content,
      stop_reason: stopReason(done, calls.length > 0),
      usage: usage(done),
    });
  }

  const reader = answer.body!.getReader();
  const event = (type: string, data: Body) => `event: ${type}\ndata: ${JSON.stringify({ type, ...data })}\n\n`;
  // message_start's input_tokens is an estimate, characters / 4, as Ollama's is.
  const estimate = Math.floor(JSON.stringify(native.messages).length / 4);
  async function* frames(): AsyncGenerator<string> {
    yield event("message_start", {
      message: {
        id,
        type: "message",
        role: "assistant",
        model: body.model,
        content: [],
        usage: { input_tokens: estimate, output_tokens: 0 },
      },
    });
    let index = -1;
    let textOpen = false;
    let calledTools = false;
    for await (const chunk of nativeChunks(reader)) {
      // A native mid-stream error ends the stream at 200 with no message_stop (§6.7).
      if (chunk.error !== undefined) return;
      const text = chunk.message?.content ?? "";
      if (text) {
        if (!textOpen) {
          textOpen = true;
          index++;
          yield event("content_block_start", { index, content_block: { type: "text", text: "" } });
        }
        yield event("content_block_delta", { index, delta: { type: "text_delta", text } });
      }
      for (const call of chunk.message?.tool_calls ?? []) {
        if (textOpen) {
          textOpen = false;
          yield event("content_block_stop", { index });
        }
        calledTools = true;
        index++;
        yield event("content_block_start", {
          index,
          content_block: { type: "tool_use", id: call.id, name: call.function.name, input: {} },
        });
        yield event("content_block_delta", {
          index,
          delta: { type: "input_json_delta", partial_json: JSON.stringify(call.function.arguments) },
        });
        yield event("content_block_stop", { index });
      }
      if (chunk.done) {
        if (textOpen) yield event("content_block_stop", { index });
        yield event("message_delta", { delta: { stop_reason: stopReason(chunk, calledTools) }, usage: usage(chunk) });
        yield event("message_stop", {});
        return;
      }
    }
  }
  return new Response(frameStream(frames(), reader), { headers: SSE_HEADERS });
}

/** Anthropic messages (and `system`) as native chat messages. */
function nativeMessages(body: Body): Body[] {
  const messages: Body[] = [];
  const system = textOf(body.system);
  if (system) messages.push({ role: "system", content: system });
  for (const message of body.messages as Body[]) {
    const role = String(message.role ?? "");
    if (typeof message.content === "string") {
      messages.push({ role, content: message.content });
      continue;
    }
    const blocks = (Array.isArray(message.content) ? message.content : []) as Block[];
    const text = blocks
      .filter((block) => block.type === "text")
      .map((block) => String(block.text ?? ""))
      .join("");
    const toolCalls = blocks
      .filter((block) => block.type === "tool_use")
      .map((block, index) => ({ id: block.id, function: { index, name: block.name, arguments: block.input ?? {} } }));
    if (text || toolCalls.length) messages.push({ role, content: text, ...(toolCalls.length ? { tool_calls: toolCalls } : {}) });
    for (const block of blocks.filter((block) => block.type === "tool_result")) {
      messages.push({ role: "tool", content: textOf(block.content), tool_call_id: block.tool_use_id });
    }
  }
  return messages;
}
