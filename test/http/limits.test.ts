// Bounded memory for big work: FOREMAN_MAX_BODY answered as a JSON 413 in each API's shape (declared
// length, chunked body, a raw socket that is still sending), FOREMAN_MAX_RESULT failing a job whose answer
// outgrows it, and job list pages that carry summaries unless they ask for the bodies.
import { afterEach, describe, expect, test } from "bun:test";
import { connect } from "node:net";
import { type Stack, startStack, until } from "../harness";

let stack: Stack | undefined;
afterEach(async () => {
  await stack?.stop();
  stack = undefined;
});

const MAX = 100_000;
const big = "x".repeat(MAX + 1);
const bodies: Array<[string, unknown, (body: any) => string]> = [
  ["/api/chat", { model: "llama3.2", messages: [{ role: "user", content: big }] }, (b) => b.error],
  ["/api/generate", { model: "llama3.2", prompt: big }, (b) => b.error],
  ["/v1/chat/completions", { model: "llama3.2", messages: [{ role: "user", content: big }] }, (b) => b.error.message],
  ["/v1/messages", { model: "llama3.2", max_tokens: 5, messages: [{ role: "user", content: big }] }, (b) => b.error.message],
  ["/jobs", { type: "chat", request: { model: "llama3.2", messages: [{ role: "user", content: big }] } }, (b) => b.error],
];

describe("FOREMAN_MAX_BODY", () => {
  test("a body over the limit is a JSON 413 in the route's API shape, with or without a Content-Length", async () => {
    stack = await startStack({ env: { FOREMAN_MAX_BODY: String(MAX) } });
    for (const [path, body, message] of bodies) {
      for (const chunked of [false, true]) {
        const text = JSON.stringify(body);
        const payload = chunked
          ? new ReadableStream({
              start(controller) {
                // Several pieces, as a client streaming its upload sends them.
                for (let i = 0; i < text.length; i += 16_384)
                  controller.enqueue(new TextEncoder().encode(text.slice(i, i + 16_384)));
                controller.close();
              },
            })
          : text;
        const response = await fetch(`${stack.foreman.url}${path}`, { method: "POST", body: payload });
        expect([path, chunked, response.status]).toEqual([path, chunked, 413]);
        expect(response.headers.get("content-type")).toContain("application/json");
        expect(message(await response.json())).toContain(`the limit is ${MAX} bytes`);
      }
    }
    expect(stack.foreman.jobs.store.listJobs({ limit: 10 })).toEqual([]);
  });

  test("a model blob (ollama create from a GGUF) is not limited: it streams on to Ollama", async () => {
    stack = await startStack({ env: { FOREMAN_MAX_BODY: String(MAX) } });
    const data = new Uint8Array(MAX * 3).map((_, i) => i % 251);
    const digest = `sha256:${new Bun.CryptoHasher("sha256").update(data).digest("hex")}`;
    const upload = await fetch(`${stack.foreman.url}/api/blobs/${digest}`, { method: "POST", body: data });
    expect(upload.status).toBe(201);
    expect(stack.fake.blobs.get(digest)).toBe(data.length);
    // Only the path decides: "/api/blobs/" or "/v1/files" in a query string lifts no limit.
    for (const path of ["/api/chat?x=/api/blobs/", "/api/chat?/v1/files"]) {
      const response = await fetch(`${stack.foreman.url}${path}`, { method: "POST", body: JSON.stringify(bodies[0]![1]) });
      expect([path, response.status]).toEqual([path, 413]);
    }
  });

  test("a chunked body under the limit is served whole", async () => {
    stack = await startStack({ env: { FOREMAN_MAX_BODY: String(MAX) } });
    const text = JSON.stringify({ model: "llama3.2", messages: [{ role: "user", content: "in two pieces" }], stream: false });
    const payload = new ReadableStream({
      start(controller) {
        controller.enqueue(new TextEncoder().encode(text.slice(0, 20)));
        controller.enqueue(new TextEncoder().encode(text.slice(20)));
        controller.close();
      },
    });
    const response = await fetch(`${stack.foreman.url}/api/chat`, { method: "POST", body: payload });
    expect(response.status).toBe(200);
    expect(((await response.json()) as { message: { content: string } }).message.content).toBe("You said: in two pieces");
  });

  test("over a raw socket, a client still sending a declared 10 MB body reads the JSON 413", async () => {
    stack = await startStack({ env: { FOREMAN_MAX_BODY: String(MAX) } });
    const { port } = stack.foreman;
    const answer = await new Promise<string>((resolve, reject) => {
      let received = "";
      const socket = connect(port, "127.0.0.1", () => {
        socket.write(
          `POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ${10 * 1024 * 1024}\r\n\r\n`,
        );
        socket.write("x".repeat(64 * 1024)); // Part of the body; the rest never comes.
      });
      socket.on("data", (data) => {
        received += data.toString();
        if (/\r\n\r\n[\s\S]*\}$/.test(received)) (socket.destroy(), resolve(received));
      });
      socket.on("error", reject);
      socket.on("close", () => resolve(received));
    });
    expect(answer).toStartWith("HTTP/1.1 413");
    const json = JSON.parse(answer.slice(answer.indexOf("\r\n\r\n") + 4));
    expect(json.error.message).toContain(`request body too large: ${10 * 1024 * 1024} bytes`);
  });
});

