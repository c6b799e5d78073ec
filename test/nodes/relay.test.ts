// The node-to-node relay's parts in one process: the frame format read back from a stream cut anywhere, and the
// running node's side (RelaySource) over a real JobEventHub: what a relay that connects late is given, what a
// slow one costs, when it ends, and who may ask. The two nodes together: test/e2e/pg-serve.test.ts.
import { expect, test } from "bun:test";
import fc from "fast-check";
import { createLogger } from "../../src/log";
import { FRAME, type Frame, FrameReader, encodeFrame } from "../../src/nodes/frames";
import { RelaySource } from "../../src/nodes/relay-source";
import { MAX_CLIENT_BACKLOG_BYTES } from "../../src/job-response";
import { JobEventHub } from "../../src/worker/job-events";

const TYPES = Object.values(FRAME);

test("frames read back whole and in order however the stream is cut", () => {
  fc.assert(
    fc.property(
      fc.array(fc.record({ type: fc.constantFrom(...TYPES), payload: fc.uint8Array({ maxLength: 300 }) }), { maxLength: 20 }),
      fc.array(fc.nat(), { maxLength: 10 }),
      (frames, cuts) => {
        const wire = Buffer.concat(frames.map((f) => encodeFrame(f.type, f.payload)));
        const points = [...new Set(cuts.map((c) => (wire.byteLength === 0 ? 0 : c % wire.byteLength)))].sort((x, y) => x - y);
        const reader = new FrameReader();
        const read: Frame[] = [];
        let from = 0;
        for (const point of [...points, wire.byteLength]) {
          read.push(...reader.push(wire.subarray(from, point)));
          from = point;
        }
        expect(reader.pending).toBe(0);
        expect(read.map((f) => [f.type, [...f.payload]])).toEqual(frames.map((f) => [f.type, [...f.payload]]));
      },
    ),
  );
});

test("a frame of a type this relay does not speak is refused, not guessed at", () => {
  const wire = encodeFrame(FRAME.chunk, new Uint8Array([1, 2]));
  wire[0] = 0x5a;
  expect(() => new FrameReader().push(wire)).toThrow("unknown relay frame type 0x5a");
});

const hubAndSource = () => {
  const hub = new JobEventHub(createLogger("error", "test", "json"));
  const source = new RelaySource(hub);
  source.secret = "s3cret";
  return { hub, source };
};
const bytes = (text: string) => new TextEncoder().encode(text);

/** Reads a relay's frames until it closes, or until `until` says stop. */
async function readFrames(response: Response, until: (frames: Frame[]) => boolean = () => false): Promise<Frame[]> {
  const reader = new FrameReader();
  const frames: Frame[] = [];
  for await (const chunk of response.body!) {
    frames.push(...reader.push(chunk));
    if (until(frames)) break;
  }
  return frames;
}
const text = (frame: Frame) => new TextDecoder().decode(frame.payload);

test("a relay that connects late gets the content type and the records so far, then each as it comes, then the end", async () => {
  const { hub, source } = hubAndSource();
  hub.emit("j1", { type: "state", state: "loading" });
  hub.emit("j1", { type: "state", state: "working", contentType: "application/x-ndjson" });
  hub.emit("j1", { type: "chunk", bytes: bytes("a\n") });
  hub.emit("j1", { type: "chunk", bytes: bytes("b\n") });
  const response = await source.serve("j1");
  expect(response.status).toBe(200);
  hub.emit("j1", { type: "chunk", bytes: bytes("c\n") });
  hub.jobEnded("j1");
  const frames = await readFrames(response);
  expect(frames.map((f) => [f.type, text(f)])).toEqual([
    [FRAME.state, "application/x-ndjson"],
    [FRAME.chunk, "a\n"],
    [FRAME.chunk, "b\n"],
    [FRAME.chunk, "c\n"],
    [FRAME.end, ""],
  ]);
  // Nothing outlives the job: a relay asked for it now is told it does not run here.
  expect(source.jobs()).toEqual([]);
  expect((await source.serve("j1")).status).toBe(404);
});

