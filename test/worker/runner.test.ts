// The job loop on the main thread, its messages captured: what it relays, in which order, and what the
// row says afterwards, for each framing (NDJSON, Server-Sent Events, one body).
import { present } from "../../src/queue/maybe-promise";
import { afterEach, expect, test } from "bun:test";
import { until } from "../harness";
import { type InProcessStack, startInProcess } from "../in-process";

let stack: InProcessStack | undefined;
afterEach(async () => {
  await stack?.stop();
  stack = undefined;
});

/** Queues a job as the job API would and waits for its end through the service's watcher. */
async function runJob(type: Parameters<InProcessStack["jobs"]["submit"]>[0], body: unknown, source: "jobs" | "openai" = "jobs") {
  const { job } = await stack!.jobs.submit(type, body, { source });
  let ended;
  for await (const event of stack!.jobs.watch(job.id)) if (event.type === "ended") ended = event.job;
  return { id: job.id, row: ended! };
}

test("a job API job streams NDJSON records, relays them whole and in order, then assembles Ollama's answer", async () => {
  stack = await startInProcess();
  const { id, row } = await runJob("chat", { model: "llama3.2", messages: [{ role: "user", content: "one two three" }] });
  expect(row.state).toBe("done");
  const mine = stack.messages.filter((m) => "jobId" in m && m.jobId === id).map((m) => m.type);
  expect(mine[0]).toBe("state");
  expect(mine.at(-1)).toBe("ended");
  const relayed = stack.messages.flatMap((m) =>
    m.type === "chunk" && m.jobId === id ? [new TextDecoder().decode(m.bytes)] : [],
  );
  expect(relayed.every((chunk) => chunk.endsWith("\n"))).toBe(true);
  expect(JSON.parse(row.result!)).toMatchObject({
    done: true,
    message: { role: "assistant", content: "You said: one two three" },
  });
  expect(stack.store.artifacts.list(id).map((a) => a.name)).toEqual(["result.json", "stream.ndjson"]);
});

test("an OpenAI job streams Server-Sent Events, never cut inside an event, and keeps the non-streaming body as its result", async () => {
  stack = await startInProcess();
  const { id, row } = await runJob("openai.chat", { model: "llama3.2", messages: [{ role: "user", content: "a b c" }] });
  expect(row.state).toBe("done");
  const relayed = stack.messages.flatMap((m) =>
    m.type === "chunk" && m.jobId === id ? [new TextDecoder().decode(m.bytes)] : [],
  );
  expect(relayed.every((chunk) => chunk.endsWith("\n\n"))).toBe(true);
  expect(relayed.join("")).toContain("data: [DONE]");
  expect(JSON.parse(row.result!)).toMatchObject({
    object: "chat.completion",
    choices: [{ message: { role: "assistant", content: "You said: a b c" }, finish_reason: "stop" }],
  });
  expect(stack.store.artifacts.list(id).map((a) => a.name)).toEqual(["result.json", "stream.sse"]);
});

test("a client's non-streaming OpenAI request is sent as it is and its one body relayed byte for byte", async () => {
  stack = await startInProcess();
  const { id, row } = await runJob("openai.chat", { model: "llama3.2", messages: [{ role: "user", content: "hi" }] }, "openai");
  const relayed = stack.messages.flatMap((m) =>
    m.type === "chunk" && m.jobId === id ? [new TextDecoder().decode(m.bytes)] : [],
  );
  expect(relayed).toEqual([row.result!]);
  expect(stack.fake.seen.at(-1)!.body.stream).toBeUndefined();
});

test("bad input never reaches the loop: the routes answer in process, in each API's shape", async () => {
  stack = await startInProcess();
  const native = await stack.request("POST", "/api/chat", { model: 5 });
  expect(native.status).toBe(400);
  expect(await native.json()).toEqual({ error: expect.stringContaining("model") });
  const openai = await stack.request("POST", "/v1/chat/completions", { model: "llama3.2", messages: [] });
  expect(openai.status).toBe(400);
  expect(await openai.json()).toMatchObject({
    error: { type: "invalid_request_error", message: "[] is too short - 'messages'" },
  });
  const anthropic = await stack.request("POST", "/v1/messages", { model: "llama3.2", max_tokens: 1 });
  expect(anthropic.status).toBe(400);
  expect(await anthropic.json()).toMatchObject({ type: "error", error: { message: "messages is required" } });
  expect(stack.messages).toEqual([]);
  expect(stack.fake.seen).toEqual([]);
});