describe("FOREMAN_MAX_RESULT", () => {
  test("an answer that outgrows the limit fails its job with 413; its waiting client gets the 413", async () => {
    stack = await startStack({ env: { FOREMAN_MAX_RESULT: "2000" } });
    const words = "word ".repeat(600);
    const response = await fetch(`${stack.foreman.url}/api/chat`, {
      method: "POST",
      body: JSON.stringify({ model: "llama3.2", messages: [{ role: "user", content: words }], stream: false }),
    });
    expect(response.status).toBe(413);
    expect(((await response.json()) as { error: string }).error).toContain("FOREMAN_MAX_RESULT (2000 bytes)");
    const job = stack.foreman.jobs.store.getJob(response.headers.get("x-foreman-job-id")!)!;
    expect([job.state, job.errorStatus, job.attempts, job.result]).toEqual(["failed", 413, 1, null]);
    // Under the limit, the same route answers as ever.
    const small = await fetch(`${stack.foreman.url}/api/chat`, {
      method: "POST",
      body: JSON.stringify({ model: "llama3.2", messages: [{ role: "user", content: "short" }], stream: false }),
    });
    expect(small.status).toBe(200);
  });
});

describe("job list pages", () => {
  test("carry summaries, and the request or result only when ?include= asks", async () => {
    stack = await startStack();
    const post = await fetch(`${stack.foreman.url}/jobs`, {
      method: "POST",
      body: JSON.stringify({ type: "chat", request: { model: "llama3.2", messages: [{ role: "user", content: "listed" }] } }),
    });
    const { id } = (await post.json()) as { id: string };
    const get = async (query: string) => {
      const response = await fetch(`${stack!.foreman.url}/jobs${query}`);
      return { status: response.status, body: (await response.json()) as any };
    };
    await until(async () => (await get("?state=done")).body.jobs.length === 1, 10_000, "the job to finish");
    const plain = (await get("")).body.jobs[0];
    expect(plain.id).toBe(id);
    expect(plain.state).toBe("done");
    expect("result" in plain || "request" in plain).toBe(false);
    const withResult = (await get("?include=result")).body.jobs[0];
    expect(withResult.result.message.content).toBe("You said: listed");
    expect("request" in withResult).toBe(false);
    const both = (await get("?include=request,result")).body.jobs[0];
    expect(both.request).toEqual({ model: "llama3.2", messages: [{ role: "user", content: "listed" }] });
    expect(both.result.message.content).toBe("You said: listed");
    // The job view itself is unchanged: it carries the result.
    const view = (await (await fetch(`${stack.foreman.url}/jobs/${id}`)).json()) as any;
    expect(view.result.message.content).toBe("You said: listed");
    const bad = await get("?include=everything");
    expect(bad.status).toBe(400);
    expect(bad.body.error).toContain("a comma list of request, result");
  });
});
