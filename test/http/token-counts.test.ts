// Token counts for a stream that carries no usage: an OpenAI chat or completions stream not asked for
// stream_options.include_usage. foreman counts its output records (Ollama sends one per token) and says the
// figure is an estimate; the client's bytes stay exactly Ollama's. foreman answers in this process
// (test/in-process.ts); the fake Ollama is a real server speaking Ollama's OpenAI wire format.
import { afterEach, describe, expect, test } from "bun:test";
import { type InProcessStack, startInProcess } from "../in-process";

let stack: InProcessStack | undefined;
afterEach(async () => {
  await stack?.stop();
  stack = undefined;
});

/** A stream's bytes without what differs between two runs of one request: the random id and the clock. */
const steady = (text: string) => text.replace(/"id":"[^"]*"/g, '"id":""').replace(/"created":\d+/g, '"created":0');

const surfaces = [
  ["/v1/chat/completions", { model: "llama3.2", messages: [{ role: "user", content: "count these seven words for me" }] }],
  ["/v1/completions", { model: "llama3.2", prompt: "count these seven words for me" }],
] as const;

async function direct(path: string, body: object) {
  const response = await fetch(`${stack!.fake.url}${path}`, { method: "POST", body: JSON.stringify(body) });
  return response.text();
}

async function viaForeman(path: string, body: object) {
  const response = await stack!.fetch(path, { method: "POST", body: JSON.stringify(body) });
  expect(response.status).toBe(200);
  const text = await response.text();
  const id = response.headers.get("x-foreman-job-id")!;
  // The job's end is written just after the relay: wait for it.
  let view: Record<string, unknown> = {};
  for (let i = 0; i < 200 && view.state !== "done"; i++) {
    view = (await (await stack!.fetch(`/jobs/${id}`)).json()) as Record<string, unknown>;
    if (view.state !== "done") await Bun.sleep(10);
  }
  expect(view.state).toBe("done");
  return { text, view };
}

/** The usage Ollama reports when asked: the last frame that carries one. */
function reportedUsage(stream: string): { prompt_tokens: number; completion_tokens: number } {
  const frames = stream
    .split("\n\n")
    .filter((record) => record.startsWith("data: {"))
    .map((record) => JSON.parse(record.slice(6)) as { usage?: { prompt_tokens: number; completion_tokens: number } });
  return frames.findLast((frame) => frame.usage)!.usage!;
}

describe("a stream without usage is counted, and says so", () => {
  for (const [path, base] of surfaces) {
    test(`${path}: without include_usage, output tokens are counted and marked estimated; bytes unchanged`, async () => {
      stack = await startInProcess();
      const body = { ...base, stream: true };
      const asked = { ...body, stream_options: { include_usage: true } };
      const truth = reportedUsage(await direct(path, asked));
      expect(truth.completion_tokens).toBeGreaterThan(1);

      const { text, view } = await viaForeman(path, body);
      expect(steady(text)).toBe(steady(await direct(path, body)));
      expect(text).not.toContain('"usage"');
      expect(view.output_tokens).toBe(truth.completion_tokens);
      expect(view.prompt_tokens).toBeNull();
      expect(view.tokens_estimated).toBe(true);
      expect(view.tokens_per_s).toBeGreaterThan(0);
    });

    test(`${path}: with include_usage, Ollama's own figures, not estimated; bytes unchanged`, async () => {
      stack = await startInProcess();
      const asked = { ...base, stream: true, stream_options: { include_usage: true } };
      const { text, view } = await viaForeman(path, asked);
      const direct_ = await direct(path, asked);
      expect(steady(text)).toBe(steady(direct_));
      const truth = reportedUsage(direct_);
      expect(view.output_tokens).toBe(truth.completion_tokens);
      expect(view.prompt_tokens).toBe(truth.prompt_tokens);
      expect(view.tokens_estimated).toBe(false);
    });
  }

  test("a non-streamed answer carries usage: exact, not estimated", async () => {
    stack = await startInProcess();
    const [path, base] = surfaces[0];
    const { text, view } = await viaForeman(path, base);
    const usage = (JSON.parse(text) as { usage: { prompt_tokens: number; completion_tokens: number } }).usage;
    expect(view.output_tokens).toBe(usage.completion_tokens);
    expect(view.prompt_tokens).toBe(usage.prompt_tokens);
    expect(view.tokens_estimated).toBe(false);
  });
});
