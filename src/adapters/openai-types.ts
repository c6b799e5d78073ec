import { Type } from "@sinclair/typebox";
import { t } from "elysia";
import { nullable } from "./nullable";

// Ollama decodes these bodies into Go structs (R:openai/openai.go, R:openai/responses.go): unknown fields
// are ignored, so every object is open; a known field of the wrong type is a 400; null is accepted
// wherever Go accepts it (any field), so each known field may be null too.
// Integers are TypeBox's own: Elysia's t.Integer also takes numeric strings (and defaults to 0),
// which Go's decoder refuses.

const open = { additionalProperties: true } as const;
const Model = t.String({ description: "The model, as Ollama names it", examples: ["llama3.2"] });
const Stop = t.Union([t.String(), t.Array(t.String())], { description: "One stop sequence or several" });
const StreamOptions = t.Object({ include_usage: nullable(t.Boolean()) }, open);
const Reasoning = t.Object(
  { effort: nullable(t.String({ description: "none, minimal, low, medium, high, xhigh, ultra or max" })) },
  open,
);

/** An OpenAI tool call, in a chat message or a streamed delta (R:openai/openai.go:185-193). */
const ToolCall = t.Object(
  {
    id: nullable(t.String()),
    index: nullable(Type.Integer()),
    type: nullable(t.String()),
    function: nullable(t.Object({ name: nullable(t.String()), arguments: nullable(t.String()) }, open)),
  },
  open,
);

/** A chat message: `content` is a string or an array of `text` / `image_url` parts (R:openai/openai.go:33-40). */
const ChatMessage = t.Object(
  {
    role: nullable(t.String({ examples: ["user"] })),
    content: nullable(t.Union([t.String(), t.Array(t.Unknown())])),
    reasoning: nullable(t.String()),
    tool_calls: nullable(t.Array(ToolCall)),
    name: nullable(t.String()),
    tool_call_id: nullable(t.String()),
  },
  open,
);

/** Body of POST /v1/chat/completions (R:openai/openai.go:105-124). `stream` defaults to false. */
export const ChatCompletionRequest = t.Object(
  {
    model: nullable(Model),
    messages: nullable(t.Array(ChatMessage, { description: "At least one message" })),
    stream: nullable(t.Boolean({ description: "Default false" })),
    stream_options: nullable(StreamOptions),
    max_tokens: nullable(Type.Integer({ description: "Tokens to generate at most (num_predict)" })),
    seed: nullable(Type.Integer()),
    stop: nullable(Stop),
    temperature: nullable(t.Number({ description: "Default 1.0" })),
    frequency_penalty: nullable(t.Number()),
    presence_penalty: nullable(t.Number()),
    top_p: nullable(t.Number({ description: "Default 1.0" })),
    response_format: nullable(
      t.Object(
        {
          type: nullable(t.String({ description: "text, json_object or json_schema" })),
          json_schema: nullable(t.Object({ schema: t.Optional(t.Unknown()) }, open)),
        },
        open,
      ),
    ),
    tools: nullable(t.Array(t.Object({}, open))),
    reasoning: nullable(Reasoning),
    reasoning_effort: nullable(t.String({ description: "none, minimal, low, medium, high, xhigh, ultra or max" })),
    logprobs: nullable(t.Boolean()),
    top_logprobs: nullable(Type.Integer()),
  },
  {
    ...open,
    examples: [
      { model: "llama3.2", messages: [{ role: "user", content: "Why is the sky blue? One sentence." }], max_tokens: 64 },
    ],
  },
);
export type ChatCompletionRequest = typeof ChatCompletionRequest.static;

/** Body of POST /v1/completions (R:openai/openai.go:148-164): `prompt` is one string. `stream` defaults to false. */
export const CompletionRequest = t.Object(
  {
    model: nullable(Model),
    prompt: nullable(t.String()),
    suffix: nullable(t.String()),
    max_tokens: nullable(Type.Integer({ description: "Tokens to generate at most (num_predict)" })),
    frequency_penalty: nullable(t.Number()),
    presence_penalty: nullable(t.Number()),
    seed: nullable(Type.Integer()),
    stop: nullable(Stop),
    stream: nullable(t.Boolean({ description: "Default false" })),
    stream_options: nullable(StreamOptions),
    temperature: nullable(t.Number({ description: "Default 1.0" })),
    top_p: nullable(t.Number({ description: "0 means 1.0" })),
    logprobs: nullable(Type.Integer()),
  },
  { ...open, examples: [{ model: "llama3.2", prompt: "The sky is blue because", max_tokens: 64 }] },
);
export type CompletionRequest = typeof CompletionRequest.static;

/** A Responses tool: flat `{type, name, description, parameters}` (R:openai/responses.go:342-356). */
const ResponsesTool = t.Object(
  {
    type: nullable(t.String({ description: "function, namespace or web_search" })),
    name: nullable(t.String()),
    description: nullable(t.String()),
    strict: nullable(t.Boolean()),
    parameters: nullable(t.Object({}, open)),
    tools: nullable(t.Array(t.Object({}, open))),
  },
  open,
);

/**
 * Body of POST /v1/responses, the stateless part Ollama serves (R:openai/responses.go:368-413). `input`
 * items are checked by hand for Ollama's texts. `stream` defaults to false.
 */
export const ResponsesRequest = t.Object(
  {
    model: nullable(Model),
    input: nullable(t.Union([t.String(), t.Array(t.Unknown())], { description: "A string, or input items" })),
    instructions: nullable(t.String({ description: "A leading system message" })),
    max_output_tokens: nullable(Type.Integer()),
    reasoning: nullable(
      t.Object({ effort: nullable(t.String()), generate_summary: nullable(t.String()), summary: nullable(t.String()) }, open),
    ),
    temperature: nullable(t.Number({ description: "Default 1.0" })),
    top_p: nullable(t.Number()),
    text: nullable(
      t.Object(
        {
          format: nullable(
            t.Object(
              {
                type: nullable(t.String({ description: "text, json_object or json_schema" })),
                name: nullable(t.String()),
                schema: t.Optional(t.Unknown()),
                strict: nullable(t.Boolean()),
              },
              open,
            ),
          ),
        },
        open,
      ),
    ),
    truncation: nullable(t.String()),
    tools: nullable(t.Array(ResponsesTool)),
    include: nullable(t.Array(t.String())),
    background: nullable(t.Boolean()),
    stream: nullable(t.Boolean({ description: "Default false" })),
  },
  { ...open, examples: [{ model: "llama3.2", input: "Why is the sky blue? One sentence.", max_output_tokens: 64 }] },
);
export type ResponsesRequest = typeof ResponsesRequest.static;
