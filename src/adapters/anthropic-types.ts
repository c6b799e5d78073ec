import { Type } from "@sinclair/typebox";
import { t } from "elysia";
import { nullable } from "./nullable";

// Ollama decodes the body into Go structs (R:anthropic/anthropic.go:67-205): unknown fields are ignored,
// so every object is open; a known field of the wrong type is a 400; null is accepted wherever Go does.
// Integers are TypeBox's own: Elysia's t.Integer also takes numeric strings (and defaults to 0),
// which Go's decoder refuses.

const open = { additionalProperties: true } as const;

/** A content block of a message: text, image, tool_use, tool_result, thinking (R:anthropic/anthropic.go:111-140). */
const ContentBlock = t.Object(
  {
    type: nullable(t.String({ description: "text, image, tool_use, tool_result or thinking" })),
    text: nullable(t.String()),
    source: nullable(
      t.Object(
        {
          type: nullable(t.String({ description: "base64 only" })),
          media_type: nullable(t.String()),
          data: nullable(t.String()),
          url: nullable(t.String()),
        },
        open,
      ),
    ),
    id: nullable(t.String()),
    name: nullable(t.String()),
    input: nullable(t.Object({}, open)),
    tool_use_id: nullable(t.String()),
    content: t.Optional(t.Unknown()),
    is_error: nullable(t.Boolean()),
    thinking: nullable(t.String()),
    signature: nullable(t.String()),
  },
  open,
);

/** A message: `content` is a string or content blocks (R:anthropic/anthropic.go:86-109). */
const MessageParam = t.Object(
  {
    role: nullable(t.String({ description: "user or assistant", examples: ["user"] })),
    content: nullable(t.Union([t.String(), t.Array(ContentBlock)])),
  },
  open,
);

/** Body of POST /v1/messages (R:anthropic/anthropic.go:67-82). `model`, `max_tokens` and `messages` are required. */
export const MessagesRequest = t.Object(
  {
    model: nullable(t.String({ description: "The model, as Ollama names it", examples: ["llama3.2"] })),
    max_tokens: nullable(Type.Integer({ description: "Tokens to generate at most, above 0 (num_predict)" })),
    messages: nullable(t.Array(MessageParam, { description: "At least one message" })),
    system: t.Optional(t.Unknown({ description: "A string or text blocks: the system prompt" })),
    stream: nullable(t.Boolean({ description: "Default false" })),
    temperature: nullable(t.Number()),
    top_p: nullable(t.Number()),
    top_k: nullable(Type.Integer()),
    stop_sequences: nullable(t.Array(t.String())),
    tools: nullable(
      t.Array(
        t.Object(
          {
            type: nullable(t.String()),
            name: nullable(t.String()),
            description: nullable(t.String()),
            input_schema: t.Optional(t.Unknown()),
            max_uses: nullable(Type.Integer()),
          },
          open,
        ),
      ),
    ),
    tool_choice: nullable(
      t.Object(
        { type: nullable(t.String()), name: nullable(t.String()), disable_parallel_tool_use: nullable(t.Boolean()) },
        open,
      ),
    ),
    thinking: nullable(
      t.Object(
        { type: nullable(t.String({ description: "enabled or disabled" })), budget_tokens: nullable(Type.Integer()) },
        open,
      ),
    ),
    metadata: nullable(t.Object({ user_id: nullable(t.String()) }, open)),
    output_config: nullable(t.Object({ effort: nullable(t.String()) }, open)),
  },
  {
    ...open,
    examples: [
      { model: "llama3.2", max_tokens: 64, messages: [{ role: "user", content: "Why is the sky blue? One sentence." }] },
    ],
  },
);
export type MessagesRequest = typeof MessagesRequest.static;
