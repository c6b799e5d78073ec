// The OpenAPI document types each field as it is validated, and its examples are valid and safe to run
// from Swagger UI's "Try it out" as they are.
import { type TSchema, Type } from "@sinclair/typebox";
import { Value } from "@sinclair/typebox/value";
import { afterAll, beforeAll, expect, test } from "bun:test";
import { type InProcessStack, startInProcess } from "../in-process";

type Schema = {
  type?: string;
  anyOf?: Schema[];
  properties?: Record<string, Schema>;
  examples?: unknown[];
  [k: string]: unknown;
};

let stack: InProcessStack;
let doc: {
  paths: Record<string, Record<string, { requestBody?: { content: Record<string, { schema: Schema; example?: unknown }> } }>>;
};

beforeAll(async () => {
  stack = await startInProcess();
  doc = (await (await stack.fetch(`/swagger/json`)).json()) as typeof doc;
});
afterAll(() => stack.stop());

const submitSchema = () => doc.paths["/jobs"]!.post!.requestBody!.content["application/json"]!.schema;

test("POST /jobs: priority is an integer from -1000 to 1000, not string-or-integer", async () => {
  const priority = submitSchema().properties!.priority!;
  expect(priority).toMatchObject({ type: "integer", minimum: -1000, maximum: 1000 });
  expect(priority.anyOf).toBeUndefined();
  // The validator agrees with the document: a numeric string is refused.
  const body = { type: "chat", request: { model: "llama3.2", messages: [] }, priority: "5" };
  const response = await stack.fetch(`/jobs`, { method: "POST", body: JSON.stringify(body) });
  expect(response.status).toBe(400);
  expect(((await response.json()) as { error: string }).error).toContain("must be an integer from -1000 to 1000");
});

