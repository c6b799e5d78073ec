// The client conformance suite through foreman (the compiled binary the test run built): every official
// client library must get what it gets from Ollama directly (test/compat/fake-direct.test.ts), while
// Ollama never sees two generations at once. foreman requires a token here, and each client is given it
// the way its users give a key (OpenAI's and the AI SDK's apiKey, Anthropic's x-api-key, a Bearer header).
import { afterAll, beforeAll, expect, test } from "bun:test";
import { FakeOllama } from "../fake-ollama";
import { type ForemanProcess, foremanEnv, spawnForeman, tempDir } from "../harness";
import { describeClientConformance } from "./clients";

let fake: FakeOllama;
let foreman: ForemanProcess;
const dir = tempDir();
const TOKEN = "conformance-token";
beforeAll(async () => {
  fake = new FakeOllama().start();
  foreman = await spawnForeman(foremanEnv(fake.url, dir.path, { FOREMAN_LOG_LEVEL: "error", FOREMAN_TOKEN: TOKEN }));
});
afterAll(async () => {
  foreman.process.kill("SIGTERM");
  await foreman.process.exited;
  await fake.stop();
  dir.cleanup();
});

describeClientConformance("through foreman", () => ({ baseUrl: foreman.url, fake, apiKey: TOKEN }));

test("through foreman, Ollama served every generation of the suite one at a time", () => {
  expect(fake.seen.length).toBeGreaterThan(20);
  expect(fake.maxInFlight).toBe(1);
});
