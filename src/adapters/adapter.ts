import type { TSchema } from "@sinclair/typebox";
import type { Framing } from "./framing";

/** The API families foreman speaks; each has its own error shape. */
export type ApiFamily = "ollama" | "openai" | "anthropic";

/** What the queue needs to know of a valid request. */
export interface RequestFacts {
  /** The model as the client named it. */
  model: string;
  /** The model's identity for drain-by-model: name plus the options that force a reload. */
  modelKey: string;
  /** Whether the client asked for a stream (each API has its own default). */
  stream: boolean;
}

/**
 * Everything that differs between the wire formats a queued generation can come in. The runner, the
 * synchronous response and the job API look the adapter up by the job's type and hold no knowledge
 * of any format themselves. Adding an API means one adapter file, its entry in the registry
 * (adapters/index.ts) and its route.
 */
export interface WireAdapter {
  /** The job type stored in the row, e.g. "chat" or "openai.chat". */
  readonly type: string;
  /** Which API's error shape this format uses. */
  readonly api: ApiFamily;
  /** Ollama's route the worker sends the request to (the same route foreman serves). */
  readonly upstreamPath: string;
  /** The request body's schema, for the OpenAPI document and the job API. */
  readonly requestSchema: TSchema;
  /**
   * Checks a parsed body as Ollama would (throwing an ApiError, 400 for a bad field) and reads what the
   * queue needs. An unknown model is the caller's check, as it needs the inventory.
   */
  describe(body: unknown): RequestFacts;
  /**
   * Whether a body {@link describe} accepted asks for a stream, read without checking it again: the
   * worker asks this of every job it sends, on the path between two jobs on the GPU.
   */
  streams(body: Record<string, unknown>): boolean;
  /** The body to send upstream for a watched job (job API, batch): streaming, so watchers see progress. */
  streamingBody(body: Record<string, unknown>): Record<string, unknown>;
  /** True for the record that completes a successful answer: a stream's last one, or a whole body. */
  isFinal(record: string, framing: Framing): boolean;
  /** The error text of a record that reports a failure mid-stream; undefined for any other record. */
  recordError(record: string, framing: Framing): string | undefined;
  /**
   * The non-streaming answer, as this API gives it with streaming off, built from the records of an
   * answer (one record when it came whole). Throws IncompleteAnswerError when the final record is missing.
   */
  assemble(records: readonly string[], framing: Framing): string;
  /**
   * The last record sent to a streaming client whose answer fails after its status went out. `last` is
   * the record sent before it, when known: a format that numbers its events (Responses) continues it.
   */
  failureRecord(message: string, framing: Framing, last?: string): string;
  /** The token counts and timings of an assembled answer (what {@link assemble} returned, parsed). */
  usage(answer: Record<string, unknown>): AnswerUsage;
  /**
   * For a stream whose answer carried no usage (an OpenAI stream without `stream_options.include_usage`):
   * the tokens generated, counted as the records that carry output (Ollama sends one per token). Absent
   * where every answer carries usage.
   */
  countOutputRecords?(records: readonly string[]): number;
}

/** The OpenAI and Anthropic rule: a stream only when `stream` is true. */
export const streamsWhenAsked = (body: Record<string, unknown>): boolean => body.stream === true;

/** What a finished answer reports about its cost; null where its API does not say. */
export interface AnswerUsage {
  promptTokens: number | null;
  /** Tokens generated. */
  outputTokens: number | null;
  /** Ollama's load_duration and eval_duration, in ms (only the native APIs report them). */
  loadMs: number | null;
  evalMs: number | null;
  /** True when outputTokens (and evalMs) were counted and timed by foreman, not reported by Ollama. */
  estimated?: boolean;
}

/** The answer stopped before its final record: the connection broke or Ollama gave up. */
export class IncompleteAnswerError extends Error {
  override name = "IncompleteAnswerError";
}
