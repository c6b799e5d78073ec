// A batch against the same lines sent one by one: a seeded 1,000-line file over four models,
// interleaved, against a fake GPU whose model swap costs far more than a short generation. The batch
// drains model by model; the naive script (one request at a time, in file order, FIFO) pays a swap
// at nearly every line.
import OpenAI, { toFile } from "openai";
import { startStack } from "../test/harness";
import { seededRandom, table } from "./stats";

const LINES = 1000;
const MODELS = ["llama3.2", "qwen3", "mistral", "gemma3"];
const LOAD_MS = 20;
const TOKEN_MS = 1;

/** The seeded file: each line's model drawn at random, so consecutive lines mostly differ. */
function lines(): Array<{ custom_id: string; model: string; content: string }> {
  const random = seededRandom(10);
  return Array.from({ length: LINES }, (_, i) => ({
    custom_id: `line-${i}`,
    model: MODELS[Math.floor(random() * MODELS.length)]!,
    content: `document ${i}`,
  }));
}

interface Outcome {
  label: string;
  swaps: number;
  makespanMs: number;
  answered: number;
}

async function asBatch(): Promise<Outcome> {
  const stack = await startStack({
    fake: { loadDelayMs: LOAD_MS, tokenDelayMs: TOKEN_MS },
    env: { FOREMAN_POLL_INTERVAL: "1h" },
  });
  try {
    const client = new OpenAI({ baseURL: `${stack.foreman.url}/v1`, apiKey: "unused", maxRetries: 0 });
    const jsonl = lines()
      .map((l) =>
        JSON.stringify({
          custom_id: l.custom_id,
          method: "POST",
          url: "/v1/chat/completions",
          body: { model: l.model, messages: [{ role: "user", content: l.content }] },
        }),
      )
      .join("\n");
    const start = performance.now();
    const file = await client.files.create({ file: await toFile(Buffer.from(jsonl), "bench.jsonl"), purpose: "batch" });
    let batch = await client.batches.create({
      input_file_id: file.id,
      endpoint: "/v1/chat/completions",
      completion_window: "24h",
    });
    while (!["completed", "failed", "cancelled", "expired"].includes(batch.status)) {
      await Bun.sleep(20);
      batch = await client.batches.retrieve(batch.id);
    }
    const makespanMs = performance.now() - start;
    const output = batch.output_file_id ? await (await client.files.content(batch.output_file_id)).text() : "";
    return {
      label: "batch (POST /v1/batches, drain)",
      swaps: stack.fake.swaps,
      makespanMs,
      answered: output.split("\n").filter(Boolean).length,
    };
  } finally {
    await stack.stop();
  }
}

async function oneByOne(): Promise<Outcome> {
  const stack = await startStack({
    fake: { loadDelayMs: LOAD_MS, tokenDelayMs: TOKEN_MS },
    env: { FOREMAN_POLL_INTERVAL: "1h", FOREMAN_SCHEDULE: "fifo" },
  });
  try {
    const client = new OpenAI({ baseURL: `${stack.foreman.url}/v1`, apiKey: "unused", maxRetries: 0 });
    const start = performance.now();
    let answered = 0;
    for (const line of lines()) {
      await client.chat.completions.create({ model: line.model, messages: [{ role: "user", content: line.content }] });
      answered++;
    }
    return {
      label: "one by one (POST /v1/chat/completions, fifo)",
      swaps: stack.fake.swaps,
      makespanMs: performance.now() - start,
      answered,
    };
  } finally {
    await stack.stop();
  }
}

export async function benchBatch(): Promise<string> {
  const outcomes = [await oneByOne(), await asBatch()];
  const baseline = outcomes[0]!;
  return [
    `### Batch API: ${LINES} lines over ${MODELS.length} models, interleaved (seeded), swap ${LOAD_MS} ms, ${TOKEN_MS} ms/token`,
    "",
    table(
      ["how", "answered", "swaps", "makespan s", "vs one by one"],
      outcomes.map((o) => [
        o.label,
        o.answered,
        o.swaps,
        (o.makespanMs / 1000).toFixed(2),
        `${Math.round((o.makespanMs / baseline.makespanMs) * 100)}%`,
      ]),
    ),
    "",
    "The batch's makespan runs from the upload to the batch completed, so it includes validation and queueing.",
  ].join("\n");
}
