// Which headers carry the client's token: a Bearer Authorization header, or the Anthropic SDKs' x-api-key.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { type InProcessStack, startInProcess } from "../in-process";

const TOKEN = "s3cret-token";
let stack: InProcessStack;
beforeAll(async () => {
  stack = await startInProcess({ env: { FOREMAN_TOKEN: TOKEN } });
});
afterAll(() => stack.stop());

const status = async (headers: Record<string, string>) => (await stack.request("GET", "/queue", undefined, headers)).status;

test("the token is accepted as a Bearer header or as x-api-key", async () => {
  expect(await status({ authorization: `Bearer ${TOKEN}` })).toBe(200);
  expect(await status({ "x-api-key": TOKEN })).toBe(200);
});

test("a wrong, empty or misplaced token is refused with 401", async () => {
  expect(await status({})).toBe(401);
  expect(await status({ "x-api-key": "wrong" })).toBe(401);
  expect(await status({ "x-api-key": "" })).toBe(401);
  expect(await status({ authorization: TOKEN })).toBe(401);
  // An Authorization header decides alone: a wrong one is not rescued by a right x-api-key.
  expect(await status({ authorization: "Bearer wrong", "x-api-key": TOKEN })).toBe(401);
});

test("a 401 on the Anthropic route is in Anthropic's shape", async () => {
  const response = await stack.request("POST", "/v1/messages", {}, { "x-api-key": "wrong" });
  expect(response.status).toBe(401);
  expect(await response.json()).toMatchObject({ type: "error", error: { message: "unauthorized" } });
});
