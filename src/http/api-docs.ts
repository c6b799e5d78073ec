// The OpenAPI description of the routes that read their own body (Ollama's, OpenAI's and Anthropic's): the
// request schema with an example safe to send from Swagger UI's "Try it out", and each answer's schema.
// Documentation only: the adapters validate, with the same request schemas.
import { type TSchema, Type } from "@sinclair/typebox";
import { type DocumentDecoration, t } from "elysia";
import { MessagesRequest } from "../adapters/anthropic-types";
import { ChatCompletionRequest, CompletionRequest, ResponsesRequest } from "../adapters/openai-types";
import { ChatMessage, ChatRequest, GenerateRequest, OllamaError } from "../ollama/types";

const open = { additionalProperties: true };
// TypeBox's integer, not Elysia's t.Integer (a numeric string or an integer, for query strings): answers carry numbers.
const Count = Type.Integer({ minimum: 0 });

/** An answer: its description, and per content type the schema of the body (or of each streamed record). */
type Answer = { description: string; content?: Record<string, TSchema> };

/** What {@link routeDoc} needs: the request body (schema and example, JSON unless `bodyType`) and the answers by status. */
export interface RouteDocSpec {
  body?: TSchema;
  example?: unknown;
  bodyType?: string;
  /** Query parameters read by hand (no `query` hook), all optional. Not for a route with path parameters: Elysia writes those over these. */
  query?: Record<string, TSchema>;
  /** Request headers it reads, all optional. */
  headers?: Record<string, TSchema>;
  responses: Record<number, Answer>;
}

/**
 * A route's `detail` for the OpenAPI document. Elysia documents a body only from a `body` hook with a JSON
 * parser, and these routes read their body themselves (parse: "none"), so the request body and the answers
 * are written here. The schema's own `examples` are dropped in favour of `example`, the one Swagger UI fills in.
 */
export function routeDoc(summary: string, description: string, spec: RouteDocSpec): { detail: DocumentDecoration } {
  const responses: Record<string, unknown> = {};
  for (const [status, answer] of Object.entries(spec.responses)) {
    responses[status] = {
      description: answer.description,
      ...(answer.content && {
        content: Object.fromEntries(Object.entries(answer.content).map(([type, schema]) => [type, { schema }])),
      }),
    };
  }
  // TypeBox schemas are JSON Schema objects (their symbol keys vanish in the JSON document); OpenAPI's types
  // do not know them, hence the casts.
  const requestBody = spec.body && {
    required: true,
    content: { [spec.bodyType ?? "application/json"]: { schema: spec.body, example: spec.example } },
  };
  const parameters = [
    ...Object.entries(spec.query ?? {}).map(([name, schema]) => ({ name, in: "query", schema })),
    ...Object.entries(spec.headers ?? {}).map(([name, schema]) => ({ name, in: "header", schema })),
  ].map((parameter) => ({ ...parameter, required: false, description: parameter.schema.description }));
  return {
    detail: {
      summary,
      description,
      ...(parameters.length > 0 && { parameters: parameters as unknown as DocumentDecoration["parameters"] }),
      ...(requestBody && { requestBody: requestBody as unknown as DocumentDecoration["requestBody"] }),
      responses: responses as DocumentDecoration["responses"],
    },
  };
}

// ---- Answers ----

const NDJSON = "application/x-ndjson";
const SSE = "text/event-stream";
const JSON_TYPE = "application/json";
const SseText = t.String({ description: "Server-Sent Events, one `data:` line per chunk of this API's streaming format" });

const ollamaErrors = (...statuses: number[]) =>
  Object.fromEntries(
    statuses.map((status) => [status, { description: ERROR_MEANING[status] ?? "Error", content: { [JSON_TYPE]: OllamaError } }]),
  );
