// The OpenAPI document types each field as it is validated, and its examples are valid and safe to run
// from Swagger UI's "Try it out" as they are.
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
let doc: { paths: Record<string, Record<string, { requestBody?: { content: Record<string, { schema: Schema }> } }>> };

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