test("the example body is accepted as it is, calls no webhook, and a second try makes a second job", async () => {
  const examples = submitSchema().examples!;
  expect(examples.length).toBeGreaterThan(0);
  expect(JSON.stringify(doc)).not.toMatch(/https?:\/\/(?!example\.invalid\b)[^"\s]*hook/);
  for (const example of examples) {
    expect(example).not.toHaveProperty("webhook");
    expect(example).not.toHaveProperty("idempotency_key");
    const first = await stack.fetch(`/jobs`, { method: "POST", body: JSON.stringify(example) });
    const second = await stack.fetch(`/jobs`, { method: "POST", body: JSON.stringify(example) });
    expect([first.status, second.status]).toEqual([202, 202]);
    expect(((await first.json()) as { id: string }).id).not.toBe(((await second.json()) as { id: string }).id);
  }
});

/** A JSON Schema from the served document as a TypeBox schema, so Value.Check can judge examples against it. */
function toTypeBox(schema: Record<string, unknown>): TSchema {
  const known = new Set([
    "type",
    "properties",
    "required",
    "additionalProperties",
    "patternProperties",
    "items",
    "anyOf",
    "const",
    "enum",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "pattern",
    "format",
    "description",
    "examples",
    "example",
    "default",
    "title",
  ]);
  const unknown = Object.keys(schema).filter((key) => !known.has(key));
  // A keyword this converter would ignore would let a wrong example pass: refuse it instead.
  if (unknown.length) throw new Error(`unsupported schema keywords ${unknown.join(", ")} in ${JSON.stringify(schema)}`);
  const limits = Object.fromEntries(
    ["minimum", "maximum", "minLength", "maxLength", "minItems", "maxItems", "pattern"]
      .filter((k) => k in schema)
      .map((k) => [k, schema[k]]),
  );
  if (schema.anyOf) return Type.Union((schema.anyOf as Record<string, unknown>[]).map(toTypeBox));
  if ("const" in schema) return Type.Literal(schema.const as string);
  if (schema.enum) return Type.Union((schema.enum as string[]).map((value) => Type.Literal(value)));
  switch (schema.type) {
    case "object": {
      if (schema.patternProperties) {
        const [value] = Object.values(schema.patternProperties as Record<string, Record<string, unknown>>);
        return Type.Record(Type.String(), toTypeBox(value!));
      }
      const required = new Set((schema.required as string[] | undefined) ?? []);
      const properties = Object.fromEntries(
        Object.entries((schema.properties as Record<string, Record<string, unknown>> | undefined) ?? {}).map(([key, value]) => [
          key,
          required.has(key) ? toTypeBox(value) : Type.Optional(toTypeBox(value)),
        ]),
      );
      const extra = schema.additionalProperties;
      return Type.Object(properties, {
        additionalProperties:
          extra === undefined ? true : typeof extra === "boolean" ? extra : toTypeBox(extra as Record<string, unknown>),
      });
    }
    case "array":
      return Type.Array(toTypeBox((schema.items as Record<string, unknown> | undefined) ?? {}), limits);
    case "string":
      return Type.String(limits);
    case "integer":
      return Type.Integer(limits);
    case "number":
      return Type.Number(limits);
    case "boolean":
      return Type.Boolean();
    case "null":
      return Type.Null();
    case undefined:
      return Type.Unknown();
  }
  throw new Error(`unsupported type ${JSON.stringify(schema.type)}`);
}

type Media = { schema?: Record<string, unknown>; example?: unknown };
type Operation = {
  requestBody?: { content?: Record<string, Media> };
  responses?: Record<string, { description?: string; content?: Record<string, Media> }>;
};

const operations = () =>
  Object.entries(doc.paths as unknown as Record<string, Record<string, Operation>>).flatMap(([path, ops]) =>
    Object.entries(ops).map(([method, op]) => ({ route: `${method.toUpperCase()} ${path}`, method, op })),
  );

/**
 * POSTs that take no body, so the document rightly shows none (one written in would be invented, and
 * Swagger UI would send it). OpenAI's batch cancel is a bare POST: its SDK sends no body and the route reads none;
 * so are revoking and rotating a key.
 */
const BODILESS_POSTS = new Set([
  "POST /v1/batches/{id}/cancel",
  "POST /admin/keys/{name}/revoke",
  "POST /admin/keys/{name}/rotate",
]);

test("every operation documents its answers, and every POST its request body, each with a schema", () => {
  const problems: string[] = [];
  for (const { route, method, op } of operations()) {
    const responses = Object.entries(op.responses ?? {});
    if (!responses.some(([status]) => status.startsWith("2"))) problems.push(`${route}: no success response`);
    if (!responses.some(([, response]) => response.content)) problems.push(`${route}: no response with a body schema`);
    for (const [status, response] of responses) {
      for (const [type, media] of Object.entries(response.content ?? {})) {
        if (!media.schema) problems.push(`${route} ${status} ${type}: no schema`);
      }
    }
    if (method === "post") {
      const content = Object.entries(op.requestBody?.content ?? {});
      if (BODILESS_POSTS.has(route)) {
        if (op.requestBody) problems.push(`${route}: documents a body it does not read`);
      } else if (content.length === 0) problems.push(`${route}: no request body`);
      for (const [type, media] of content) {
        if (!media.schema) problems.push(`${route} request ${type}: no schema`);
        // Swagger UI's "Try it out" fills the editor from the example; a JSON body without one starts empty.
        if (type === "application/json" && media.example === undefined && !(media.schema?.examples as unknown[])?.length) {
          problems.push(`${route}: no request example`);
        }
      }
    }
  }
  expect(problems).toEqual([]);
  // The exemptions name real routes, so the list cannot outlive them.
  expect(operations().map((o) => o.route)).toEqual(expect.arrayContaining([...BODILESS_POSTS]));
  // Ollama's generation routes included: they read their own body, and were documented without one.
  const chat = operations().find((o) => o.route === "POST /api/chat")!.op;
  expect(chat.requestBody!.content!["application/json"]!.schema!.properties).toHaveProperty("messages");
});

test("every example in the document is valid against its schema", () => {
  let checked = 0;
  const problems: string[] = [];
  const visit = (schema: Record<string, unknown>, where: string) => {
    for (const example of (schema.examples as unknown[] | undefined) ?? []) {
      checked++;
      if (!Value.Check(toTypeBox(schema), example)) problems.push(`${where}: ${JSON.stringify(example)}`);
    }
    for (const [key, value] of Object.entries(schema)) {
      if (key === "examples" || !value || typeof value !== "object") continue;
      const children = Array.isArray(value)
        ? value
        : key === "properties" || key === "patternProperties"
          ? Object.values(value)
          : [value];
      for (const child of children)
        if (child && typeof child === "object" && !Array.isArray(child))
          visit(child as Record<string, unknown>, `${where}.${key}`);
    }
  };
  for (const { route, op } of operations()) {
    for (const [type, media] of Object.entries(op.requestBody?.content ?? {})) {
      if (!media.schema) continue;
      visit(media.schema, `${route} request`);
      if (media.example !== undefined) {
        checked++;
        if (!Value.Check(toTypeBox(media.schema), media.example))
          problems.push(`${route} ${type} example: ${JSON.stringify(media.example)}`);
      }
    }
    for (const [status, response] of Object.entries(op.responses ?? {})) {
      for (const media of Object.values(response.content ?? {})) if (media.schema) visit(media.schema, `${route} ${status}`);
    }
  }
  expect(problems).toEqual([]);
  expect(checked).toBeGreaterThan(20);
});

test("the converter that judges the examples is strict: a wrong example fails", () => {
  const schema = doc.paths["/api/chat"]!.post!.requestBody!.content["application/json"]!.schema;
  expect(Value.Check(toTypeBox(schema), { model: "llama3.2", messages: [{ role: "user", content: "hi" }] })).toBe(true);
  expect(Value.Check(toTypeBox(schema), { model: 3, messages: [] })).toBe(false);
  expect(Value.Check(toTypeBox(schema), { model: "llama3.2", messages: [{ content: "no role" }] })).toBe(false);
});

test("the generation examples run as they are: each is queued and answered", async () => {
  for (const route of [
    "/api/chat",
    "/api/generate",
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/responses",
    "/v1/messages",
  ]) {
    const example = (doc.paths[route]!.post!.requestBody!.content["application/json"] as Media).example;
    const response = await stack.fetch(route, { method: "POST", body: JSON.stringify(example) });
    expect({ route, status: response.status }).toEqual({ route, status: 200 });
    await response.body?.cancel();
  }
});

test("the Files and Batch answers are what the document says, and the create example is a harmless 404", async () => {
  const path = (route: string) => doc.paths[route] as unknown as Record<string, Operation>;
  /** The answer's body, checked against the schema documented for its route and status. */
  const answer = async (route: string, method: string, response: Response) => {
    const media = path(route)[method]!.responses?.[String(response.status)]?.content?.["application/json"];
    const body = (await response.json()) as Record<string, unknown>;
    expect({ route, method, status: response.status, documented: media !== undefined }).toMatchObject({ documented: true });
    if (!Value.Check(toTypeBox(media!.schema!), body))
      throw new Error(`${method} ${route} ${response.status}: ${JSON.stringify(body)}`);
    return body;
  };

  const createMedia = path("/v1/batches").post!.requestBody!.content!["application/json"]!;
  const tried = await stack.fetch("/v1/batches", { method: "POST", body: JSON.stringify(createMedia.example) });
  expect(tried.status).toBe(404);
  await answer("/v1/batches", "post", tried);

  const form = new FormData();
  form.append("purpose", "batch");
  const line = { custom_id: "a", method: "POST", url: "/v1/chat/completions", body: { model: "llama3.2", messages: [] } };
  form.append("file", new Blob([JSON.stringify(line) + "\n"]), "input.jsonl");
  const file = await answer("/v1/files", "post", await stack.fetch("/v1/files", { method: "POST", body: form }));
  await answer("/v1/files", "post", await stack.fetch("/v1/files", { method: "POST", body: "not a form" }));
  await answer("/v1/files", "get", await stack.fetch("/v1/files?purpose=batch&limit=1"));
  await answer("/v1/files", "get", await stack.fetch("/v1/files?order=sideways"));
  await answer("/v1/files/{id}", "get", await stack.fetch(`/v1/files/${file.id}`));
  await answer("/v1/files/{id}", "get", await stack.fetch("/v1/files/file-abc123"));
  await answer("/v1/files/{id}/content", "get", await stack.fetch("/v1/files/file-abc123/content"));
  const content = await stack.fetch(`/v1/files/${file.id}/content`);
  expect(Object.keys(path("/v1/files/{id}/content").get!.responses!["200"]!.content!)).toEqual([
    content.headers.get("content-type")!,
  ]);
  expect(await content.text()).toBe(JSON.stringify(line) + "\n");

  const create = { ...(createMedia.example as object), input_file_id: file.id, metadata: { run: "docs" } };
  const batch = await answer(
    "/v1/batches",
    "post",
    await stack.fetch("/v1/batches", { method: "POST", body: JSON.stringify(create) }),
  );
  await answer("/v1/batches", "post", await stack.fetch("/v1/batches", { method: "POST", body: "{}" }));
  await answer("/v1/batches", "get", await stack.fetch("/v1/batches?limit=1"));
  await answer("/v1/batches", "get", await stack.fetch("/v1/batches?limit=0"));
  await answer("/v1/batches/{id}", "get", await stack.fetch(`/v1/batches/${batch.id}`));
  await answer("/v1/batches/{id}", "get", await stack.fetch("/v1/batches/batch_abc123"));
  await answer("/v1/batches/{id}/cancel", "post", await stack.fetch(`/v1/batches/${batch.id}/cancel`, { method: "POST" }));
  await answer("/v1/batches/{id}/cancel", "post", await stack.fetch("/v1/batches/batch_abc123/cancel", { method: "POST" }));
  await answer("/v1/files/{id}", "delete", await stack.fetch(`/v1/files/${file.id}`, { method: "DELETE" }));
  await answer("/v1/files/{id}", "delete", await stack.fetch(`/v1/files/${file.id}`, { method: "DELETE" }));
});

/** Every schema in the document with where it is, query parameters aside (see the integer test). */
function* schemasOf(node: unknown, where: string): Generator<{ where: string; schema: Schema }> {
  if (!node || typeof node !== "object") return;
  if (Array.isArray(node)) {
    for (const [i, child] of node.entries()) yield* schemasOf(child, `${where}[${i}]`);
    return;
  }
  const record = node as Record<string, unknown>;
  if ("type" in record || "anyOf" in record) yield { where, schema: record as Schema };
  for (const [key, child] of Object.entries(record)) yield* schemasOf(child, `${where}.${key}`);
}

test("integers are integers: no field is documented as a numeric string or an integer", () => {
  // Elysia's t.Integer is Union([String({ format: "integer" }), Integer]) with a decode, made to coerce query
  // strings; used in bodies and answers it documented `"attempts": "0"`. Only a query parameter may be coerced.
  const body = { ...doc, paths: structuredClone(doc.paths) } as {
    paths: Record<string, Record<string, { parameters?: unknown }>>;
  };
  for (const ops of Object.values(body.paths)) for (const op of Object.values(ops)) delete op.parameters;
  const numericStrings = [...schemasOf(body.paths, "paths")]
    .filter(({ schema }) => schema.type === "string" && (schema.format === "integer" || schema.format === "numeric"))
    .map(({ where }) => where);
  expect(numericStrings).toEqual([]);
  const job = doc.paths["/jobs/{id}"]!.get as unknown as Operation;
  const view = job.responses!["200"]!.content!["application/json"]!.schema as Schema;
  for (const field of ["attempts", "priority", "max_attempts", "wait_ms"])
    expect(view.properties![field]).toMatchObject({ type: "integer" });
  expect(view.properties!.queue_position).toMatchObject({ type: ["integer", "null"], minimum: 1 });
});

/**
 * Swagger UI renders descriptions as Markdown: outside `code`, a `*` or a word-edge `_` starts emphasis and a
 * `<` starts an HTML tag (which it then strips). The words that need them go in backticks.
 */
test("descriptions are Markdown-safe: no stray emphasis or tag outside backticks", () => {
  const problems: string[] = [];
  const visit = (node: unknown, where: string) => {
    if (!node || typeof node !== "object") return;
    for (const [key, value] of Object.entries(node)) {
      if ((key === "description" || key === "summary") && typeof value === "string") {
        const prose = value.replace(/`[^`]*`/g, "");
        if (/[*<\\]|(^|[^\w])_|_($|[^\w])/.test(prose)) problems.push(`${where}.${key}: ${value}`);
      } else visit(value, `${where}.${key}`);
    }
  };
  visit(doc, "");
  expect(problems).toEqual([]);
  expect((doc as unknown as { info: { description: string } }).info.description).toContain("(`/api/*`)");
});

test("a key's view documents today's GPU time beside its tokens", () => {
  const paths = doc.paths as unknown as Record<
    string,
    Record<string, { responses: Record<string, { content: Record<string, { schema: Schema }> }> }>
  >;
  const today = paths["/admin/keys/{name}"]!.get!.responses["200"]!.content["application/json"]!.schema.properties!.today!;
  expect(Object.keys(today.properties!)).toEqual(["prompt_tokens", "output_tokens", "jobs", "active_jobs", "gpu_seconds"]);
  const gpu = today.properties!.gpu_seconds!;
  expect([gpu.type, String(gpu.description).includes("GPU")]).toEqual(["number", true]);
});