const ERROR_MEANING: Record<number, string> = {
  400: "Invalid request (the message says what is allowed)",
  401: "Missing or wrong token (FOREMAN_TOKEN)",
  404: "Unknown model",
  413: "Request body too large (FOREMAN_MAX_BODY)",
  499: "The client went away (its job was canceled)",
  502: "Ollama unreachable",
  503: "Queue full (Retry-After) or foreman shutting down",
  504: "The job timed out (FOREMAN_JOB_TIMEOUT)",
};

/** OpenAI's error body (src/adapters/error-shapes.ts). */
export const OpenAIError = t.Object({
  error: t.Object({
    message: t.String(),
    type: t.String(),
    param: t.Union([t.String(), t.Null()]),
    code: t.Union([t.String(), t.Null()]),
  }),
});
const AnthropicError = t.Object({ type: t.Literal("error"), error: t.Object({ type: t.String(), message: t.String() }) });
const errorsIn = (schema: TSchema, ...statuses: number[]) =>
  Object.fromEntries(
    statuses.map((status) => [status, { description: ERROR_MEANING[status] ?? "Error", content: { [JSON_TYPE]: schema } }]),
  );
const QUEUED_ERRORS = [400, 404, 413, 499, 502, 503, 504];

/** Ollama's timing and count fields on a final record (R:api/types.go Metrics). */
const ollamaMetrics = {
  done_reason: t.Optional(t.String()),
  total_duration: t.Optional(Count),
  load_duration: t.Optional(Count),
  prompt_eval_count: t.Optional(Count),
  prompt_eval_duration: t.Optional(Count),
  eval_count: t.Optional(Count),
  eval_duration: t.Optional(Count),
};
const ChatAnswer = t.Object(
  { model: t.String(), created_at: t.String(), message: ChatMessage, done: t.Boolean(), ...ollamaMetrics },
  { ...open, description: "The answer; streamed, one such record per line, the last with done true" },
);
const GenerateAnswer = t.Object(
  {
    model: t.String(),
    created_at: t.String(),
    response: t.String(),
    thinking: t.Optional(t.String()),
    done: t.Boolean(),
    context: t.Optional(t.Array(Type.Integer())),
    ...ollamaMetrics,
  },
  { ...open, description: "The answer; streamed, one such record per line, the last with done true" },
);
const ModelEntry = t.Object(
  {
    name: t.String(),
    model: t.Optional(t.String()),
    modified_at: t.Optional(t.String()),
    size: t.Optional(Count),
    digest: t.Optional(t.String()),
    details: t.Optional(t.Record(t.String(), t.Unknown())),
  },
  open,
);
const LoadedModel = t.Object(
  { ...ModelEntry.properties, expires_at: t.Optional(t.String()), size_vram: t.Optional(Count) },
  open,
);
const Progress = t.Object(
  { status: t.String(), digest: t.Optional(t.String()), total: t.Optional(Count), completed: t.Optional(Count) },
  { ...open, description: "Progress; streamed one per line unless `stream` is false" },
);
const progressAnswers = { 200: { description: "Progress records", content: { [NDJSON]: Progress, [JSON_TYPE]: Progress } } };
/** The header that limits a management request to one Ollama target (several targets; src/http/targets-relay.ts). */
const targetHeader = {
  "X-Foreman-Target": t.String({
    description:
      "With several Ollama targets (FOREMAN_OLLAMA_URL), the name of the one to act on; absent, pull, push, copy and delete act on every target, and create and blob uploads on the first that answers. An unknown name is a 400. Ignored with one target.",
  }),
};
const emptyOk = { 200: { description: "Done (empty body)" }, ...ollamaErrors(400, 404) };

