// The job API: submit, list, watch, cancel, artifacts, queue; and bad input on every route. foreman
// answers in this process (test/in-process.ts); the fake Ollama is a real server.
import { afterEach, describe, expect, test } from "bun:test";
import { until } from "../harness";
import { type InProcessStack, startInProcess } from "../in-process";

let stack: InProcessStack | undefined;
afterEach(async () => {
  await stack?.stop();
  stack = undefined;
});

type Job = {
  id: string;
  state: string;
  queue_position: number | null;
  result: { message?: { content: string }; response?: string } | null;
  [k: string]: unknown;
};

const chatJob = (content: string, extra: Record<string, unknown> = {}) => ({
  type: "chat",
  request: { model: "llama3.2", messages: [{ role: "user", content }] },
  ...extra,
});

async function call(method: string, path: string, body?: unknown) {
  const response = await stack!.fetch(path, {
    method,
    headers: body === undefined ? {} : { "content-type": "application/json" },
    body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
  });
  const text = await response.text();
  return { status: response.status, headers: response.headers, body: text ? JSON.parse(text) : null };
}

/** Waits for the job's end (an event, not a poll) and checks how it ended. */
async function waitForState(id: string, state: "done" | "failed" | "canceled") {
  expect((await stack!.ended(id)).state).toBe(state);
}

describe("submitting and reading jobs", () => {
  test("POST /jobs answers 202 at once; the job runs and its result is Ollama's non-streaming answer", async () => {
    stack = await startInProcess({ fake: { tokenDelayMs: 20 } });
    const submitted = await call("POST", "/jobs", chatJob("batch me"));
    expect(submitted.status).toBe(202);
    expect(submitted.body).toMatchObject({
      type: "chat",
      model: "llama3.2",
      source: "jobs",
      state: "queued",
      priority: 0,
      attempts: 0,
      max_attempts: 3,
      queue_position: 1,
      result: null,
      webhook: null,
    });
    await waitForState(submitted.body.id, "done");
    const job = (await call("GET", `/jobs/${submitted.body.id}`)).body as Job;
    expect(job.result!.message!.content).toBe("You said: batch me");
    expect(job.result).toMatchObject({ done: true, done_reason: "stop", model: "llama3.2" });
    expect(job.queue_position).toBeNull();
    expect(job.started_at).toBeString();
    expect(job.finished_at).toBeString();
  });

  test("a generate job assembles the response text", async () => {
    stack = await startInProcess();
    const { body } = await call("POST", "/jobs", {
      type: "generate",
      request: { model: "qwen3", prompt: "tell me", stream: true },
    });
    await waitForState(body.id, "done");
    expect(((await call("GET", `/jobs/${body.id}`)).body as Job).result!.response).toBe("You said: tell me");
  });

  test("a repeated idempotency key returns the first job with 200", async () => {
    stack = await startInProcess();
    const first = await call("POST", "/jobs", chatJob("once", { idempotency_key: "doc-1" }));
    const again = await call("POST", "/jobs", chatJob("once", { idempotency_key: "doc-1" }));
    expect(first.status).toBe(202);
    expect(again.status).toBe(200);
    expect(again.body.id).toBe(first.body.id);
    await waitForState(first.body.id, "done");
    expect(stack.fake.seen.length).toBe(1);
  });

  test("higher priority runs first; positions say so", async () => {
    stack = await startInProcess();
    const release = stack.fake.hold();
    const arrived = stack.fake.nextArrival();
    const blocker = await call("POST", "/jobs", chatJob("a b c d e"));
    await arrived;
    const low = await call("POST", "/jobs", chatJob("low"));
    const high = await call("POST", "/jobs", chatJob("high", { priority: 10 }));
    expect((await call("GET", `/jobs/${high.body.id}`)).body.queue_position).toBe(1);
    expect((await call("GET", `/jobs/${low.body.id}`)).body.queue_position).toBe(2);
    release();
    await waitForState(low.body.id, "done");
    const order = stack.fake.seen.map((s) => (s.body.messages as { content: string }[])[0]!.content);
    expect(order).toEqual(["a b c d e", "high", "low"]);
    expect(blocker.status).toBe(202);
  });

  test("jobs made by /api/chat are listed like any other", async () => {
    stack = await startInProcess();
    const response = await stack.fetch("/api/chat", {
      method: "POST",
      body: JSON.stringify({ ...chatJob("sync").request, stream: false }),
    });
    const id = response.headers.get("x-foreman-job-id");
    await response.text();
    const list = await call("GET", "/jobs");
    expect(list.body.jobs.map((j: Job) => [j.id, j.source])).toEqual([[id, "ollama"]]);
  });
});

