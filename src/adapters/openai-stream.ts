import { IncompleteAnswerError, type WireAdapter } from "./adapter";
import { errorBody } from "./error-shapes";
import type { Framing } from "./framing";
import { type Json, asObject, sseJson, wholeError, wholeIsFinal } from "./sse-json";
import { countOutputFrames, usageFields } from "./usage";

/** The sentinel that ends an OpenAI chat or completion stream. */
const DONE = "data: [DONE]";

/**
 * What /v1/chat/completions and /v1/completions share: `data:` frames without event names, ended by
 * `data: [DONE]`, a failure told as a frame holding an `error` (the openai SDK throws on one), and a
 * job's stream asks for the usage frame so its answer can carry usage.
 */
export const openaiDataStream = {
  streamingBody: (body: Record<string, unknown>) => ({
    ...body,
    stream: true,
    stream_options: { ...(body.stream_options as object | null | undefined), include_usage: true },
  }),
  isFinal: (record: string, framing: Framing) => (framing === "whole" ? wholeIsFinal(record) : record.trimEnd() === DONE),
  recordError(record: string, framing: Framing) {
    if (framing === "whole") return wholeError(record);
    // Only a key can put "error": unescaped in a frame; a text delta that says it is escaped.
    if (!record.includes('"error":')) return undefined;
    const error = sseJson(record).json?.error;
    if (typeof error === "string") return error;
    const message = (error as { message?: unknown } | null | undefined)?.message;
    return typeof message === "string" ? message : undefined;
  },
  failureRecord(message: string, framing: Framing) {
    const body = JSON.stringify(errorBody("openai", 500, message));
    return framing === "whole" ? body : `data: ${body}\n\n`;
  },
  usage: usageFields("prompt_tokens", "completion_tokens"),
  countOutputRecords: countOutputFrames,
} satisfies Partial<WireAdapter>;

/** What every streamed choice keeps, whatever else its API adds. */
export interface ChoiceBase {
  index: number;
  finishReason: unknown;
  logprobs: unknown[];
}

/**
 * Adds up an OpenAI data stream (chat or completions) into the non-streaming body: frames of type
 * `frames.chunk` are merged choice by choice (`start` makes a choice's parts, `add` folds one delta into
 * them, `render` gives the choice's own fields), under the first frame's id, created, model and
 * fingerprint, with the last usage seen. Throws IncompleteAnswerError when `data: [DONE]` never came.
 */
export function assembleChoices<P extends ChoiceBase>(
  records: readonly string[],
  frames: { chunk: string; answer: string; name: string },
  parts: { start: (index: number) => P; add: (parts: P, choice: Json) => void; render: (parts: P) => Json },
): string {
  let first: Json | undefined;
  let usage: unknown;
  let done = false;
  const choices = new Map<number, P>();
  for (const record of records) {
    const { data, json } = sseJson(record);
    if (data === "[DONE]") done = true;
    if (!json || json.object !== frames.chunk) continue;
    first ??= json;
    // With include_usage a completions frame carries zeros and the last one the counts: the last one wins.
    if (json.usage) usage = json.usage;
    for (const choice of (Array.isArray(json.choices) ? json.choices : []) as Json[]) {
      const index = typeof choice.index === "number" ? choice.index : 0;
      let choiceParts = choices.get(index);
      if (!choiceParts) choices.set(index, (choiceParts = parts.start(index)));
      parts.add(choiceParts, choice);
      if (choice.finish_reason != null) choiceParts.finishReason = choice.finish_reason;
      const logprobs = asObject(choice.logprobs)?.content;
      if (Array.isArray(logprobs)) choiceParts.logprobs.push(...logprobs);
    }
  }
  if (!done || !first) throw new IncompleteAnswerError(`the ${frames.name} stream ended before data: [DONE]`);
  const answer: Json = {
    id: first.id,
    object: frames.answer,
    created: first.created,
    model: first.model,
    system_fingerprint: first.system_fingerprint,
    choices: [...choices.values()]
      .sort((a, b) => a.index - b.index)
      .map((choiceParts) => ({
        ...parts.render(choiceParts),
        finish_reason: choiceParts.finishReason,
        ...(choiceParts.logprobs.length ? { logprobs: { content: choiceParts.logprobs } } : {}),
      })),
  };
  // Without stream_options.include_usage a stream carries none; better no usage than invented zeros.
  if (usage) answer.usage = usage;
  return JSON.stringify(answer);
}
