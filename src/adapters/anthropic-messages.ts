import { BadRequestError } from "../errors";
import { modelKey } from "../ollama/model-key";
import { IncompleteAnswerError, type WireAdapter, streamsWhenAsked } from "./adapter";
import { MessagesRequest } from "./anthropic-types";
import { checkBody } from "./check-body";
import { errorBody } from "./error-shapes";
import { type Json, asObject, sseEventName, sseJson, wholeBody, wholeError, wholeIsFinal } from "./sse-json";
import { usageFields } from "./usage";

/** Checks content blocks as Ollama's converter does, with its texts (R:anthropic/anthropic.go:436-470,996-1000). */
function checkBlocks(messages: MessagesRequest["messages"]): void {
  for (const message of messages ?? []) {
    if (!Array.isArray(message.content)) continue;
    for (const block of message.content) {
      if (block.type === "image") {
        if (!block.source) throw new BadRequestError("invalid image source");
        if (block.source.type !== "base64") {
          throw new BadRequestError(`invalid image source type: ${block.source.type ?? ""}. Only base64 images are supported.`);
        }
      }
      if (block.type === "tool_use" && !block.id) throw new BadRequestError("tool_use block missing required 'id' field");
      if (block.type === "tool_use" && !block.name) throw new BadRequestError("tool_use block missing required 'name' field");
    }
  }
}

/** A content block being streamed: the block, and a tool's input JSON as its pieces arrive. */
type OpenBlock = { block: Json; inputJson: string | undefined };

/** Ends a block: a tool's streamed input JSON becomes its `input`. */
function closeBlock(open: OpenBlock, index: number): void {
  if (open.inputJson === undefined) return;
  // An empty input streams no delta at all: it stays the start's `{}`.
  if (open.inputJson.trim()) {
    try {
      open.block.input = JSON.parse(open.inputJson);
    } catch {
      throw new Error(`content block ${index}: the tool input streamed is not valid JSON`);
    }
  }
  open.inputJson = undefined;
}

/**
 * The `message` a Messages stream adds up to (R:anthropic/anthropic.go:656-715): message_start's message,
 * its content rebuilt from the blocks' starts and deltas, stop_reason and usage from message_delta.
 */
function assembleMessage(records: readonly string[]): string {
  let message: Json | undefined;
  let stop: Json = {};
  let usage: Json = {};
  let done = false;
  const blocks: OpenBlock[] = [];
  for (const record of records) {
    const event = sseEventName(record);
    if (event === "ping") continue;
    const json = sseJson(record).json;
    if (!json) continue;
    const open = typeof json.index === "number" ? blocks[json.index] : undefined;
    switch (json.type) {
      case "message_start":
        message = asObject(json.message);
        usage = { ...asObject(message?.usage) };
        break;
      case "content_block_start": {
        const block = { ...asObject(json.content_block) };
        blocks[json.index as number] = { block, inputJson: block.type === "tool_use" || "input" in block ? "" : undefined };
        break;
      }
      case "content_block_delta": {
        const delta = asObject(json.delta) ?? {};
        if (!open) break;
        if (delta.type === "text_delta") open.block.text = String(open.block.text ?? "") + String(delta.text ?? "");
        else if (delta.type === "thinking_delta")
          open.block.thinking = String(open.block.thinking ?? "") + String(delta.thinking ?? "");
        else if (delta.type === "signature_delta")
          open.block.signature = String(open.block.signature ?? "") + String(delta.signature ?? "");
        else if (delta.type === "input_json_delta") open.inputJson = (open.inputJson ?? "") + String(delta.partial_json ?? "");
        else if (delta.type === "citations_delta") {
          open.block.citations = [...((open.block.citations as unknown[] | undefined) ?? []), delta.citation];
        }
        break;
      }
      case "content_block_stop":
        if (open) closeBlock(open, json.index as number);
        break;
      case "message_delta":
        stop = { ...stop, ...asObject(json.delta) };
        // Counts in message_delta are cumulative; a null leaves message_start's value.
        for (const [key, value] of Object.entries(asObject(json.usage) ?? {})) if (value != null) usage[key] = value;
        break;
      case "message_stop":
        done = true;
        break;
    }
  }
  if (!message || !done) throw new IncompleteAnswerError("the message stream ended before message_stop");
  blocks.forEach((open, index) => closeBlock(open, index));
  const content = blocks.filter(Boolean).map((open) => open.block);

  // message_start's fields in their order; stop_reason and stop_sequence where the message has them,
  // else after content, as Ollama's non-streaming body puts them.
  const result: Json = {};
  for (const [key, value] of Object.entries(message)) {
    if (key === "content") {
      result.content = content;
      for (const field of ["stop_reason", "stop_sequence"])
        if (!(field in message) && stop[field] != null) result[field] = stop[field];
    } else if (key === "usage") result.usage = usage;
    else result[key] = key in stop ? stop[key] : value;
  }
  return JSON.stringify(result);
}

/** POST /v1/messages: Anthropic's Messages API as Ollama serves it (reference §6.7). */
export const anthropicMessages: WireAdapter = {
  type: "anthropic.messages",
  api: "anthropic",
  upstreamPath: "/v1/messages",
  requestSchema: MessagesRequest,
  describe(body) {
    checkBody(MessagesRequest, body);
    // Ollama's order and texts (R:middleware/anthropic.go:742-755).
    const model = body.model ?? "";
    if (!model) throw new BadRequestError("model is required");
    if (!body.max_tokens || body.max_tokens <= 0) throw new BadRequestError("max_tokens is required and must be positive");
    if (!body.messages?.length) throw new BadRequestError("messages is required");
    checkBlocks(body.messages);
    return { model, modelKey: modelKey(model, undefined), stream: streamsWhenAsked(body) };
  },
  streams: streamsWhenAsked,
  streamingBody: (body) => ({ ...body, stream: true }),
  isFinal(record, framing) {
    if (framing === "whole") return wholeIsFinal(record);
    return sseEventName(record) === "message_stop";
  },
  recordError(record, framing) {
    if (framing === "whole") return wholeError(record);
    if (sseEventName(record) !== "error") return undefined;
    const json = sseJson(record).json;
    const message = asObject(json?.error)?.message ?? json?.message;
    return typeof message === "string" ? message : "error";
  },
  assemble(records, framing) {
    if (framing !== "whole") return assembleMessage(records);
    const whole = wholeBody(records);
    if (whole === undefined) throw new IncompleteAnswerError("ollama's message body is incomplete");
    return whole;
  },
  failureRecord(message, framing) {
    // The Anthropic SDK raises an APIError on an `error` event.
    const body = JSON.stringify(errorBody("anthropic", 500, message));
    return framing === "whole" ? body : `event: error\ndata: ${body}\n\n`;
  },
  usage: usageFields("input_tokens", "output_tokens"),
};