test("a finished job records what it cost, as each API reports it: tokens, Ollama's timings, and whether it swapped", async () => {
  stack = await startInProcess();
  const native = await runJob("chat", { model: "llama3.2", messages: [{ role: "user", content: "one two three" }] });
  const final = JSON.parse(native.row.result!) as Record<string, number>;
  expect(native.row).toMatchObject({
    swapped: 1,
    promptTokens: final.prompt_eval_count,
    outputTokens: final.eval_count,
    loadMs: final.load_duration! / 1e6,
    evalMs: final.eval_duration! / 1e6,
  });
  expect(native.row.outputTokens).toBeGreaterThan(0);
  // The same model again: loaded by the job before, so no swap; OpenAI's usage has tokens but no timings.
  const openai = await runJob("openai.chat", { model: "llama3.2", messages: [{ role: "user", content: "a b" }] });
  const usage = (JSON.parse(openai.row.result!) as { usage: Record<string, number> }).usage;
  expect(openai.row).toMatchObject({
    swapped: 0,
    promptTokens: usage.prompt_tokens,
    outputTokens: usage.completion_tokens,
    loadMs: null,
    evalMs: null,
  });
  const view = (await (await stack.request("GET", `/jobs/${openai.id}`)).json()) as Record<string, unknown>;
  expect(view).toMatchObject({ swapped: false, output_tokens: usage.completion_tokens, load_ms: null });
  expect(view.wait_ms).toBeGreaterThanOrEqual(0);
  expect(view.run_ms).toBeGreaterThanOrEqual(0);
  // No Ollama timings here, so the rate is over foreman's run time: none for a job that began and ended in one millisecond.
  if (view.run_ms === 0) expect(view.tokens_per_s).toBeNull();
  else expect(view.tokens_per_s).toBeCloseTo((usage.completion_tokens! / (view.run_ms as number)) * 1000, 0);
});

test("back-to-back jobs: the next request leaves once the last answer has ended, before that job is recorded, never two at once", async () => {
  // A slow first job holds the GPU while the rest queue up behind it, over two models.
  stack = await startInProcess({ fake: { tokenDelayMs: 1 } });
  const { job: first } = await stack.jobs.submit(
    "generate",
    { model: "llama3.2", prompt: "one two three four five six" },
    { source: "jobs" },
  );
  await stack.fake.nextArrival();
  const ids = [first.id];
  for (let i = 0; i < 20; i++) {
    const model = i % 3 === 0 ? "qwen3" : "llama3.2";
    ids.push((await stack.jobs.submit("generate", { model, prompt: `job ${i}` }, { source: "jobs" })).job.id);
  }
  for (const id of ids)
    for await (const event of stack.jobs.watch(id)) if (event.type === "ended") expect(event.job.state).toBe("done");

  const log = [...stack.fake.seen].sort((a, b) => a.arrivedMs - b.arrivedMs);
  expect(log).toHaveLength(ids.length);
  expect(stack.fake.maxInFlight).toBe(1);
  // The serving log's intervals are disjoint: each request arrives only after the one before was served in full.
  for (let i = 1; i < log.length; i++) expect(log[i]!.arrivedMs).toBeGreaterThanOrEqual(log[i - 1]!.servedMs!);
  // And it arrives before the job before it is recorded done: its bookkeeping happens while the GPU works.
  const rows = ids.map((id) => stack!.store.getJob(id)!).sort((a, b) => a.startedAt! - b.startedAt! || (a.id < b.id ? -1 : 1));
  for (let i = 1; i < rows.length; i++) expect(rows[i]!.startedAt!).toBeLessThanOrEqual(rows[i - 1]!.finishedAt!);
});