const Usage = t.Object(
  { prompt_tokens: Count, completion_tokens: Count, total_tokens: Count },
  { ...open, description: "Token counts" },
);
const ChatCompletion = t.Object(
  {
    id: t.String(),
    object: t.Literal("chat.completion"),
    created: Type.Integer(),
    model: t.String(),
    choices: t.Array(
      t.Object(
        {
          index: Type.Integer(),
          message: t.Object({ role: t.String(), content: t.Union([t.String(), t.Null()]) }, open),
          finish_reason: t.Union([t.String(), t.Null()]),
        },
        open,
      ),
    ),
    usage: t.Optional(Usage),
  },
  open,
);
const TextCompletion = t.Object(
  {
    id: t.String(),
    object: t.Literal("text_completion"),
    created: Type.Integer(),
    model: t.String(),
    choices: t.Array(t.Object({ index: Type.Integer(), text: t.String(), finish_reason: t.Union([t.String(), t.Null()]) }, open)),
    usage: t.Optional(Usage),
  },
  open,
);
const ResponseObject = t.Object(
  {
    id: t.String(),
    object: t.Literal("response"),
    created_at: Type.Integer(),
    model: t.String(),
    status: t.String(),
    output: t.Array(t.Record(t.String(), t.Unknown()), { description: "Output items: messages, reasoning, function calls" }),
    usage: t.Optional(t.Record(t.String(), t.Unknown())),
  },
  open,
);
const AnthropicMessage = t.Object(
  {
    id: t.String(),
    type: t.Literal("message"),
    role: t.Literal("assistant"),
    model: t.String(),
    content: t.Array(t.Record(t.String(), t.Unknown()), { description: "Content blocks: text, thinking, tool_use" }),
    stop_reason: t.Union([t.String(), t.Null()]),
    usage: t.Record(t.String(), t.Unknown()),
  },
  open,
);
const OpenAIModel = t.Object({ id: t.String(), object: t.Literal("model"), created: Type.Integer(), owned_by: t.String() });

// ---- Requests (beyond the adapters' schemas) ----

const EmbedRequest = t.Object(
  {
    model: t.String(),
    input: t.Union([t.String(), t.Array(t.String())]),
    truncate: t.Optional(t.Boolean()),
    dimensions: t.Optional(Type.Integer()),
    keep_alive: t.Optional(t.Union([t.Number(), t.String()])),
    options: t.Optional(t.Record(t.String(), t.Unknown())),
  },
  open,
);
const LegacyEmbeddingsRequest = t.Object({ model: t.String(), prompt: t.String() }, open);
const ModelRequest = t.Object({ model: t.String() }, open);
const PullRequest = t.Object({ model: t.String(), insecure: t.Optional(t.Boolean()), stream: t.Optional(t.Boolean()) }, open);
const CreateRequest = t.Object(
  {
    model: t.String(),
    from: t.Optional(t.String()),
    system: t.Optional(t.String()),
    template: t.Optional(t.String()),
    parameters: t.Optional(t.Record(t.String(), t.Unknown())),
    files: t.Optional(t.Record(t.String(), t.String())),
    quantize: t.Optional(t.String()),
    stream: t.Optional(t.Boolean()),
  },
  open,
);
const CopyRequest = t.Object({ source: t.String(), destination: t.String() }, open);
const OpenAIEmbeddingsRequest = t.Object(
  {
    model: t.String(),
    input: t.Union([t.String(), t.Array(t.String()), t.Array(Type.Integer()), t.Array(t.Array(Type.Integer()))]),
    encoding_format: t.Optional(t.String({ description: "float or base64" })),
    dimensions: t.Optional(Type.Integer()),
  },
  open,
);

const CHAT_EXAMPLE = {
  model: "llama3.2",
  messages: [{ role: "user", content: "Why is the sky blue? One sentence." }],
  stream: false,
};

