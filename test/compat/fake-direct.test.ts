// The client conformance suite against the fake Ollama itself: the reference the same suite must match
// when it runs against foreman.
import { afterAll, beforeAll } from "bun:test";
import { FakeOllama } from "../fake-ollama";
import { describeClientConformance } from "./clients";

let fake: FakeOllama;
beforeAll(() => {
  fake = new FakeOllama().start();
});
afterAll(async () => {
  await fake.stop();
});

describeClientConformance("the fake directly", () => ({ baseUrl: fake.url, fake }));
