import { Type } from "@sinclair/typebox";
import { t } from "elysia";
import { BadRequestError } from "../errors";

// Integers are TypeBox's own: Elysia's t.Integer also takes numeric strings, which Go's decoder refuses.

// Ollama ignores unknown fields (R:api/types.go via encoding/json), so every object here is open;
// the fields it knows are typed so a wrong type is a 400, as Ollama's decoder makes it.

const KeepAlive = t.Union([t.Number(), t.String()], {
  description: 'Seconds, or a duration such as "5m"; negative keeps it loaded',
});
const Options = t.Record(t.String(), t.Unknown(), { description: "Modelfile parameters: temperature, num_ctx, …" });
const Think = t.Union([t.Boolean(), t.String()]);

/** A chat message (R:api/types.go:197-207). */
export const ChatMessage = t.Object(
  {
    role: t.String({ examples: ["user"] }),
    content: t.Optional(t.String()),
    thinking: t.Optional(t.String()),
    images: t.Optional(t.Array(t.String())),
    tool_calls: t.Optional(t.Array(t.Unknown())),
    tool_name: t.Optional(t.String()),
    tool_call_id: t.Optional(t.String()),
  },
  { additionalProperties: true },
);

/** Fields /api/chat and /api/generate share, with the same meaning (R:api/types.go). */
const generationFields = {
  model: t.Optional(t.String({ examples: ["llama3.2"] })),
  stream: t.Optional(t.Boolean()),
  format: t.Optional(t.Unknown()),
  options: t.Optional(Options),
  keep_alive: t.Optional(KeepAlive),
  think: t.Optional(Think),
  truncate: t.Optional(t.Boolean()),
  shift: t.Optional(t.Boolean()),
  logprobs: t.Optional(t.Boolean()),
  top_logprobs: t.Optional(Type.Integer()),
};

/** Body of POST /api/chat (R:api/types.go:133-183). `model` is checked by hand for Ollama's exact errors. */
export const ChatRequest = t.Object(
  { ...generationFields, messages: t.Optional(t.Array(ChatMessage)), tools: t.Optional(t.Array(t.Unknown())) },
  { additionalProperties: true },
);
export type ChatRequest = typeof ChatRequest.static;

/** Body of POST /api/generate (R:api/types.go:62-130). */
export const GenerateRequest = t.Object(
  {
    ...generationFields,
    prompt: t.Optional(t.String()),
    suffix: t.Optional(t.String()),
    system: t.Optional(t.String()),
    template: t.Optional(t.String()),
    context: t.Optional(t.Array(Type.Integer())),
    raw: t.Optional(t.Boolean()),
    images: t.Optional(t.Array(t.String())),
  },
  { additionalProperties: true },
);
export type GenerateRequest = typeof GenerateRequest.static;

export const OllamaError = t.Object({ error: t.String() }, { description: "Ollama's error shape" });

/** Parses a JSON request body as Ollama does: empty is "missing request body", bad JSON a 400. */
export function parseJsonBody(text: string): unknown {
  if (!text.trim()) throw new BadRequestError("missing request body");
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new BadRequestError(`invalid JSON in request body: ${(error as Error).message}`);
  }
}
