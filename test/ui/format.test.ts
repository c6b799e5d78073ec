import { expect, test } from "bun:test";
import { modelColour } from "../../src/ui/format";

test("models shown together get colours of their own, and keep them", () => {
  // These three shared one colour under a plain hash of the key (bun run try's models).
  const keys = ["llama3.2:1b", "qwen3:0.6b", "gemma3:1b", "llama3.2:latest", "mistral:7b", "phi4:14b"];
  const first = keys.map(modelColour);
  expect(new Set(first).size).toBe(keys.length);
  expect(keys.map(modelColour)).toEqual(first);
});