describe("listing", () => {
  test("newest first, filtered, paged by cursor", async () => {
    stack = await startInProcess();
    const ids: string[] = [];
    for (let i = 0; i < 5; i++)
      ids.push(
        (
          await call(
            "POST",
            "/jobs",
            i % 2 ? { type: "generate", request: { model: "qwen3", prompt: `p${i}` } } : chatJob(`c${i}`),
          )
        ).body.id,
      );
    for (const id of ids) await waitForState(id, "done");
    const page1 = await call("GET", "/jobs?limit=2");
    expect(page1.body.jobs.map((j: Job) => j.id)).toEqual([ids[4], ids[3]]);
    const page2 = await call("GET", `/jobs?limit=2&cursor=${page1.body.next_cursor}`);
    expect(page2.body.jobs.map((j: Job) => j.id)).toEqual([ids[2], ids[1]]);
    const page3 = await call("GET", `/jobs?limit=2&cursor=${page2.body.next_cursor}`);
    expect(page3.body).toMatchObject({ next_cursor: null });
    expect(page3.body.jobs.map((j: Job) => j.id)).toEqual([ids[0]]);
    expect((await call("GET", "/jobs?model=qwen3")).body.jobs.map((j: Job) => j.id)).toEqual([ids[3], ids[1]]);
    expect((await call("GET", "/jobs?type=chat&limit=500")).body.jobs.length).toBe(3);
    expect((await call("GET", "/jobs?state=queued")).body.jobs).toEqual([]);
  });
});

describe("cancelling", () => {
  test("a queued job is canceled and never reaches Ollama; an ended one is 409; an unknown one 404", async () => {
    stack = await startInProcess();
    const release = stack.fake.hold();
    const arrived = stack.fake.nextArrival();
    const running = await call("POST", "/jobs", chatJob("a b c d"));
    await arrived;
    const waiting = await call("POST", "/jobs", chatJob("never"));
    const canceled = await call("DELETE", `/jobs/${waiting.body.id}`);
    expect(canceled.status).toBe(200);
    expect(canceled.body.state).toBe("canceled");
    release();
    await waitForState(running.body.id, "done");
    expect(stack.fake.seen.length).toBe(1);
    const again = await call("DELETE", `/jobs/${waiting.body.id}`);
    expect(again.status).toBe(409);
    expect(again.body.error).toContain("already ended");
    expect((await call("DELETE", "/jobs/01ARZ3NDEKTSV4RRFFQ69G5FAV")).status).toBe(404);
  });

  test("a running job has its upstream call aborted", async () => {
    stack = await startInProcess();
    const release = stack.fake.hold(1);
    const arrived = stack.fake.nextArrival();
    const { body } = await call("POST", "/jobs", chatJob("a b c d e f g h"));
    const seen = await arrived;
    expect((await call("DELETE", `/jobs/${body.id}`)).body.state).toBe("canceled");
    await until(() => seen.aborted === true, 5000, "the abort upstream");
    release();
    // A canceled job stays canceled: the worker does not overwrite it when its call unwinds. The loop
    // runs one job at a time, so once the next job is done, the canceled one has unwound.
    const next = await call("POST", "/jobs", chatJob("next"));
    await waitForState(next.body.id, "done");
    expect((await call("GET", `/jobs/${body.id}`)).body.state).toBe("canceled");
  });
});

