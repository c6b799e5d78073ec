import { describe, expect, test } from "bun:test";
import { classifyLine } from "../../src/batch/validate";

const line = (fields: Record<string, unknown>) =>
  JSON.stringify({
    custom_id: "a",
    method: "POST",
    url: "/v1/chat/completions",
    body: { model: "llama3.2", messages: [] },
    ...fields,
  });

describe("classifyLine", () => {
  test("a well-formed chat line becomes a non-streaming request, its model key normalized", () => {
    const result = classifyLine(
      line({ body: { model: "qwen3", messages: [{ role: "user", content: "hi" }], stream: true } }),
      1,
      "/v1/chat/completions",
    );
    expect(result).toMatchObject({
      kind: "request",
      customId: "a",
      type: "openai.chat",
      model: "qwen3",
      modelKey: "qwen3:latest",
    });
    expect(JSON.parse((result as { request: string }).request).stream).toBe(false);
  });

  test("blank lines are skipped", () => {
    expect(classifyLine("   ", 3, "/v1/chat/completions")).toEqual({ kind: "blank" });
  });

  test.each([
    ["{oops", "invalid_json_line", null],
    ["[1,2]", "invalid_json_line", null],
    [line({ custom_id: undefined }), "missing_required_parameter", "custom_id"],
    [line({ custom_id: 7 }), "missing_required_parameter", "custom_id"],
    [line({ method: "GET" }), "invalid_value", "method"],
    [line({ url: "/v1/embeddings" }), "invalid_url", "url"],
    [line({ body: "text" }), "missing_required_parameter", "body"],
  ])("%s is malformed: %s", (text, code, param) => {
    expect(classifyLine(text, 9, "/v1/chat/completions")).toMatchObject({ kind: "malformed", error: { code, param, line: 9 } });
  });

  test("a body its route would refuse fails that line alone, with the route's 400", () => {
    const result = classifyLine(line({ body: { model: "llama3.2", messages: "hi" } }), 1, "/v1/chat/completions");
    expect(result).toMatchObject({ kind: "refused", customId: "a", status: 400 });
  });

  test("embedding lines keep their body as given (no stream field) and name their model", () => {
    const text = JSON.stringify({
      custom_id: "e",
      method: "POST",
      url: "/v1/embeddings",
      body: { model: "all-minilm", input: ["x"] },
    });
    const result = classifyLine(text, 1, "/v1/embeddings");
    expect(result).toMatchObject({ kind: "request", type: "openai.embeddings", model: "all-minilm" });
    expect(JSON.parse((result as { request: string }).request)).toEqual({ model: "all-minilm", input: ["x"] });
  });

  test("an embedding line without input is refused", () => {
    const text = JSON.stringify({ custom_id: "e", method: "POST", url: "/v1/embeddings", body: { model: "all-minilm" } });
    expect(classifyLine(text, 1, "/v1/embeddings")).toMatchObject({ kind: "refused", status: 400 });
  });
});
