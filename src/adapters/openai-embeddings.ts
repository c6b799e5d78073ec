import { Type } from "@sinclair/typebox";
import { t } from "elysia";
import { BadRequestError } from "../errors";
import { modelKey } from "../ollama/model-key";
import { IncompleteAnswerError, type WireAdapter } from "./adapter";
import { checkBody } from "./check-body";
import { errorBody } from "./error-shapes";
import { wholeBody, wholeError, wholeIsFinal } from "./sse-json";
import { usageFields } from "./usage";

/** Body of POST /v1/embeddings (reference §6.4): `input` is a string or an array of strings. */
export const EmbeddingRequest = t.Object(
  {
    model: t.String({ description: "The embedding model" }),
    input: t.Union([t.String(), t.Array(t.String())], { description: "One text or several" }),
    dimensions: t.Optional(t.Union([Type.Integer(), t.Null()])),
    encoding_format: t.Optional(t.Union([t.String(), t.Null()])),
  },
  { additionalProperties: true },
);

/**
 * OpenAI's /v1/embeddings as a queued job: only batches use it (the interactive route goes straight to
 * Ollama), so a batch's embedding lines drain by model like its generations. Never streamed.
 */
export const openaiEmbeddings: WireAdapter = {
  type: "openai.embeddings",
  api: "openai",
  upstreamPath: "/v1/embeddings",
  requestSchema: EmbeddingRequest,
  describe(body) {
    if (body === null || typeof body !== "object" || Array.isArray(body)) {
      throw new BadRequestError("request body must be a JSON object");
    }
    checkBody(EmbeddingRequest, body);
    return { model: body.model, modelKey: modelKey(body.model, undefined), stream: false };
  },
  streams: () => false,
  streamingBody: (body) => body,
  isFinal: (record) => wholeIsFinal(record),
  recordError: (record) => wholeError(record),
  assemble(records) {
    const whole = wholeBody(records);
    if (whole === undefined) throw new IncompleteAnswerError("ollama's embeddings body is incomplete");
    return whole;
  },
  failureRecord: (message) => JSON.stringify(errorBody("openai", 500, message)),
  // Embeddings read tokens and generate none.
  usage: (answer) => ({ ...usageFields("prompt_tokens", "completion_tokens")(answer), outputTokens: 0 }),
};
