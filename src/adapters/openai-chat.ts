import { BadRequestError } from "../errors";
import { modelKey } from "../ollama/model-key";
import { IncompleteAnswerError, type WireAdapter, streamsWhenAsked } from "./adapter";
import { checkBody } from "./check-body";
import { ChatCompletionRequest } from "./openai-types";
import { type ChoiceBase, assembleChoices, openaiDataStream } from "./openai-stream";
import { assertReasoningEffort } from "./reasoning-effort";
import { type Json, asObject, wholeBody } from "./sse-json";

/** One choice as its deltas build it up. */
interface ChoiceParts extends ChoiceBase {
  role: string;
  content: string;
  reasoning: string;
  toolCalls: Json[];
}

/**
 * Adds a streamed tool-call delta: a fragment (no id, or the id of the call at its index) extends that
 * call, its arguments appended; a new id at an index starts another call (Ollama numbers calls per chunk).
 */
function addToolCall(calls: Json[], delta: Json): void {
  const fn = asObject(delta.function) ?? {};
  const last = calls.findLast((call) => call.index === delta.index);
  if (last && (delta.id == null || delta.id === last.id)) {
    const lastFn = last.function as Json;
    if (typeof fn.arguments === "string") lastFn.arguments = String(lastFn.arguments ?? "") + fn.arguments;
    if (typeof fn.name === "string" && !lastFn.name) lastFn.name = fn.name;
    return;
  }
  calls.push({
    id: delta.id ?? "",
    index: delta.index ?? calls.length,
    type: delta.type ?? "function",
    function: { name: fn.name ?? "", arguments: typeof fn.arguments === "string" ? fn.arguments : "" },
  });
}

/** The `chat.completion` a stream of `chat.completion.chunk` frames adds up to (R:openai/openai.go:126-135,269-298). */
function assembleChatCompletion(records: readonly string[]): string {
  return assembleChoices<ChoiceParts>(
    records,
    { chunk: "chat.completion.chunk", answer: "chat.completion", name: "chat completion" },
    {
      start: (index) => ({
        index,
        role: "assistant",
        content: "",
        reasoning: "",
        toolCalls: [],
        finishReason: null,
        logprobs: [],
      }),
      add(parts, choice) {
        const delta = asObject(choice.delta) ?? {};
        if (typeof delta.role === "string" && delta.role) parts.role = delta.role;
        if (typeof delta.content === "string") parts.content += delta.content;
        if (typeof delta.reasoning === "string") parts.reasoning += delta.reasoning;
        for (const call of Array.isArray(delta.tool_calls) ? (delta.tool_calls as Json[]) : [])
          addToolCall(parts.toolCalls, call);
      },
      render: (parts) => ({
        index: parts.index,
        message: {
          role: parts.role,
          content: parts.content,
          ...(parts.reasoning ? { reasoning: parts.reasoning } : {}),
          ...(parts.toolCalls.length ? { tool_calls: parts.toolCalls } : {}),
        },
      }),
    },
  );
}

/** POST /v1/chat/completions: OpenAI's Chat Completions as Ollama serves it (reference §6.1). */
export const openaiChat: WireAdapter = {
  type: "openai.chat",
  api: "openai",
  upstreamPath: "/v1/chat/completions",
  requestSchema: ChatCompletionRequest,
  describe(body) {
    checkBody(ChatCompletionRequest, body);
    // Ollama's order: the middleware's checks (R:middleware/openai.go:455-457, R:openai/openai.go:697-708),
    // then the native handler's "model is required".
    if (!body.messages?.length) throw new BadRequestError("[] is too short - 'messages'");
    assertReasoningEffort(body.reasoning ? body.reasoning.effort : body.reasoning_effort);
    const model = body.model ?? "";
    if (!model) throw new BadRequestError("model is required");
    return { model, modelKey: modelKey(model, undefined), stream: streamsWhenAsked(body) };
  },
  streams: streamsWhenAsked,
  ...openaiDataStream,
  assemble(records, framing) {
    if (framing !== "whole") return assembleChatCompletion(records);
    const whole = wholeBody(records);
    if (whole === undefined) throw new IncompleteAnswerError("ollama's chat completion body is incomplete");
    return whole;
  },
};