describe("watching", () => {
  test("events: the current state, transitions, each chunk, then end with the job; an ended job sends end at once", async () => {
    stack = await startInProcess({ fake: { tokenDelayMs: 30 } });
    // Held before its first token until the watcher is subscribed, so no chunk can come before it.
    const release = stack.fake.hold();
    const { body } = await call("POST", "/jobs", chatJob("watch this"));
    const response = await stack.fetch(`/jobs/${body.id}/events`);
    release();
    expect(response.headers.get("content-type")).toBe("text/event-stream");
    const events = (await response.text())
      .trim()
      .split("\n\n")
      .map((frame) => {
        const [event, data] = frame.split("\n");
        return { event: event!.slice("event: ".length), data: JSON.parse(data!.slice("data: ".length)) };
      });
    const names = events.map((e) => e.event);
    expect(names[0]).toBe("state");
    expect(names.filter((n) => n === "state").length).toBeGreaterThanOrEqual(2);
    expect(names.filter((n) => n === "chunk").length).toBe(5); // four tokens and the final line
    expect(names.at(-1)).toBe("end");
    const states = events.filter((e) => e.event === "state").map((e) => e.data.state);
    expect(states).toContain("working");
    expect(states.at(-1)).toBe("done");
    expect(
      events
        .filter((e) => e.event === "chunk")
        .map((e) => e.data.message.content)
        .join(""),
    ).toBe("You said: watch this");
    expect(events.at(-1)!.data).toMatchObject({ id: body.id, state: "done" });

    const late = await (await stack.fetch(`/jobs/${body.id}/events`)).text();
    expect(late.startsWith("event: end\n")).toBe(true);
  });

  test("events: a reader more than 4 MiB behind is told `overflow` where its gap begins, then gets the end", async () => {
    stack = await startInProcess();
    const release = stack.fake.hold();
    const { body } = await call(
      "POST",
      "/jobs",
      chatJob("long", { request: { ...chatJob("").request, options: { num_predict: 60_000 } } }),
    );
    const response = await stack.fetch(`/jobs/${body.id}/events`);
    release();
    // Not read until the job is done: the GPU did not wait, and the chunks past the backlog were not kept.
    expect((await stack.ended(body.id)).state).toBe("done");
    const names = (await response.text())
      .trim()
      .split("\n\n")
      .map((frame) => frame.slice("event: ".length, frame.indexOf("\n")));
    const chunks = names.filter((n) => n === "chunk").length;
    expect(chunks).toBeGreaterThan(0);
    expect(chunks).toBeLessThan(60_000);
    expect(names.filter((n) => n === "overflow")).toHaveLength(1);
    expect(names.slice(names.indexOf("overflow"))).toEqual(["overflow", "state", "end"]);
    // Every record is in the stored stream.
    const stored = await stack.fetch(`/jobs/${body.id}/artifacts/stream.ndjson`);
    expect((await stored.text()).trim().split("\n")).toHaveLength(60_001);
  });
});

describe("list pages with bodies", () => {
  test("hold at most 8 MiB of them: a page ends early and next_cursor goes on, no job left out", async () => {
    stack = await startInProcess();
    // Each request and answer carries a 1.5 MB word: 3 MB of bodies per job with both included.
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      const { body } = await call("POST", "/jobs", chatJob(`${i}${"x".repeat(1_500_000)}`));
      ids.push(body.id);
    }
    for (const id of ids) expect((await stack.ended(id)).state).toBe("done");
    const pages: Array<{ jobs: Job[]; next_cursor: string | null }> = [];
    let cursor = "";
    do {
      const { status, body } = await call("GET", `/jobs?include=request,result&limit=500${cursor}`);
      expect(status).toBe(200);
      pages.push(body);
      cursor = body.next_cursor ? `&cursor=${body.next_cursor}` : "";
    } while (cursor);
    expect(pages.map((page) => page.jobs.length)).toEqual([2, 2, 1]);
    const listed = pages.flatMap((page) => page.jobs);
    expect(listed.map((job) => job.id)).toEqual([...ids].reverse());
    for (const job of listed) expect(job.result!.message!.content).toEndWith("x".repeat(1_000));
    // Requests alone (1.5 MB each) fit in one page; without bodies there is no budget at all.
    expect((await call("GET", "/jobs?include=request")).body.jobs).toHaveLength(5);
    expect((await call("GET", "/jobs?limit=2")).body.next_cursor).toBe(ids[3]);
  });
});

