import { BadRequestError } from "../errors";
import { modelKey } from "../ollama/model-key";
import { IncompleteAnswerError, type WireAdapter, streamsWhenAsked } from "./adapter";
import { checkBody } from "./check-body";
import { CompletionRequest } from "./openai-types";
import { type ChoiceBase, assembleChoices, openaiDataStream } from "./openai-stream";
import { wholeBody } from "./sse-json";

/** The `text_completion` a stream of completion frames adds up to (R:openai/openai.go:166-183,407-448). */
function assembleCompletion(records: readonly string[]): string {
  return assembleChoices<ChoiceBase & { text: string }>(
    records,
    { chunk: "text_completion", answer: "text_completion", name: "completion" },
    {
      start: (index) => ({ index, text: "", finishReason: null, logprobs: [] }),
      add(parts, choice) {
        if (typeof choice.text === "string") parts.text += choice.text;
      },
      render: (parts) => ({ text: parts.text, index: parts.index }),
    },
  );
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
    return { model, modelKey: modelKey(model, undefined), stream: streamsWhenAsked(body) };
  },
  streams: streamsWhenAsked,
  ...openaiDataStream,
  assemble(records, framing) {
    if (framing !== "whole") return assembleCompletion(records);
    const whole = wholeBody(records);
    if (whole === undefined) throw new IncompleteAnswerError("ollama's completion body is incomplete");
    return whole;
  },
};
