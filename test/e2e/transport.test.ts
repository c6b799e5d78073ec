// What only a real socket shows, against the compiled binary: a client that hangs up cancels its job
// (Bun turns the closed connection into the request's abort signal), and bodies past FOREMAN_MAX_BODY
// are refused whether or not they state their length. The routes themselves are tested in process
// (test/http).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { FakeOllama } from "../fake-ollama";
import { type ForemanProcess, foremanEnv, spawnForeman, tempDir, until } from "../harness";

const MAX_BODY = 1000;
let fake: FakeOllama;
let foreman: ForemanProcess;
let dir: ReturnType<typeof tempDir>;

beforeAll(async () => {
  fake = new FakeOllama().start();
  dir = tempDir();
  foreman = await spawnForeman(
    foremanEnv(fake.url, dir.path, { FOREMAN_MAX_BODY: String(MAX_BODY), FOREMAN_LOG_LEVEL: "error" }),
  );
});
afterAll(async () => {
  foreman?.process.kill("SIGTERM");
  await foreman?.process.exited;
  await fake?.stop();
  dir?.cleanup();
});

const chatBody = (content: string, extra: Record<string, unknown> = {}) =>
  JSON.stringify({ model: "llama3.2", messages: [{ role: "user", content }], ...extra });
const post = (path: string, body: BodyInit, init: RequestInit = {}) =>
  fetch(`${foreman.url}${path}`, { method: "POST", body, ...init });
const getJson = async (path: string) => (await fetch(`${foreman.url}${path}`)).json() as Promise<Record<string, any>>;
const contents = () => fake.seen.map((s) => (s.body.messages as { content: string }[])[0]!.content);

describe("a client that hangs up cancels its job", () => {
  test("while it is queued: the job never reaches Ollama", async () => {
    const release = fake.hold();
    const arrived = fake.nextArrival();
    const first = post("/api/chat", chatBody("hold the GPU", { stream: false }));
    await arrived;
    const controller = new AbortController();
    const second = post("/api/chat", chatBody("never sent"), { signal: controller.signal }).catch((error) => error);
    let queued: string | undefined;
    await until(async () => (queued = (await getJson("/jobs?state=queued")).jobs[0]?.id) !== undefined, 5000, "a queued job");
    controller.abort();
    expect(await second).toBeInstanceOf(Error);
    await until(async () => (await getJson(`/jobs/${queued}`)).state === "canceled", 5000, "the queued job to be canceled");
    release();
    expect((await first).status).toBe(200);
    // The loop takes jobs in order: had the canceled one run, it would come before this one.
    expect((await post("/api/chat", chatBody("after", { stream: false }))).status).toBe(200);
    expect(contents().slice(-2)).toEqual(["hold the GPU", "after"]);
    expect(contents()).not.toContain("never sent");
  });

  test("while it runs: its Ollama call is aborted, freeing the GPU", async () => {
    const release = fake.hold(1);
    const arrived = fake.nextArrival();
    const controller = new AbortController();
    const response = await post("/api/chat", chatBody("a b c d e f"), { signal: controller.signal });
    const id = response.headers.get("x-foreman-job-id")!;
    const seen = await arrived;
    await response.body!.getReader().read();
    controller.abort();
    await until(() => seen.aborted === true, 5000, "the upstream call to be aborted");
    release();
    expect((await getJson(`/jobs/${id}`)).state).toBe("canceled");
  });
});

describe("FOREMAN_MAX_BODY", () => {
  test("a body past it is a JSON 413 in the API's shape, whether it states its length or comes chunked", async () => {
    const before = fake.seen.length;
    const big = chatBody("x".repeat(MAX_BODY));
    const stated = await post("/api/chat", big);
    expect(stated.status).toBe(413);
    expect(await stated.json()).toEqual({
      error: `request body too large: ${big.length} bytes, the limit is ${MAX_BODY} bytes (FOREMAN_MAX_BODY)`,
    });
    const openai = await post("/v1/chat/completions", big);
    expect(openai.status).toBe(413);
    expect(((await openai.json()) as { error: { message: string } }).error.message).toContain("too large");
    // Sent chunked (no content-length): read up to the limit, then refused the same way.
    const chunked = new ReadableStream({
      start(controller) {
        controller.enqueue(new TextEncoder().encode(chatBody("y".repeat(MAX_BODY * 3))));
        controller.close();
      },
    });
    const cut = await post("/api/chat", chunked);
    expect(cut.status).toBe(413);
    expect(((await cut.json()) as { error: string }).error).toContain("FOREMAN_MAX_BODY");
    expect(fake.seen.length).toBe(before);
  });
});
