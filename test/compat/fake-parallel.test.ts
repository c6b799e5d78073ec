// The fake as several GPUs: instances on their own ports with their own models and load times, and the
// parallel mode (OLLAMA_NUM_PARALLEL) whose serving log records any overlap foreman must never cause.
import { afterEach, describe, expect, test } from "bun:test";
import { FakeOllama } from "../fake-ollama";

const fakes: FakeOllama[] = [];
afterEach(async () => {
  await Promise.all(fakes.splice(0).map((fake) => fake.stop()));
});

function start(options: ConstructorParameters<typeof FakeOllama>[0]): FakeOllama {
  const fake = new FakeOllama(options).start();
  fakes.push(fake);
  return fake;
}

const chat = (fake: FakeOllama, model: string, options?: Record<string, unknown>) =>
  fetch(`${fake.url}/api/chat`, {
    method: "POST",
    body: JSON.stringify({ model, messages: [{ role: "user", content: "hi" }], stream: false, options }),
  });

describe("several fakes", () => {
  test("each has its own port, installed models and load time; a model it lacks is its 404", async () => {
    const mac = start({ models: ["llama3.2", "qwen3"], loadDelayMs: 5 });
    const box = start({ models: ["qwen3", "mistral"], modelDelays: { "mistral:latest": { loadMs: 40 } } });
    expect(mac.port).not.toBe(box.port);
    const names = async (fake: FakeOllama) =>
      ((await (await fetch(`${fake.url}/api/tags`)).json()) as { models: { name: string }[] }).models.map((m) => m.name);
    expect(await names(mac)).toEqual(["llama3.2:latest", "qwen3:latest", "all-minilm:latest"]);
    expect(await names(box)).toEqual(["qwen3:latest", "mistral:latest", "all-minilm:latest"]);
    expect((await chat(mac, "mistral")).status).toBe(404);
    expect((await chat(box, "mistral")).status).toBe(200);
    expect(box.seen.map((s) => [s.key, s.swapped])).toEqual([["mistral:latest", true]]);
    expect(mac.seen).toEqual([]);
  });
});

describe("the serving log's violations", () => {
  test("one slot (the default): a second generation at once is recorded, as is a second model key", async () => {
    const gpu = start({ tokenDelayMs: 10 });
    await Promise.all([chat(gpu, "llama3.2"), chat(gpu, "llama3.2")]);
    expect(gpu.violations).toEqual(["2 generations at once (slots 1)"]);
    await Promise.all([chat(gpu, "llama3.2"), chat(gpu, "qwen3")]);
    expect(gpu.violations.slice(1)).toEqual(["qwen3:latest while llama3.2:latest in flight", "2 generations at once (slots 1)"]);
  });

  test("one at a time leaves the log clean, and a load option makes another key", async () => {
    const gpu = start({});
    for (const options of [undefined, undefined, { num_ctx: 8192 }])
      expect((await chat(gpu, "llama3.2", options)).status).toBe(200);
    expect(gpu.violations).toEqual([]);
    expect(gpu.seen.map((s) => [s.key, s.swapped, s.inFlight])).toEqual([
      ["llama3.2:latest", true, 1],
      ["llama3.2:latest", false, 1],
      ["llama3.2:latest num_ctx=8192", true, 1],
    ]);
  });

  test("parallel mode: k of the loaded key at once is fine and shares one load; k + 1, or another key, is a violation", async () => {
    const gpu = start({ parallel: { slots: 4, slowdown: 2 }, loadDelayMs: 20, tokenDelayMs: 2 });
    const answers = await Promise.all([1, 2, 3, 4].map(() => chat(gpu, "qwen3")));
    expect(answers.map((a) => a.status)).toEqual([200, 200, 200, 200]);
    expect(gpu.violations).toEqual([]);
    expect(gpu.maxInFlight).toBe(4);
    // Four requests for the model being loaded wait for one load.
    expect(gpu.swaps).toBe(1);
    await Promise.all([1, 2, 3, 4, 5].map(() => chat(gpu, "qwen3")));
    expect(gpu.violations).toEqual(["5 generations at once (slots 4)"]);
    await Promise.all([chat(gpu, "qwen3"), chat(gpu, "mistral")]);
    expect(gpu.violations.slice(1)).toEqual(["mistral:latest while qwen3:latest in flight"]);
  });

  test("the log is served at /_fake/log for a fake in its own process", async () => {
    const gpu = start({ tokenDelayMs: 5 });
    await Promise.all([chat(gpu, "llama3.2"), chat(gpu, "qwen3")]);
    const log = (await (await fetch(`${gpu.url}/_fake/log`)).json()) as { violations: string[]; seen: unknown[] };
    expect(log.violations).toEqual(gpu.violations);
    expect(log.violations.length).toBeGreaterThan(0);
    expect(log.seen).toHaveLength(2);
  });
});
