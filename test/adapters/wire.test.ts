import { describe, expect, test } from "bun:test";
import { type Framing, lastRecord, recordChunks, splitRecords } from "../../src/adapters/framing";
import { assembleFinalResponse } from "../../src/adapters/ollama-assemble";
import { modelKey, normalizeModel } from "../../src/ollama/model-key";

function streamOf(...chunks: (string | Uint8Array)[]): ReadableStream<Uint8Array> {
  return new ReadableStream({
    start(controller) {
      for (const chunk of chunks) controller.enqueue(typeof chunk === "string" ? new TextEncoder().encode(chunk) : chunk);
      controller.close();
    },
  });
}

/** The records of a stream, decoded, as the worker splits them. */
async function lines(stream: ReadableStream<Uint8Array>, framing: Framing = "ndjson") {
  const out: string[] = [];
  const decoder = new TextDecoder();
  for await (const chunk of recordChunks(stream, framing))
    out.push(...splitRecords(decoder.decode(chunk, { stream: true }), framing));
  return out;
}

describe("Server-Sent Event records", () => {
  test("a chunk never cuts an event: events spanning reads come whole, several in one read come together", async () => {
    const chunks: string[] = [];
    const decoder = new TextDecoder();
    const stream = streamOf('event: a\ndata: {"x"', ":1}\n\nevent: b\ndata: 2\n\ndata: [DO", "NE]\n\n");
    for await (const chunk of recordChunks(stream, "sse")) chunks.push(decoder.decode(chunk));
    expect(chunks).toEqual(['event: a\ndata: {"x":1}\n\nevent: b\ndata: 2\n\n', "data: [DONE]\n\n"]);
    expect(splitRecords(chunks[0]!, "sse")).toEqual(['event: a\ndata: {"x":1}', "event: b\ndata: 2"]);
    expect(lastRecord(new TextEncoder().encode(chunks[0]!), "sse")).toBe("event: b\ndata: 2");
  });

  test("a whole body comes as one record once complete", async () => {
    expect(await lines(streamOf('{"a":', "1}\n"), "whole")).toEqual(['{"a":1}\n']);
  });
});

describe("NDJSON records", () => {
  test("a line may span chunks and a chunk may hold many lines", async () => {
    expect(await lines(streamOf('{"a":', '1}\n{"b":2}\n{"c"', ":3}\n"))).toEqual(['{"a":1}', '{"b":2}', '{"c":3}']);
  });

  test("a last line without a newline is kept; blank lines are skipped", async () => {
    expect(await lines(streamOf('{"a":1}\n\n\n{"b":2}'))).toEqual(['{"a":1}', '{"b":2}']);
  });

  test("a multibyte character split across chunks survives", async () => {
    const bytes = new TextEncoder().encode('{"t":"héllo 🦙"}\n');
    const cut = bytes.indexOf(0xf0) + 2;
    expect(await lines(streamOf(bytes.slice(0, cut), bytes.slice(cut)))).toEqual(['{"t":"héllo 🦙"}']);
  });
});

describe("assembleFinalResponse", () => {
  test("chat: content and thinking concatenated, tool calls appended, the rest from the last chunk", () => {
    const final = assembleFinalResponse([
      '{"model":"m","created_at":"t1","message":{"role":"assistant","content":"","thinking":"hm"},"done":false}',
      '{"model":"m","created_at":"t2","message":{"role":"assistant","content":"Hel"},"done":false}',
      '{"model":"m","created_at":"t3","message":{"role":"assistant","content":"","tool_calls":[{"function":{"name":"f","arguments":{}}}]},"done":false}',
      '{"model":"m","created_at":"t4","message":{"role":"assistant","content":"lo"},"done":false}',
      '{"model":"m","created_at":"t5","message":{"role":"assistant","content":""},"done":true,"done_reason":"stop","eval_count":2}',
    ]);
    expect(JSON.stringify(final)).toBe(
      '{"model":"m","created_at":"t5","message":{"role":"assistant","content":"Hello","thinking":"hm","tool_calls":[{"function":{"name":"f","arguments":{}}}]},"done":true,"done_reason":"stop","eval_count":2}',
    );
  });

  test("generate: response concatenated, context and metrics from the last chunk", () => {
    const final = assembleFinalResponse([
      '{"model":"m","created_at":"t1","response":"The","done":false}',
      '{"model":"m","created_at":"t2","response":" sky","done":false}',
      '{"model":"m","created_at":"t3","response":"","done":true,"done_reason":"stop","context":[1,2],"total_duration":5}',
    ]);
    expect(JSON.stringify(final)).toBe(
      '{"model":"m","created_at":"t3","response":"The sky","done":true,"done_reason":"stop","context":[1,2],"total_duration":5}',
    );
  });

  test("a single object (a load reply) is returned as it is", () => {
    const load = '{"model":"m","created_at":"t","message":{"role":"assistant","content":""},"done":true,"done_reason":"load"}';
    expect(JSON.stringify(assembleFinalResponse([load]))).toBe(load);
  });
});

describe("model keys", () => {
  test("no tag means :latest; registry paths keep their tag", () => {
    expect(normalizeModel("llama3.2")).toBe("llama3.2:latest");
    expect(normalizeModel("llama3.2:1b")).toBe("llama3.2:1b");
    expect(normalizeModel("hf.co/org/model")).toBe("hf.co/org/model:latest");
    expect(normalizeModel("localhost:5000/m")).toBe("localhost:5000/m:latest");
  });

  test("load-time options are part of the key; sampling options are not", () => {
    expect(modelKey("m", { temperature: 0.1, seed: 3 })).toBe("m:latest");
    expect(modelKey("m", { num_ctx: 8192 })).toBe("m:latest num_ctx=8192");
    expect(modelKey("m:latest", { num_ctx: 8192, num_gpu: 1 })).not.toBe(modelKey("m", { num_ctx: 4096, num_gpu: 1 }));
  });
});