/** The documentation of every route of Ollama's API that foreman serves, by route. */
export const OllamaDocs = {
  probe: routeDoc("Probe", "Answers `Ollama is running`, as Ollama does.", {
    responses: { 200: { description: "Ollama is running", content: { "text/plain": t.String() } } },
  }),
  chat: (description: string) =>
    routeDoc("Chat (queued)", description, {
      body: ChatRequest,
      example: CHAT_EXAMPLE,
      responses: {
        200: { description: "The answer, or its stream", content: { [JSON_TYPE]: ChatAnswer, [NDJSON]: ChatAnswer } },
        ...ollamaErrors(...QUEUED_ERRORS),
      },
    }),
  generate: (description: string) =>
    routeDoc("Generate (queued)", description, {
      body: GenerateRequest,
      example: { model: "llama3.2", prompt: "Why is the sky blue? One sentence.", stream: false },
      responses: {
        200: { description: "The answer, or its stream", content: { [JSON_TYPE]: GenerateAnswer, [NDJSON]: GenerateAnswer } },
        ...ollamaErrors(...QUEUED_ERRORS),
      },
    }),
  embed: routeDoc("Embed", "Sent straight to Ollama, concurrently, never queued.", {
    body: EmbedRequest,
    example: { model: "all-minilm", input: ["The sky is blue.", "Grass is green."] },
    responses: {
      200: {
        description: "One vector per input",
        content: {
          [JSON_TYPE]: t.Object({ model: t.String(), embeddings: t.Array(t.Array(t.Number())), ...ollamaMetrics }, open),
        },
      },
      ...ollamaErrors(400, 404, 502),
    },
  }),
  embeddings: routeDoc("Embeddings (legacy)", "Sent straight to Ollama, never queued.", {
    body: LegacyEmbeddingsRequest,
    example: { model: "all-minilm", prompt: "The sky is blue." },
    responses: {
      200: { description: "The vector", content: { [JSON_TYPE]: t.Object({ embedding: t.Array(t.Number()) }, open) } },
      ...ollamaErrors(400, 404, 502),
    },
  }),
  show: routeDoc("Show a model", "Relayed to Ollama.", {
    body: ModelRequest,
    example: { model: "llama3.2" },
    responses: {
      200: {
        description: "The model's details",
        content: {
          [JSON_TYPE]: t.Object(
            {
              modelfile: t.Optional(t.String()),
              parameters: t.Optional(t.String()),
              template: t.Optional(t.String()),
              details: t.Optional(t.Record(t.String(), t.Unknown())),
              model_info: t.Optional(t.Record(t.String(), t.Unknown())),
              capabilities: t.Optional(t.Array(t.String())),
            },
            open,
          ),
        },
      },
      ...ollamaErrors(400, 404, 502),
    },
  }),
  version: routeDoc("Ollama's version", "Relayed to Ollama.", {
    responses: {
      200: { description: "Its version", content: { [JSON_TYPE]: t.Object({ version: t.String() }) } },
      ...ollamaErrors(502),
    },
  }),
  tags: routeDoc(
    "Models",
    "From the inventory cache (polled every FOREMAN_POLL_INTERVAL; the last known list while Ollama is away).",
    { responses: { 200: { description: "Every model", content: { [JSON_TYPE]: t.Object({ models: t.Array(ModelEntry) }) } } } },
  ),
  ps: routeDoc("Loaded models", "From the inventory cache, refreshed after every job so a model change shows at once.", {
    responses: {
      200: { description: "The models in memory", content: { [JSON_TYPE]: t.Object({ models: t.Array(LoadedModel) }) } },
    },
  }),
  /** Model management: each example is harmless (a model already there, a name nobody can push to, a copy then its removal). */
  management: {
    "/api/pull": { body: PullRequest, example: { model: "llama3.2" }, headers: targetHeader, responses: progressAnswers },
    "/api/push": {
      body: PullRequest,
      example: { model: "your-namespace/llama3.2-copy" },
      headers: targetHeader,
      responses: progressAnswers,
    },
    "/api/create": {
      body: CreateRequest,
      example: { model: "llama3.2-brief", from: "llama3.2", system: "Answer in one sentence." },
      headers: targetHeader,
      responses: progressAnswers,
    },
    "/api/copy": {
      body: CopyRequest,
      example: { source: "llama3.2", destination: "llama3.2-copy" },
      headers: targetHeader,
      responses: emptyOk,
    },
    "/api/delete": { body: ModelRequest, example: { model: "llama3.2-copy" }, headers: targetHeader, responses: emptyOk },
  } satisfies Record<string, RouteDocSpec>,
  blob: routeDoc(
    "Upload a blob",
    "Relayed to Ollama, body streamed as it arrives (the upload path of `ollama create`). With several targets, to the one header X-Foreman-Target names, else the first that answers.",
    {
      body: t.String({ format: "binary" }),
      bodyType: "application/octet-stream",
      responses: {
        201: { description: "Stored" },
        400: { description: "The digest does not match the bytes", content: { [JSON_TYPE]: OllamaError } },
      },
    },
  ),
};