test("a job claimed at the last answer's final record and canceled before that body ends is never sent to Ollama", async () => {
  // The body's end trails its final record by 300 ms: the next job is claimed in between.
  stack = await startInProcess({ fake: { finalDelayMs: 300 } });
  const prompt = (p: string) => ({ model: "llama3.2", prompt: p });
  // The first job is held before its output until the other two are queued, so they wait behind it.
  const release = stack.fake.hold();
  const first = (await stack.jobs.submit("generate", prompt("first"), { source: "jobs" })).job;
  await stack.fake.nextArrival();
  const canceled = (await stack.jobs.submit("generate", prompt("canceled"), { source: "jobs" })).job;
  const last = (await stack.jobs.submit("generate", prompt("last"), { source: "jobs" })).job;
  release();
  await until(() => stack!.store.getJob(canceled.id)!.state === "loading", 5000, "the claim at the final record");
  expect(stack.fake.seen).toHaveLength(1);
  expect(present(stack!.jobs.cancel(canceled.id), "the test")?.state).toBe("canceled");
  for await (const event of stack.jobs.watch(last.id)) if (event.type === "ended") expect(event.job.state).toBe("done");
  expect(stack.fake.seen.map((seen) => seen.body.prompt)).toEqual(["first", "last"]);
  expect(stack.store.getJob(first.id)!.state).toBe("done");
  expect(stack.store.getJob(canceled.id)!.state).toBe("canceled");
  expect(stack.fake.maxInFlight).toBe(1);
});

test("after a running job is aborted the next request waits for Ollama to have seen the abort", async () => {
  stack = await startInProcess();
  const prompt = (p: string) => ({ model: "llama3.2", prompt: p });
  const release = stack.fake.hold();
  const first = (await stack.jobs.submit("generate", prompt("first"), { source: "jobs" })).job;
  await stack.fake.nextArrival();
  const next = (await stack.jobs.submit("generate", prompt("next"), { source: "jobs" })).job;
  const canceledAt = performance.now();
  expect(present(stack!.jobs.cancel(first.id), "the test")?.state).toBe("canceled");
  release();
  for await (const event of stack.jobs.watch(next.id)) if (event.type === "ended") expect(event.job.state).toBe("done");
  const [aborted, sent] = stack.fake.seen;
  // The first request was over at the fake before the next arrived, and not by luck: the runner waited.
  expect(sent!.arrivedMs).toBeGreaterThanOrEqual(aborted!.servedMs!);
  expect(sent!.arrivedMs - canceledAt).toBeGreaterThanOrEqual(45);
  expect(stack.fake.maxInFlight).toBe(1);
});

test("a job claimed ahead whose row was canceled before its cancel message arrived is never sent", async () => {
  stack = await startInProcess({ fake: { finalDelayMs: 300 } });
  const prompt = (p: string) => ({ model: "llama3.2", prompt: p });
  const release = stack.fake.hold();
  await stack.jobs.submit("generate", prompt("first"), { source: "jobs" });
  await stack.fake.nextArrival();
  const canceled = (await stack.jobs.submit("generate", prompt("canceled"), { source: "ollama" })).job;
  const last = (await stack.jobs.submit("generate", prompt("last"), { source: "jobs" })).job;
  release();
  await until(() => stack!.store.getJob(canceled.id)!.state === "loading", 5000, "the claim at the final record");
  // The database says canceled; the message that would abort it is not sent (as if still on its way).
  expect(stack.store.cancelJob(canceled.id)?.state).toBe("canceled");
  expect((await stack.ended(last.id)).state).toBe("done");
  expect(stack.fake.seen.map((seen) => seen.body.prompt)).toEqual(["first", "last"]);
  expect(stack.fake.maxInFlight).toBe(1);
});

test("a job whose client hung up is never sent while its cancel is still batched, and the loop cancels it itself", async () => {
  stack = await startInProcess();
  const prompt = (p: string) => ({ model: "llama3.2", prompt: p });
  const release = stack.fake.hold();
  await stack.jobs.submit("generate", prompt("first"), { source: "jobs" });
  await stack.fake.nextArrival();
  const gone = (await stack.jobs.submit("generate", prompt("gone"), { source: "ollama" })).job;
  const last = (await stack.jobs.submit("generate", prompt("last"), { source: "jobs" })).job;
  // The hang-up reaches the loop at once; its database cancel has not been written yet.
  stack.jobs.link.clientGone(gone.id);
  release();
  expect((await stack.ended(last.id)).state).toBe("done");
  expect(stack.store.getJob(gone.id)).toMatchObject({ state: "canceled", error: "request canceled", errorStatus: 499 });
  expect(stack.fake.seen.map((seen) => seen.body.prompt)).toEqual(["first", "last"]);
});