describe("artifacts and the queue", () => {
  test("result.json and stream.ndjson, listed and downloadable", async () => {
    stack = await startInProcess();
    const { body } = await call("POST", "/jobs", chatJob("keep it"));
    await waitForState(body.id, "done");
    const list = await call("GET", `/jobs/${body.id}/artifacts`);
    expect(list.body.artifacts.map((a: { name: string }) => a.name)).toEqual(["result.json", "stream.ndjson"]);
    const stream = await stack.fetch(`/jobs/${body.id}/artifacts/stream.ndjson`);
    expect(stream.headers.get("content-type")).toBe("application/x-ndjson");
    const lines = (await stream.text()).trim().split("\n");
    expect(JSON.parse(lines.at(-1)!).done).toBe(true);
    const result = await stack.fetch(`/jobs/${body.id}/artifacts/result.json`);
    expect(((await result.json()) as { message: { content: string } }).message.content).toBe("You said: keep it");
    expect((await call("GET", `/jobs/${body.id}/artifacts/nope.txt`)).status).toBe(404);
  });

  test("GET /queue: depth per model, the running job, resident models", async () => {
    stack = await startInProcess();
    stack.fake.hold();
    const arrived = stack.fake.nextArrival();
    await call("POST", "/jobs", chatJob("a b c d e f"));
    await arrived;
    await call("POST", "/jobs", chatJob("x"));
    await call("POST", "/jobs", { type: "generate", request: { model: "qwen3", prompt: "y" } });
    await stack.inventory.refresh();
    const queue = (await call("GET", "/queue")).body;
    expect(queue).toMatchObject({
      depth: 2,
      by_model: { "llama3.2": 1, qwen3: 1 },
      degraded: false,
      resident: ["llama3.2:latest"],
    });
    expect(queue.running).toMatchObject({ model: "llama3.2" });
  });

  test("a full queue answers 503 with Retry-After and Ollama's body", async () => {
    stack = await startInProcess({ env: { FOREMAN_MAX_QUEUE: "2" } });
    stack.fake.hold();
    const arrived = stack.fake.nextArrival();
    await call("POST", "/jobs", chatJob("a b c d"));
    await arrived;
    expect((await call("POST", "/jobs", chatJob("1"))).status).toBe(202);
    expect((await call("POST", "/jobs", chatJob("2"))).status).toBe(202);
    const full = await call("POST", "/jobs", chatJob("3"));
    expect(full.status).toBe(503);
    expect(full.headers.get("retry-after")).toMatch(/^\d+$/);
    expect(full.body).toEqual({ error: "server busy, please try again.  maximum pending requests exceeded" });
    const sync = await stack.fetch("/api/generate", {
      method: "POST",
      body: JSON.stringify({ model: "qwen3", prompt: "x" }),
    });
    expect(sync.status).toBe(503);
    expect(sync.headers.get("retry-after")).toMatch(/^\d+$/);
    expect(stack.store.queuedCount()).toBe(2);
  });
});

