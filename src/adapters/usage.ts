import type { AnswerUsage } from "./adapter";
import { sseJson } from "./sse-json";

/** A count or duration from an answer: a finite non-negative number, or null. */
function numberOrNull(value: unknown): number | null {
  return typeof value === "number" && Number.isFinite(value) && value >= 0 ? value : null;
}

const NS_PER_MS = 1e6;

/** Ollama's native final record: prompt_eval_count, eval_count and durations in nanoseconds. */
export function nativeUsage(answer: Record<string, unknown>): AnswerUsage {
  const ns = (value: unknown) => {
    const n = numberOrNull(value);
    return n === null ? null : n / NS_PER_MS;
  };
  return {
    promptTokens: numberOrNull(answer.prompt_eval_count),
    outputTokens: numberOrNull(answer.eval_count),
    loadMs: ns(answer.load_duration),
    evalMs: ns(answer.eval_duration),
  };
}

/** An OpenAI- or Anthropic-style `usage` object, by its two field names; no timings (those APIs give none). */
export function usageFields(promptField: string, outputField: string) {
  return (answer: Record<string, unknown>): AnswerUsage => {
    const usage = (answer.usage ?? {}) as Record<string, unknown>;
    return {
      promptTokens: numberOrNull(usage[promptField]),
      outputTokens: numberOrNull(usage[outputField]),
      loadMs: null,
      evalMs: null,
    };
  };
}

const nonEmpty = (value: unknown) => (typeof value === "string" ? value.length > 0 : Array.isArray(value) && value.length > 0);

/**
 * The frames of an OpenAI data stream (chat or completions) that carry output: a choice's text, or its
 * delta's content, reasoning or tool calls. Ollama's OpenAI layer sends one such frame per token generated
 * (the role-only first frame and the finish frame carry none), so this is the output-token count of a
 * stream that was not asked for its usage frame.
 */
export function countOutputFrames(records: readonly string[]): number {
  let count = 0;
  for (const record of records) {
    const choices = sseJson(record).json?.choices;
    if (!Array.isArray(choices)) continue;
    const carries = choices.some((choice) => {
      const c = (choice ?? {}) as Record<string, unknown>;
      const delta = (c.delta ?? {}) as Record<string, unknown>;
      return nonEmpty(c.text) || nonEmpty(delta.content) || nonEmpty(delta.reasoning) || nonEmpty(delta.tool_calls);
    });
    if (carries) count++;
  }
  return count;
}
