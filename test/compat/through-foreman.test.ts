// The client conformance suite through foreman (the compiled binary the test run built): every official
// client library must get what it gets from Ollama directly (test/compat/fake-direct.test.ts), while
// Ollama never sees two generations at once.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { FakeOllama } from "../fake-ollama";
import { type ForemanProcess, foremanEnv, spawnForeman, tempDir } from "../harness";
import { describeClientConformance } from "./clients";

let fake: FakeOllama;
let foreman: ForemanProcess;
const dir = tempDir();
beforeAll(async () => {
  fake = new FakeOllama().start();
  foreman = await spawnForeman(foremanEnv(fake.url, dir.path, { FOREMAN_LOG_LEVEL: "error" }));
});
afterAll(async () => {
  foreman.process.kill("SIGTERM");
  await foreman.process.exited;
  await fake.stop();
  dir.cleanup();
});

describeClientConformance("through foreman", () => ({ baseUrl: foreman.url, fake }));

test("through foreman, Ollama served every generation of the suite one at a time", () => {
  expect(fake.seen.length).toBeGreaterThan(20);
  expect(fake.maxInFlight).toBe(1);
});