test("an attempt given back to the queue closes its relays without an end, and a new attempt starts afresh", async () => {
  const { hub, source } = hubAndSource();
  hub.emit("j2", { type: "state", state: "loading" });
  hub.emit("j2", { type: "chunk", bytes: bytes("first attempt\n") });
  const response = await source.serve("j2");
  hub.emit("j2", { type: "state", state: "queued" });
  const frames = await readFrames(response);
  expect(frames.map((f) => f.type)).toEqual([FRAME.chunk]);
  hub.emit("j2", { type: "state", state: "loading" });
  hub.emit("j2", { type: "chunk", bytes: bytes("second\n") });
  const again = await source.serve("j2");
  hub.jobEnded("j2");
  expect((await readFrames(again)).map(text)).toEqual(["second\n", ""]);
});

test("a relay asked for a job about to start here waits for its start; one that never starts is 404", async () => {
  const { hub, source } = hubAndSource();
  const pending = source.serve("j3");
  hub.emit("j3", { type: "state", state: "loading" });
  hub.emit("j3", { type: "chunk", bytes: bytes("x\n") });
  const response = await pending;
  expect(response.status).toBe(200);
  hub.jobEnded("j3");
  expect((await readFrames(response)).map((f) => f.type)).toEqual([FRAME.chunk, FRAME.end]);
  const started = performance.now();
  expect((await source.serve("never")).status).toBe(404);
  expect(performance.now() - started).toBeGreaterThanOrEqual(900);
});

test("what a relay costs is bounded: past a client's backlog a late one gets a gap, and a slow one too", async () => {
  const { hub, source } = hubAndSource();
  const mib = new Uint8Array(1024 * 1024).fill(0x61);
  hub.emit("big", { type: "state", state: "loading" });
  for (let i = 0; i < 5; i++) hub.emit("big", { type: "chunk", bytes: mib });
  // Late: the start was not kept past the backlog, so only a gap, then the end.
  const late = await source.serve("big");
  // Slow: connected, not read while 5 MiB more pass; what waits for it stays within the backlog.
  hub.emit("slow", { type: "state", state: "loading" });
  const slow = await source.serve("slow");
  for (let i = 0; i < 5; i++) hub.emit("slow", { type: "chunk", bytes: mib });
  hub.jobEnded("big");
  hub.jobEnded("slow");
  expect((await readFrames(late)).map((f) => f.type)).toEqual([FRAME.gap, FRAME.end]);
  const slowFrames = await readFrames(slow);
  expect(slowFrames.slice(-2).map((f) => f.type)).toEqual([FRAME.gap, FRAME.end]);
  expect(slowFrames.slice(0, -2).every((f) => f.type === FRAME.chunk)).toBe(true);
  const relayedBytes = slowFrames.reduce((sum, f) => sum + (f.type === FRAME.chunk ? f.payload.byteLength : 0), 0);
  expect(relayedBytes).toBeLessThanOrEqual(MAX_CLIENT_BACKLOG_BYTES);
  expect(relayedBytes).toBeGreaterThanOrEqual(MAX_CLIENT_BACKLOG_BYTES - mib.byteLength);
});

test("only the nodes' secret opens the relay, compared whole", () => {
  const { source } = hubAndSource();
  const asking = (authorization?: string) =>
    source.authorized(new Request("http://n/_foreman/relay/x", { headers: authorization ? { authorization } : {} }));
  expect(asking("Bearer s3cret")).toBe(true);
  for (const wrong of [undefined, "Bearer s3cre", "Bearer s3cret2", "bearer s3cret", "s3cret", "Bearer S3CRET"])
    expect(asking(wrong)).toBe(false);
  const unset = new RelaySource(new JobEventHub(createLogger("error", "test", "json")));
  expect(unset.authorized(new Request("http://n/", { headers: { authorization: "Bearer " } }))).toBe(false);
});
