// The transport decides the token and the route before it reads a byte of the body: a body that never
// ends still gets its 401 or 404 at once, and the route table agrees with the router on every route.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { RouteTable } from "../../src/http/route-table";
import { type InProcessStack, startInProcess } from "../in-process";

/** A chunked body that sends one piece and then never ends (no Content-Length). */
const endless = () =>
  new ReadableStream<Uint8Array>({
    start: (controller) => controller.enqueue(new TextEncoder().encode('{"model":')),
  });
const post = (stack: InProcessStack, path: string, headers: Record<string, string> = {}) =>
  stack.handle(new Request(`${stack.url}${path}`, { method: "POST", body: endless(), headers }));

describe("with FOREMAN_TOKEN", () => {
  let stack: InProcessStack;
  beforeAll(async () => (stack = await startInProcess({ env: { FOREMAN_TOKEN: "secret" } })));
  afterAll(() => stack.stop());

  test("no token: 401 before the body, the connection closed after it; the route's own API shape", async () => {
    const answer = await post(stack, "/v1/chat/completions");
    expect(answer.status).toBe(401);
    expect(answer.headers.get("connection")).toBe("close");
    expect(((await answer.json()) as { error: { message: string } }).error.message).toBe("unauthorized");
    expect((await post(stack, "/nope")).status).toBe(401); // deny by default, body or not
  });

  test("with the token, an unknown route is 404 before the body", async () => {
    const answer = await post(stack, "/api/nope", { authorization: "Bearer secret" });
    expect(answer.status).toBe(404);
    expect(answer.headers.get("connection")).toBe("close");
  });
});

describe("without a token", () => {
  let stack: InProcessStack;
  beforeAll(async () => (stack = await startInProcess()));
  afterAll(() => stack.stop());

  test("a body to no route is 404 unread; a bodiless request to one is the router's own 404", async () => {
    expect((await post(stack, "/v1/nope")).status).toBe(404);
    expect((await stack.request("GET", "/v1/nope")).status).toBe(404);
  });
});

describe("the route table", () => {
  test("finds each pattern as Elysia writes it, HEAD on GET routes and a trailing slash; nothing else", () => {
    const table = new RouteTable([
      { method: "POST", path: "/api/chat" },
      { method: "GET", path: "/jobs/:id/artifacts/:name" },
      { method: "GET", path: "/v1/models/*" },
      { method: "GET", path: "/" },
    ]);
    expect(table.has("POST", "/api/chat")).toBe(true);
    expect(table.has("POST", "/api/chat/")).toBe(true);
    expect(table.has("GET", "/api/chat")).toBe(false);
    expect(table.has("POST", "/api/chatx")).toBe(false);
    expect(table.has("GET", "/jobs/j1/artifacts/result.json")).toBe(true);
    expect(table.has("HEAD", "/jobs/j1/artifacts/result.json")).toBe(true);
    expect(table.has("GET", "/jobs/j1/artifacts")).toBe(false);
    expect(table.has("GET", "/v1/models/library/llama3.2:latest")).toBe(true);
    expect(table.has("GET", "/")).toBe(true);
    expect(table.has("POST", "/")).toBe(false);
  });
});
