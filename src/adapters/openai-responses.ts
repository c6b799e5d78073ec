import { BadRequestError } from "../errors";
import { modelKey } from "../ollama/model-key";
import { IncompleteAnswerError, type WireAdapter, streamsWhenAsked } from "./adapter";
import { checkBody } from "./check-body";
import { errorBody } from "./error-shapes";
import { ResponsesRequest } from "./openai-types";
import { assertReasoningEffort } from "./reasoning-effort";
import { type Json, asObject, sseEventName, sseJson, wholeBody, wholeError, wholeIsFinal } from "./sse-json";
import { usageFields } from "./usage";

/** Input item types Ollama decodes (R:openai/responses.go:258-293). */
const ITEM_TYPES = new Set(["message", "function_call", "function_call_output", "reasoning", "web_search_call"]);
/** Content part types Ollama decodes (R:openai/responses.go:107-143). */
const PART_TYPES = new Set(["input_text", "input_image", "output_text", "input_file"]);
/** The events that end a successful answer: `incomplete` is one cut short (max_output_tokens), still an answer. */
const FINAL_EVENTS = new Set(["response.completed", "response.incomplete"]);

/** Checks content given as a string or parts, as Ollama decodes it; `name` is "content" or "output". */
function checkParts(value: unknown, where: string, name: string): boolean {
  if (value == null || typeof value === "string") return false;
  if (!Array.isArray(value)) throw new BadRequestError(`${where}: ${name} must be a string or array`);
  let hasFile = false;
  for (const [index, part] of value.entries()) {
    const type = asObject(part)?.type;
    if (!PART_TYPES.has(type as string)) {
      throw new BadRequestError(`${where}: ${name}[${index}]: unknown content type: ${typeof type === "string" ? type : ""}`);
    }
    if (type === "input_file") hasFile = true;
  }
  return hasFile;
}

/** Checks `input` items as Ollama's decoder and converter do, with their texts. */
function checkInput(input: unknown): void {
  if (!Array.isArray(input)) return;
  let hasFile = false;
  for (const [index, value] of input.entries()) {
    const where = `input[${index}]`;
    const item = asObject(value);
    if (!item) throw new BadRequestError(`${where}: an input item must be an object`);
    // A bare {role, content} is a message (R:openai/responses.go:250-254).
    const type = item.type || (item.role ? "message" : "");
    if (typeof type !== "string") throw new BadRequestError(`${where}: "type" must be a string`);
    if (!type) throw new BadRequestError(`${where}: input item missing required 'type' field`);
    if (!ITEM_TYPES.has(type)) throw new BadRequestError(`${where}: unknown input item type: ${JSON.stringify(type)}`);
    if (type === "message") hasFile = checkParts(item.content, where, "content") || hasFile;
    if (type === "function_call_output") hasFile = checkParts(item.output, where, "output") || hasFile;
  }
  // Decoding takes every item first; files are refused when the request is converted (R:openai/responses.go:751).
  if (hasFile) throw new BadRequestError("file inputs are not currently supported");
}

/** POST /v1/responses: OpenAI's Responses API, the stateless part Ollama serves (reference §6.6). */
export const openaiResponses: WireAdapter = {
  type: "openai.responses",
  api: "openai",
  upstreamPath: "/v1/responses",
  requestSchema: ResponsesRequest,
  describe(body) {
    checkBody(ResponsesRequest, body);
    checkInput(body.input);
    assertReasoningEffort(body.reasoning?.effort);
    const model = body.model ?? "";
    if (!model) throw new BadRequestError("model is required");
    return { model, modelKey: modelKey(model, undefined), stream: streamsWhenAsked(body) };
  },
  streams: streamsWhenAsked,
  streamingBody: (body) => ({ ...body, stream: true }),
  isFinal(record, framing) {
    if (framing === "whole") return wholeIsFinal(record);
    return FINAL_EVENTS.has(sseEventName(record) ?? "");
  },
  recordError(record, framing) {
    if (framing === "whole") return wholeError(record);
    const event = sseEventName(record);
    if (event !== "error" && event !== "response.failed") return undefined;
    const json = sseJson(record).json ?? {};
    const error = event === "error" ? (asObject(json.error) ?? json) : asObject(asObject(json.response)?.error);
    return typeof error?.message === "string" ? error.message : event;
  },
  assemble(records, framing) {
    if (framing === "whole") {
      const whole = wholeBody(records);
      if (whole === undefined) throw new IncompleteAnswerError("ollama's response body is incomplete");
      return whole;
    }
    for (let i = records.length - 1; i >= 0; i--) {
      if (!FINAL_EVENTS.has(sseEventName(records[i]!) ?? "")) continue;
      const response = asObject(sseJson(records[i]!).json?.response);
      if (response) return JSON.stringify(response);
    }
    throw new IncompleteAnswerError("the response stream ended before response.completed");
  },
  failureRecord(message, framing, last) {
    if (framing === "whole") return JSON.stringify(errorBody("openai", 500, message));
    // The openai SDK raises an APIError on an `error` event; it carries the next sequence number.
    const previous = last === undefined ? undefined : sseJson(last).json?.sequence_number;
    const event: Json = { type: "error", code: null, message, param: null };
    if (typeof previous === "number") event.sequence_number = previous + 1;
    return `event: error\ndata: ${JSON.stringify(event)}\n\n`;
  },
  usage: usageFields("input_tokens", "output_tokens"),
};
