import type { JobType } from "../adapters";
import { adapterFor } from "../adapters";
import { ApiError } from "../errors";
import type { BatchError } from "./store";

/** The endpoints a batch may target, and the job type each line runs as. */
export const BATCH_ENDPOINTS = {
  "/v1/chat/completions": "openai.chat",
  "/v1/completions": "openai.completion",
  "/v1/embeddings": "openai.embeddings",
  "/v1/responses": "openai.responses",
} as const satisfies Record<string, JobType>;

export type BatchEndpoint = keyof typeof BATCH_ENDPOINTS;

/** What one line of an input file is. */
export type ClassifiedLine =
  | { kind: "blank" }
  /** The file is malformed here: the whole batch fails with this error. */
  | { kind: "malformed"; error: BatchError }
  /** A well-formed line whose request is refused (400): it fails alone, in the error file. */
  | { kind: "refused"; customId: string; status: number; message: string }
  | { kind: "request"; customId: string; type: JobType; model: string; modelKey: string; request: string };

const malformed = (line: number, code: string, message: string, param: string | null = null): ClassifiedLine => ({
  kind: "malformed",
  error: { code, message, param, line },
});

/**
 * Reads one line of a batch input file as OpenAI does: it must be a JSON object with a string
 * `custom_id`, `method` POST, `url` the batch's endpoint and an object `body`; the body is then
 * checked as its route would check it. Duplicate custom_ids and unknown models are the caller's check.
 */
export function classifyLine(text: string, line: number, endpoint: BatchEndpoint): ClassifiedLine {
  if (text.trim() === "") return { kind: "blank" };
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return malformed(line, "invalid_json_line", "This line is not parseable as valid JSON.");
  }
  if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) {
    return malformed(line, "invalid_json_line", "This line is not a JSON object.");
  }
  const { custom_id: customId, method, url, body } = parsed as Record<string, unknown>;
  if (typeof customId !== "string" || customId === "") {
    return malformed(
      line,
      "missing_required_parameter",
      "Missing required parameter: 'custom_id' (a non-empty string).",
      "custom_id",
    );
  }
  if (method !== "POST") {
    return malformed(line, "invalid_value", "Invalid value for 'method': only POST is supported.", "method");
  }
  if (url !== endpoint) {
    return malformed(
      line,
      "invalid_url",
      `The URL provided for this request does not match the batch endpoint ${endpoint}.`,
      "url",
    );
  }
  if (!body || typeof body !== "object" || Array.isArray(body)) {
    return malformed(line, "missing_required_parameter", "Missing required parameter: 'body' (a JSON object).", "body");
  }
  const type = BATCH_ENDPOINTS[endpoint];
  // Nobody waits on a batch line's stream: each runs as one whole answer.
  const request: Record<string, unknown> = { ...(body as Record<string, unknown>) };
  if (type !== "openai.embeddings") {
    request.stream = false;
    delete request.stream_options;
  }
  try {
    const facts = adapterFor(type).describe(request);
    return { kind: "request", customId, type, model: facts.model, modelKey: facts.modelKey, request: JSON.stringify(request) };
  } catch (error) {
    if (error instanceof ApiError) return { kind: "refused", customId, status: error.status, message: error.message };
    throw error;
  }
}
