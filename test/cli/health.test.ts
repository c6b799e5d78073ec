// `foreman health`, the Docker image's HEALTHCHECK: exit 0 when /healthz answers, 1 when nothing does.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { type Stack, freePort, runForeman, startStack } from "../harness";

let stack: Stack;
beforeAll(async () => {
  stack = await startStack({ env: { FOREMAN_TOKEN: "secret" } });
});
afterAll(() => stack.stop());

test("exits 0 against a running server, found by FOREMAN_URL or by FOREMAN_LISTEN (the token is not needed)", async () => {
  const byUrl = await runForeman(["health"], { env: { FOREMAN_URL: stack.foreman.url } });
  expect(byUrl).toEqual({ code: 0, stdout: `healthy: ${stack.foreman.url}/healthz\n`, stderr: "" });
  const port = new URL(stack.foreman.url).port;
  const byListen = await runForeman(["health"], { env: { FOREMAN_URL: "", FOREMAN_LISTEN: `0.0.0.0:${port}` } });
  expect(byListen).toEqual({ code: 0, stdout: `healthy: http://127.0.0.1:${port}/healthz\n`, stderr: "" });
});

test("exits 1 when nothing listens, 2 when misused", async () => {
  const url = `http://127.0.0.1:${await freePort()}`;
  expect(await runForeman(["health"], { env: { FOREMAN_URL: url } })).toEqual({
    code: 1,
    stdout: "",
    stderr: `foreman health: ${url}/healthz: cannot connect\n`,
  });
  expect((await runForeman(["health", "now"])).code).toBe(2);
});
