import type { AnswerUsage } from "./adapter";

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
