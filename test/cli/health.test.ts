// `foreman health`, the Docker image's HEALTHCHECK: exit 0 when /healthz answers, 1 when nothing does.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { type Stack, freePort, runForeman, startStack, until } from "../harness";

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

test("says degraded, and still exits 0, while foreman cannot reach Ollama", async () => {
  const unreachable = `http://127.0.0.1:${await freePort()}`;
  const cut = await startStack({ env: { FOREMAN_OLLAMA_URL: unreachable } });
  try {
    await until(async () => ((await (await fetch(`${cut.foreman.url}/healthz`)).json()) as { degraded: boolean }).degraded);
    expect(await runForeman(["health"], { env: { FOREMAN_URL: cut.foreman.url } })).toEqual({
      code: 0,
      stdout: `degraded: ${cut.foreman.url}/healthz: foreman runs but cannot reach Ollama; jobs wait in the queue\n`,
      stderr: "",
    });
  } finally {
    await cut.stop();
  }
});
