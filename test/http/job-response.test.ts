// A client waiting on its job whose end the worker wrote before this thread read the row: it still gets
// the answer in the form it asked for. The worker runs on its own thread, so a short job can finish
// between the enqueue and the watch's first read; here that order is forced by answering only after the end.
import { afterEach, expect, test } from "bun:test";
import { type InProcessStack, startInProcess } from "../in-process";

let stack: InProcessStack | undefined;
afterEach(async () => {
  await stack?.stop();
  stack = undefined;
});

const CASES = [
  {
    type: "openai.chat",
    name: "stream.sse",
    contentType: "text/event-stream",
    body: { model: "llama3.2", stream: true, messages: [{ role: "user", content: "hi" }] },
  },
  {
    type: "chat",
    name: "stream.ndjson",
    contentType: "application/x-ndjson",
    body: { model: "llama3.2", messages: [{ role: "user", content: "hi" }] },
  },
] as const;

for (const { type, name, contentType, body } of CASES) {
  test(`${type}: a streaming client whose job ended before it was answered gets the stored stream, byte for byte`, async () => {
    stack = await startInProcess();
    const { job } = await stack.jobs.submit(type, body, { source: type === "chat" ? "ollama" : "openai" });
    const ended = await stack.ended(job.id);
    expect(ended.state).toBe("done");
    const response = await stack.jobs.respond(ended, true, { signal: new AbortController().signal });
    expect(response.headers.get("content-type")).toStartWith(contentType);
    const stored = stack.store.artifacts.get(job.id, name)!;
    expect(new Uint8Array(await response.arrayBuffer())).toEqual(new Uint8Array(stored.data));
  });
}

test("a client that did not ask for a stream gets the result body when its job ended first", async () => {
  stack = await startInProcess();
  const body = { model: "llama3.2", messages: [{ role: "user", content: "hi" }], stream: false };
  const { job } = await stack.jobs.submit("chat", body, { source: "ollama" });
  const ended = await stack.ended(job.id);
  const response = await stack.jobs.respond(ended, false, { signal: new AbortController().signal });
  expect(await response.json()).toMatchObject({ done: true, message: { content: "You said: hi" } });
});
