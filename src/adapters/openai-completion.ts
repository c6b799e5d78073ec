import { BadRequestError } from "../errors";
import { modelKey } from "../ollama/model-key";
import { IncompleteAnswerError, type WireAdapter } from "./adapter";
import { checkBody } from "./check-body";
import { CompletionRequest } from "./openai-types";
import { openaiDataStream } from "./openai-stream";
import { type Json, asObject, sseJson, wholeBody } from "./sse-json";

/** The `text_completion` a stream of completion frames adds up to (R:openai/openai.go:166-183,407-448). */
function assembleCompletion(records: readonly string[]): string {
  let first: Json | undefined;
  let usage: unknown;
  let done = false;
  const choices = new Map<number, { index: number; text: string; finishReason: unknown; logprobs: unknown[] }>();
  for (const record of records) {
    const { data, json } = sseJson(record);
    if (data === "[DONE]") done = true;
    if (!json || json.object !== "text_completion") continue;
    first ??= json;
    // With include_usage every frame carries zeros and the last one the counts: the last one wins.
    if (json.usage) usage = json.usage;
    for (const choice of (Array.isArray(json.choices) ? json.choices : []) as Json[]) {
      const index = typeof choice.index === "number" ? choice.index : 0;
      let parts = choices.get(index);
      if (!parts) choices.set(index, (parts = { index, text: "", finishReason: null, logprobs: [] }));
      if (typeof choice.text === "string") parts.text += choice.text;
      if (choice.finish_reason != null) parts.finishReason = choice.finish_reason;
      const logprobs = asObject(choice.logprobs)?.content;
      if (Array.isArray(logprobs)) parts.logprobs.push(...logprobs);
    }
  }
  if (!done || !first) throw new IncompleteAnswerError("the completion stream ended before data: [DONE]");
  const completion: Json = {
    id: first.id,
    object: "text_completion",
    created: first.created,
    model: first.model,
    system_fingerprint: first.system_fingerprint,
    choices: [...choices.values()]
      .sort((a, b) => a.index - b.index)
      .map((parts) => ({
        text: parts.text,
        index: parts.index,
        finish_reason: parts.finishReason,
        ...(parts.logprobs.length ? { logprobs: { content: parts.logprobs } } : {}),
      })),
  };
  if (usage) completion.usage = usage;
  return JSON.stringify(completion);
}

/** POST /v1/completions: OpenAI's legacy Completions as Ollama serves it (reference §6.2). */
export const openaiCompletion: WireAdapter = {
  type: "openai.completion",
  api: "openai",
  upstreamPath: "/v1/completions",
  requestSchema: CompletionRequest,
  describe(body) {
    const prompt = (body as { prompt?: unknown } | null)?.prompt;
    // Ollama takes one string only (R:openai/openai.go:147, its TODO for arrays of strings and tokens).
    if (prompt != null && typeof prompt !== "string") throw new BadRequestError("prompt must be a string");
    checkBody(CompletionRequest, body);
    // A missing model is Ollama's generate handler's 404 ("model '' not found"), the caller's check.
    const model = body.model ?? "";
    return { model, modelKey: modelKey(model, undefined), stream: body.stream === true };
  },
  ...openaiDataStream,
  assemble(records, framing) {
    if (framing !== "whole") return assembleCompletion(records);
    const whole = wholeBody(records);
    if (whole === undefined) throw new IncompleteAnswerError("ollama's completion body is incomplete");
    return whole;
  },
};
