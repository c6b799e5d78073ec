// A key's limits, answered in the shape of the API asked: its job cap and daily token quota (429 with
// Retry-After: a short wait for the cap, the quota's reset at UTC midnight by an injected clock), its model
// scope (404 as Ollama answers a model it lacks, and lists showing only what it may use), its APIs and its
// priority ceiling. Tokens are charged from each job's usage at its end, batch lines included.
import { afterEach, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { KeyStore } from "../../src/keys/key-store";
import { JOB_CAP_RETRY_AFTER_S, nextUtcMidnight } from "../../src/keys/usage";
import { openDatabase } from "../../src/queue/db";
import { JobStore, type NewJob } from "../../src/queue/store";
import { tempDir, until } from "../harness";
import { type InProcessStack, startInProcess } from "../in-process";

const ADMIN = { authorization: "Bearer admin-token" };
const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function stackWith(fake: { tokenDelayMs?: number } = {}): Promise<InProcessStack> {
  const stack = await startInProcess({ fake: { tokenDelayMs: 0, ...fake }, env: { FOREMAN_TOKEN: "admin-token" } });
  cleanups.push(() => stack.stop());
  return stack;
}

/** A key made through the admin API: the headers that carry its secret. */
async function key(stack: InProcessStack, body: Record<string, unknown>): Promise<Record<string, string>> {
  const made = await stack.request("POST", "/admin/keys", { role: "client", ...body }, ADMIN);
  expect(made.status).toBe(201);
  return { authorization: `Bearer ${((await made.json()) as { secret: string }).secret}` };
}

const chat = (model: string, text = "hi") => ({ model, messages: [{ role: "user", content: text }], stream: false });
const job = (model: string) => ({ type: "chat", request: { model, messages: [{ role: "user", content: "hi" }] } });

describe("the job cap and the daily quota, at the store (an injected clock)", () => {
  const DAY = 86_400_000;
  const noon = Date.UTC(2026, 11, 3, 12, 0, 0);

  function fresh() {
    const dir = tempDir();
    const db = openDatabase(join(dir.path, "foreman.db"));
    cleanups.push(
      () => dir.cleanup(),
      () => db.close(),
    );
    const keys = new KeyStore(db);
    return { store: new JobStore(db), keys };
  }
  const newJob = (owner: NewJob["owner"]): NewJob => ({
    type: "chat",
    model: "m",
    modelKey: "m:latest",
    request: "{}",
    source: "jobs",
    maxAttempts: 1,
    owner,
  });

  test("refused exactly at max_jobs queued or running, admitted again when one ends; others' jobs do not count", () => {
    const { store, keys } = fresh();
    const { key } = keys.create("capped", "client", { maxJobs: 2 });
    const owner = { keyId: key.id, name: key.name, maxJobs: 2, dailyTokens: null };
    const first = store.enqueue(newJob(owner), 100, noon).job;
    store.enqueue(newJob(undefined), 100, noon);
    store.enqueue(newJob(owner), 100, noon);
    let refusal: unknown;
    try {
      store.enqueue(newJob(owner), 100, noon);
    } catch (error) {
      refusal = error;
    }
    expect(refusal).toMatchObject({
      status: 429,
      headers: { "retry-after": String(JOB_CAP_RETRY_AFTER_S) },
      message: 'job cap reached: key "capped" may have 2 jobs queued or running (max_jobs); try again when one ends',
    });
    // Running counts as much as queued.
    store.claimNextJob({ schedule: "fifo", residentKeys: [], maxWaitMs: 60_000 }, noon);
    expect(() => store.enqueue(newJob(owner), 100, noon)).toThrow("job cap reached");
    store.cancelJob(first.id);
    expect(store.enqueue(newJob(owner), 100, noon).created).toBe(true);
  });

  test("the quota: admitted below it, refused once used up, with Retry-After to the next UTC midnight; a new day admits", () => {
    const { store, keys } = fresh();
    const { key } = keys.create("metered", "client", { dailyTokens: 100 });
    const owner = { keyId: key.id, name: key.name, maxJobs: null, dailyTokens: 100 };
    store.keyUsage.chargeTx({ keyId: key.id, promptTokens: 60, outputTokens: 39 }, noon);
    expect(store.enqueue(newJob(owner), 100, noon).created).toBe(true);
    store.keyUsage.chargeTx({ keyId: key.id, promptTokens: 0, outputTokens: 1 }, noon);
    const late = noon + 11 * 3_600_000 + 59 * 60_000 + 30_000; // 23:59:30 UTC
    let refusal: unknown;
    try {
      store.enqueue(newJob(owner), 100, late);
    } catch (error) {
      refusal = error;
    }
    expect(refusal).toMatchObject({
      status: 429,
      headers: { "retry-after": "30" },
      message:
        'daily token quota reached: key "metered" used 100 of its 100 tokens (daily_tokens) today; it resets at 2026-12-04T00:00:00.000Z',
    });
    expect(nextUtcMidnight(late)).toBe(Date.UTC(2026, 11, 4));
    // Yesterday's tokens do not count today; what was queued stays queued.
    expect(store.enqueue(newJob(owner), 100, Date.UTC(2026, 11, 4)).created).toBe(true);
    expect(store.queuedCount()).toBe(2);
    expect(store.keyUsage.today(key.id, noon + DAY)).toEqual({ promptTokens: 0, outputTokens: 0, jobs: 0, gpuMs: 0 });
  });
});

describe("limits over HTTP, in each API's shape", () => {
  test("over the job cap: Ollama's, OpenAI's and Anthropic's 429 with Retry-After, naming the limit and its value", async () => {
    const stack = await stackWith({ tokenDelayMs: 200 });
    const capped = await key(stack, { name: "capped", max_jobs: 1 });
    const held = await stack.request("POST", "/jobs", job("llama3.2"), capped);
    expect(held.status).toBe(202);
    const message = 'job cap reached: key "capped" may have 1 jobs queued or running (max_jobs); try again when one ends';
    const ollama = await stack.request("POST", "/api/chat", chat("llama3.2"), capped);
    expect(ollama.status).toBe(429);
    expect(ollama.headers.get("retry-after")).toBe(String(JOB_CAP_RETRY_AFTER_S));
    expect(await ollama.json()).toEqual({ error: message });
    const openai = await stack.request("POST", "/v1/chat/completions", chat("llama3.2"), capped);
    expect(openai.status).toBe(429);
    expect(await openai.json()).toEqual({ error: { message, type: "api_error", param: null, code: null } });
    const anthropic = await stack.request(
      "POST",
      "/v1/messages",
      { model: "llama3.2", max_tokens: 10, messages: [{ role: "user", content: "hi" }] },
      capped,
    );
    expect(anthropic.status).toBe(429);
    expect(anthropic.headers.get("retry-after")).toBe(String(JOB_CAP_RETRY_AFTER_S));
    expect(await anthropic.json()).toEqual({ type: "error", error: { type: "rate_limit_error", message } });
    const jobsApi = await stack.request("POST", "/jobs", job("llama3.2"), capped);
    expect(jobsApi.status).toBe(429);
    // Another key is not held by this one's cap; nothing queued was dropped.
    const other = await key(stack, { name: "other" });
    expect((await stack.request("POST", "/jobs", job("llama3.2"), other)).status).toBe(202);
    const id = ((await held.json()) as { id: string }).id;
    expect((await stack.ended(id)).state).toBe("done");
    expect((await stack.request("POST", "/jobs", job("llama3.2"), capped)).status).toBe(202);
  });

  test("the quota counts each job's tokens at its end; refused exactly when used, reset at UTC midnight", async () => {
    const stack = await stackWith();
    // The worker charges by its own clock (today); admission runs at 23:59:50 today by the injected one.
    const today = Math.floor(Date.now() / 86_400_000) * 86_400_000;
    stack.jobs.clock = () => today + 86_400_000 - 10_000;
    const probe = await key(stack, { name: "probe" });
    const first = ((await (await stack.request("POST", "/jobs", job("llama3.2"), probe)).json()) as { id: string }).id;
    const done = await stack.ended(first);
    const perJob = done.promptTokens! + done.outputTokens!;
    expect(perJob).toBeGreaterThan(0);

    const metered = await key(stack, { name: "metered", daily_tokens: perJob + 1 });
    const run = async () => {
      const response = await stack.request("POST", "/jobs", job("llama3.2"), metered);
      if (response.status === 202) await stack.ended(((await response.json()) as { id: string }).id);
      return response;
    };
    expect((await run()).status).toBe(202); // 0 used
    expect((await run()).status).toBe(202); // perJob used, below perJob + 1
    const refused = await run(); // 2 × perJob used
    expect(refused.status).toBe(429);
    expect(refused.headers.get("retry-after")).toBe("10");
    expect(((await refused.json()) as { error: string }).error).toBe(
      `daily token quota reached: key "metered" used ${2 * perJob} of its ${perJob + 1} tokens (daily_tokens) today; it resets at ${new Date(today + 86_400_000).toISOString()}`,
    );
    const view = (await (await stack.request("GET", "/admin/keys/metered", undefined, ADMIN)).json()) as {
      today: { jobs: number; prompt_tokens: number; output_tokens: number };
    };
    expect(view.today.jobs).toBe(2);
    expect(view.today.prompt_tokens + view.today.output_tokens).toBe(2 * perJob);
    // A new day (by the injected clock) admits again.
    stack.jobs.clock = () => today + 86_400_000;
    expect((await run()).status).toBe(202);
  });
});

describe("batches and limits", () => {
  test("a batch's lines are charged to its key; a key past its quota cannot make a batch (OpenAI's 429)", async () => {
    const stack = await stackWith();
    const batcher = await key(stack, { name: "batcher", daily_tokens: 1 });
    const line = (id: string) =>
      JSON.stringify({ custom_id: id, method: "POST", url: "/v1/chat/completions", body: chat("llama3.2") });
    const form = new FormData();
    form.append("purpose", "batch");
    form.append("file", new Blob([`${line("a")}\n${line("b")}\n`]), "in.jsonl");
    const uploaded = await stack.handle(new Request(`${stack.url}/v1/files`, { method: "POST", headers: batcher, body: form }));
    const file = ((await uploaded.json()) as { id: string }).id;
    const create = () =>
      stack.request(
        "POST",
        "/v1/batches",
        { input_file_id: file, endpoint: "/v1/chat/completions", completion_window: "24h" },
        batcher,
      );
    const created = await create();
    expect(created.status).toBe(200);
    const batchId = ((await created.json()) as { id: string }).id;
    await until(
      async () =>
        ((await (await stack.request("GET", `/v1/batches/${batchId}`, undefined, batcher)).json()) as { status: string })
          .status === "completed",
      10_000,
      "the batch to complete",
    );
    const view = (await (await stack.request("GET", "/admin/keys/batcher", undefined, ADMIN)).json()) as {
      today: { jobs: number; prompt_tokens: number; output_tokens: number };
    };
    expect(view.today.jobs).toBe(2);
    expect(view.today.prompt_tokens + view.today.output_tokens).toBeGreaterThan(1);
    const refused = await create();
    expect(refused.status).toBe(429);
    expect(Number(refused.headers.get("retry-after"))).toBeGreaterThan(0);
    const body = (await refused.json()) as { error: { message: string; type: string } };
    expect(body.error.message).toStartWith('daily token quota reached: key "batcher" used');
  });
});

describe("idempotency keys", () => {
  test("are each key's own: another key's repeat makes its own job and never returns the first key's", async () => {
    const stack = await stackWith();
    const alice = await key(stack, { name: "alice" });
    const bob = await key(stack, { name: "bob" });
    const submit = (auth: Record<string, string>) =>
      stack.request("POST", "/jobs", { ...job("llama3.2"), idempotency_key: "nightly-1" }, auth);
    const first = await submit(alice);
    expect(first.status).toBe(202);
    const firstId = ((await first.json()) as { id: string }).id;
    const again = await submit(alice);
    expect(again.status).toBe(200);
    expect(((await again.json()) as { id: string }).id).toBe(firstId);
    const other = await submit(bob);
    expect(other.status).toBe(202);
    expect(((await other.json()) as { id: string }).id).not.toBe(firstId);
  });
});

describe("scopes", () => {
  test("a model outside the key's globs is Ollama's 404 for a missing model; lists show only allowed models", async () => {
    const stack = await stackWith();
    const scoped = await key(stack, { name: "scoped", models: ["llama3.2*", "all-minilm*"] });
    const missing = await stack.request("POST", "/api/chat", chat("no-such-model"), scoped);
    const outside = await stack.request("POST", "/api/chat", chat("qwen3"), scoped);
    expect(outside.status).toBe(404);
    expect(await outside.json()).toEqual({ error: "model 'qwen3' not found" });
    expect(missing.status).toBe(404);
    expect(await missing.json()).toEqual({ error: "model 'no-such-model' not found" });
    expect((await stack.request("POST", "/api/chat", chat("llama3.2"), scoped)).status).toBe(200);
    expect((await stack.request("POST", "/v1/chat/completions", chat("qwen3"), scoped)).status).toBe(404);
    expect((await stack.request("POST", "/jobs", job("qwen3"), scoped)).status).toBe(404);
    expect((await stack.request("POST", "/api/show", { model: "qwen3" }, scoped)).status).toBe(404);
    expect((await stack.request("POST", "/api/embed", { model: "qwen3", input: "x" }, scoped)).status).toBe(404);
    expect((await stack.request("POST", "/api/embed", { model: "all-minilm", input: "x" }, scoped)).status).toBe(200);
    expect((await stack.request("GET", "/v1/models/qwen3:latest", undefined, scoped)).status).toBe(404);

    const tags = (await (await stack.request("GET", "/api/tags", undefined, scoped)).json()) as { models: { name: string }[] };
    expect(tags.models.map((m) => m.name).sort()).toEqual(["all-minilm:latest", "llama3.2:latest"]);
    const models = (await (await stack.request("GET", "/v1/models", undefined, scoped)).json()) as { data: { id: string }[] };
    expect(models.data.map((m) => m.id).sort()).toEqual(["all-minilm:latest", "llama3.2:latest"]);
    await until(async () => stack.inventory.snapshot.running.length > 0, 5000, "a model to be resident");
    await stack.inventory.refresh();
    const adminPs = (await (await stack.request("GET", "/api/ps", undefined, ADMIN)).json()) as { models: { name: string }[] };
    const ps = (await (await stack.request("GET", "/api/ps", undefined, scoped)).json()) as { models: { name: string }[] };
    expect(ps.models.map((m) => m.name)).toEqual(
      adminPs.models.map((m) => m.name).filter((n) => /^(llama3\.2|all-minilm)/.test(n)),
    );
    // An admin sees every model.
    const all = (await (await stack.request("GET", "/api/tags", undefined, ADMIN)).json()) as { models: unknown[] };
    expect(all.models.length).toBeGreaterThan(2);
  });

  test("a key limited to some APIs is refused the others (403, in their shape); the priority ceiling lowers priorities", async () => {
    const stack = await stackWith();
    const openaiOnly = await key(stack, { name: "sdk", apis: ["openai"], max_priority: 1 });
    const refused = await stack.request("POST", "/api/chat", chat("llama3.2"), openaiOnly);
    expect(refused.status).toBe(403);
    expect(await refused.json()).toEqual({ error: 'key "sdk" may not use the ollama API' });
    const anthropic = await stack.request("POST", "/v1/messages", {}, openaiOnly);
    expect(anthropic.status).toBe(403);
    expect(((await anthropic.json()) as { type: string }).type).toBe("error");
    expect((await stack.request("GET", "/jobs", undefined, openaiOnly)).status).toBe(403);
    const answered = await stack.request("POST", "/v1/chat/completions", chat("llama3.2"), {
      ...openaiOnly,
      "x-foreman-priority": "50",
    });
    expect(answered.status).toBe(200);
    const jobId = answered.headers.get("x-foreman-job-id")!;
    expect(stack.store.getJob(jobId)!.priority).toBe(1);
  });
});
