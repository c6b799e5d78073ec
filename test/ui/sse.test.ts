// The page's SSE reader (src/ui/sse.ts): events cut anywhere across reads, CRLF line ends, multi-line
// data, comments; and it cancels the body when its reader stops early.
import { expect, test } from "bun:test";
import { type SseEvent, readSse } from "../../src/ui/sse";

function body(parts: string[], onCancel: () => void = () => {}): ReadableStream<Uint8Array> {
  const encoder = new TextEncoder();
  return new ReadableStream({
    pull(controller) {
      const part = parts.shift();
      if (part === undefined) controller.close();
      else controller.enqueue(encoder.encode(part));
    },
    cancel: onCancel,
  });
}

async function all(stream: ReadableStream<Uint8Array>): Promise<SseEvent[]> {
  const events: SseEvent[] = [];
  for await (const event of readSse(stream)) events.push(event);
  return events;
}

test("events split across reads, CRLF, multi-line data and comments", async () => {
  const text = ': keep-alive\n\nevent: snapshot\ndata: {"a":1}\n\nevent: tokens\r\ndata: one\r\ndata:two\r\n\r\ndata: plain\n\n';
  const expected = [
    { event: "snapshot", data: '{"a":1}' },
    { event: "tokens", data: "one\ntwo" },
    { event: "message", data: "plain" },
  ];
  expect(await all(body([text]))).toEqual(expected);
  // Every byte in a read of its own (a CRLF cut in two included).
  expect(await all(body([...text]))).toEqual(expected);
  // An event without its blank line at the end is not an event.
  expect(await all(body(["data: cut"]))).toEqual([]);
});

test("stopping early cancels the body, so the server drops the watcher", async () => {
  let canceled = false;
  const events = readSse(body(["data: 1\n\n", "data: 2\n\n"], () => (canceled = true)));
  expect((await events.next()).value).toEqual({ event: "message", data: "1" });
  await events.return(undefined);
  expect(canceled).toBe(true);
});
