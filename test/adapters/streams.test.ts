// The worker reads a body's stream flag with `streams()`, without checking the body again; it must agree
// with what `describe()` decided when the body was accepted, for every adapter and every way to say it.
import { expect, test } from "bun:test";
import { ADAPTERS, type JobType } from "../../src/adapters";

const user = [{ role: "user", content: "hi" }];
const VALID: Record<JobType, Record<string, unknown>> = {
  chat: { model: "llama3.2", messages: user },
  generate: { model: "llama3.2", prompt: "hi" },
  "openai.chat": { model: "llama3.2", messages: user },
  "openai.completion": { model: "llama3.2", prompt: "hi" },
  "openai.responses": { model: "llama3.2", input: "hi" },
  "openai.embeddings": { model: "all-minilm", input: "hi" },
  "anthropic.messages": { model: "llama3.2", max_tokens: 16, messages: user },
};

test("streams() agrees with describe() for every adapter, with stream true, false, null and absent", () => {
  const seen: string[] = [];
  for (const [type, adapter] of Object.entries(ADAPTERS) as [JobType, (typeof ADAPTERS)[JobType]][]) {
    for (const stream of [true, false, null, undefined]) {
      if (type === "openai.embeddings" && stream !== undefined) continue; // its schema has no stream field
      if ((type === "chat" || type === "generate") && stream === null) continue; // refused, as Ollama refuses it
      const body = stream === undefined ? { ...VALID[type] } : { ...VALID[type], stream };
      expect(`${type} ${stream}: ${adapter.streams(body)}`).toBe(`${type} ${stream}: ${adapter.describe(body).stream}`);
      seen.push(`${type} ${stream}`);
    }
  }
  expect(seen).toHaveLength(23);
});