describe("bad input gets a 4xx with a clear error, and nothing is lost", () => {
  test("every route", async () => {
    stack = await startInProcess();
    const kept = (await call("POST", "/jobs", chatJob("keep me"))).body.id;
    const cases: Array<[string, string, unknown, number, string]> = [
      ["POST", "/jobs", "{not json", 400, "invalid JSON"],
      ["POST", "/jobs", "", 400, ""],
      ["POST", "/jobs", [1, 2], 400, ""],
      // Every field and query parameter says what is allowed (and what it got).
      [
        "POST",
        "/jobs",
        { type: "summarise", request: {} },
        400,
        'invalid field "type": must be one of "chat", "generate", "openai.chat", "openai.completion", "openai.responses", "openai.embeddings" or "anthropic.messages", not "summarise"',
      ],
      [
        "POST",
        "/jobs",
        { request: {} },
        400,
        'missing field "type": it is required and must be one of "chat", "generate", "openai.chat", "openai.completion", "openai.responses", "openai.embeddings" or "anthropic.messages"',
      ],
      [
        "POST",
        "/jobs",
        { type: "chat" },
        400,
        'missing field "request": it is required and must be an object (The Ollama request',
      ],
      ["POST", "/jobs", { type: "chat", request: "hi" }, 400, 'invalid field "request": must be an object, not "hi" (The Ollama'],
      [
        "POST",
        "/jobs",
        chatJob("x", { priority: 1.5 }),
        400,
        'invalid field "priority": must be an integer from -1000 to 1000, not 1.5',
      ],
      ["POST", "/jobs", chatJob("x", { priority: 99999 }), 400, '"priority": must be an integer from -1000 to 1000, not 99999'],
      ["POST", "/jobs", chatJob("x", { priority: "5" }), 400, '"priority": must be an integer from -1000 to 1000, not "5"'],
      ["POST", "/jobs", chatJob("x", { webhook: "http://x" }), 400, 'invalid field "webhook": must be an object, not "http://x"'],
      [
        "POST",
        "/jobs",
        chatJob("x", { webhook: {} }),
        400,
        'missing field "webhook.url": it is required and must be a string (http or https',
      ],
      ["POST", "/jobs", chatJob("x", { webhook: { url: "ftp://x" } }), 400, "http or https"],
      [
        "POST",
        "/jobs",
        chatJob("x", { webhook: { url: "http://x", secret: "plain" } }),
        400,
        'invalid field "webhook.secret": must be a Standard Webhooks secret: "whsec_" followed by base64, not "plain"',
      ],
      [
        "POST",
        "/jobs",
        chatJob("x", { idempotency_key: "" }),
        400,
        '"idempotency_key": must be a string of 1 to 255 characters, not ""',
      ],
      [
        "POST",
        "/jobs",
        chatJob("x", { idempotency_key: "k".repeat(256) }),
        400,
        '"idempotency_key": must be a string of 1 to 255 characters',
      ],
      ["POST", "/jobs", { type: "chat", request: { messages: [] } }, 400, "model is required"],
      ["POST", "/jobs", { type: "chat", request: { model: "llama3.2", messages: [{ role: 1 }] } }, 400, "messages.0.role"],
      ["POST", "/jobs", { type: "generate", request: { model: "ghost", prompt: "x" } }, 404, "model 'ghost' not found"],
      ["GET", "/jobs?limit=0", undefined, 400, 'invalid query parameter "limit": must be an integer from 1 to 500, not 0'],
      ["GET", "/jobs?limit=501", undefined, 400, 'invalid query parameter "limit": must be an integer from 1 to 500, not 501'],
      ["GET", "/jobs?limit=abc", undefined, 400, 'invalid query parameter "limit": must be an integer from 1 to 500, not "abc"'],
      ["GET", "/jobs?limit=2.5", undefined, 400, 'invalid query parameter "limit": must be an integer from 1 to 500'],
      [
        "GET",
        "/jobs?cursor=not-a-cursor",
        undefined,
        400,
        'invalid query parameter "cursor": must be the next_cursor of a previous page (a 26-character ULID), not "not-a-cursor"',
      ],
      [
        "GET",
        "/jobs?state=sleeping",
        undefined,
        400,
        'invalid query parameter "state": must be one of "queued", "loading", "working", "done", "failed" or "canceled", not "sleeping"',
      ],
      [
        "GET",
        "/jobs?type=embed",
        undefined,
        400,
        'invalid query parameter "type": must be one of "chat", "generate", "openai.chat", "openai.completion", "openai.responses", "openai.embeddings" or "anthropic.messages", not "embed"',
      ],
      ["GET", "/jobs?model=", undefined, 400, 'invalid query parameter "model": must be a non-empty string, not ""'],
      ["GET", "/jobs/nope", undefined, 404, "job not found"],
      ["DELETE", "/jobs/nope", undefined, 404, "job not found"],
      ["GET", "/jobs/nope/events", undefined, 404, "job not found"],
      ["GET", "/jobs/nope/artifacts", undefined, 404, "job not found"],
      ["GET", "/jobs/nope/artifacts/result.json", undefined, 404, "job not found"],
      ["PATCH", "/jobs", {}, 404, ""],
    ];
    for (const [method, path, body, status, text] of cases) {
      const response = await call(method, path, body);
      expect({ method, path, body, status: response.status }).toEqual({ method, path, body, status });
      expect(response.headers.get("content-type")).toContain("application/json");
      expect(response.body.error).toBeString();
      expect(response.body.error).toContain(text);
    }
    await waitForState(kept, "done");
    expect((await call("GET", "/jobs")).body.jobs.map((j: Job) => j.id)).toEqual([kept]);
  });
});