/** The documentation of the OpenAI and Anthropic routes, by route. */
export const OpenAIDocs = {
  chat: (summary: string, description: string) =>
    routeDoc(summary, description, {
      body: ChatCompletionRequest,
      example: { model: "llama3.2", messages: [{ role: "user", content: "Why is the sky blue? One sentence." }] },
      responses: {
        200: { description: "The completion, or its stream", content: { [JSON_TYPE]: ChatCompletion, [SSE]: SseText } },
        ...errorsIn(OpenAIError, ...QUEUED_ERRORS),
      },
    }),
  completion: (summary: string, description: string) =>
    routeDoc(summary, description, {
      body: CompletionRequest,
      example: { model: "llama3.2", prompt: "The sky is blue because", max_tokens: 64 },
      responses: {
        200: { description: "The completion, or its stream", content: { [JSON_TYPE]: TextCompletion, [SSE]: SseText } },
        ...errorsIn(OpenAIError, ...QUEUED_ERRORS),
      },
    }),
  responses: (summary: string, description: string) =>
    routeDoc(summary, description, {
      body: ResponsesRequest,
      example: { model: "llama3.2", input: "Why is the sky blue? One sentence." },
      responses: {
        200: { description: "The response, or its stream", content: { [JSON_TYPE]: ResponseObject, [SSE]: SseText } },
        ...errorsIn(OpenAIError, ...QUEUED_ERRORS),
      },
    }),
  messages: (summary: string, description: string) =>
    routeDoc(summary, description, {
      body: MessagesRequest,
      example: { model: "llama3.2", max_tokens: 64, messages: [{ role: "user", content: "Why is the sky blue? One sentence." }] },
      responses: {
        200: { description: "The message, or its stream", content: { [JSON_TYPE]: AnthropicMessage, [SSE]: SseText } },
        ...errorsIn(AnthropicError, ...QUEUED_ERRORS),
      },
    }),
  embeddings: routeDoc("Embeddings (OpenAI)", "Sent straight to Ollama, concurrently, never queued.", {
    body: OpenAIEmbeddingsRequest,
    example: { model: "all-minilm", input: "The sky is blue." },
    responses: {
      200: {
        description: "One vector per input",
        content: {
          [JSON_TYPE]: t.Object(
            {
              object: t.Literal("list"),
              data: t.Array(t.Object({ object: t.String(), embedding: t.Array(t.Number()), index: Type.Integer() }, open)),
              model: t.String(),
              usage: t.Optional(t.Record(t.String(), t.Unknown())),
            },
            open,
          ),
        },
      },
      ...errorsIn(OpenAIError, 400, 404, 502),
    },
  }),
  models: routeDoc("Models (OpenAI)", "From the inventory cache.", {
    responses: {
      200: {
        description: "Every model",
        content: { [JSON_TYPE]: t.Object({ object: t.Literal("list"), data: t.Array(OpenAIModel) }) },
      },
    },
  }),
  model: routeDoc("A model (OpenAI)", "From the inventory cache; 404 in OpenAI's shape when Ollama does not have it.", {
    responses: { 200: { description: "The model", content: { [JSON_TYPE]: OpenAIModel } }, ...errorsIn(OpenAIError, 404) },
  }),
};
