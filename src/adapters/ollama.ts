import { BadRequestError } from "../errors";
import { modelKey } from "../ollama/model-key";
import { ChatRequest, GenerateRequest } from "../ollama/types";
import { checkBody } from "./check-body";
import { IncompleteAnswerError, type WireAdapter } from "./adapter";
import { tryJson } from "./framing";
import { assembleFinalResponse } from "./ollama-assemble";
import { nativeUsage } from "./usage";

type Body = { model?: string; stream?: boolean; options?: unknown };

/** Ollama's native APIs stream unless told `"stream": false`. */
const nativeStreams = (body: { stream?: unknown }): boolean => body.stream !== false;

/** Ollama's native NDJSON format, shared by /api/chat and /api/generate; they differ in path and checks. */
function ollamaAdapter(type: "chat" | "generate", schema: typeof ChatRequest | typeof GenerateRequest): WireAdapter {
  return {
    type,
    api: "ollama",
    upstreamPath: `/api/${type}`,
    requestSchema: schema,
    describe(body) {
      checkBody(schema, body);
      const { model = "", stream, options } = body as Body;
      // Ollama's own answers: chat checks for a model first (400); generate looks "" up and misses (404).
      if (!model && type === "chat") throw new BadRequestError("model is required");
      return { model, modelKey: modelKey(model, options), stream: nativeStreams({ stream }) };
    },
    streams: nativeStreams,
    streamingBody: (body) => ({ ...body, stream: true }),
    isFinal: (record) => record.includes('"done":true') && (tryJson(record) as { done?: unknown } | undefined)?.done === true,
    recordError(record) {
      if (!record.startsWith('{"error"')) return undefined;
      const error = (tryJson(record) as { error?: unknown } | undefined)?.error;
      return typeof error === "string" ? error : undefined;
    },
    assemble(records) {
      if (records.length === 0) throw new IncompleteAnswerError("ollama sent an empty answer");
      const result = assembleFinalResponse(records);
      if (result.done !== true) throw new IncompleteAnswerError("ollama closed the stream before it was done");
      // One record is Ollama's own non-streaming body: keep its exact bytes.
      return records.length === 1 ? records[0]! : JSON.stringify(result);
    },
    failureRecord: (message) => `${JSON.stringify({ error: message })}\n`,
    usage: nativeUsage,
  };
}

/** POST /api/chat. */
export const ollamaChat = ollamaAdapter("chat", ChatRequest);
/** POST /api/generate. */
export const ollamaGenerate = ollamaAdapter("generate", GenerateRequest);
