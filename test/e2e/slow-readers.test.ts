// Slow, against the binary with raw sockets: clients that stop reading big streamed answers. What each
// costs foreman is bounded (the GPU never waits for them; past a backlog they are relayed the rest from
// the stored stream), and each still gets every byte, exactly, once it reads again.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { readFileSync } from "node:fs";
import { type Socket, connect } from "node:net";
import { FakeOllama } from "../fake-ollama";
import { type ForemanProcess, foremanEnv, spawnForeman, tempDir, until } from "../harness";

const READERS = 6;
/** Tokens per answer: about 37 MB of NDJSON records each. */
const TOKENS = 390_000;
/** The bound asserted on foreman's resident memory while the readers are paused, in MB. */
const RSS_BOUND_MB = 300;
let fake: FakeOllama;
let foreman: ForemanProcess;
let dir: ReturnType<typeof tempDir>;
let dbPath: string;

beforeAll(async () => {
  fake = new FakeOllama().start();
  dir = tempDir();
  const env = foremanEnv(fake.url, dir.path, { FOREMAN_LOG_LEVEL: "error" });
  dbPath = env.FOREMAN_DB!;
  foreman = await spawnForeman(env);
});
afterAll(async () => {
  foreman?.process.kill("SIGTERM");
  await foreman?.process.exited;
  await fake?.stop();
  dir?.cleanup();
});

const rssMb = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${foreman.process.pid}/status`, "utf8"))![1]) / 1024;

/** A streaming /api/generate client that reads its first bytes, then stops reading until `resume()`. */
function pausedReader(port: number, n: number) {
  const body = JSON.stringify({ model: "llama3.2", prompt: `reader-${n}`, options: { num_predict: TOKENS } });
  const received: Buffer[] = [];
  let closed!: () => void;
  const done = new Promise<void>((resolve) => (closed = resolve));
  const socket: Socket = connect(port, "127.0.0.1", () =>
    socket.write(
      `POST /api/generate HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\ncontent-type: application/json\r\n` +
        `content-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
    ),
  );
  socket.on("data", (data: Buffer) => {
    received.push(data);
    if (received.length === 1) socket.pause();
  });
  socket.on("end", () => closed());
  return {
    resume() {
      socket.resume();
      return done;
    },
    /** The response's job id and its body, de-chunked. */
    answer(): { jobId: string; body: Buffer } {
      const raw = Buffer.concat(received);
      const split = raw.indexOf("\r\n\r\n");
      const head = raw.subarray(0, split).toString();
      expect(head).toStartWith("HTTP/1.1 200");
      expect(head.toLowerCase()).toContain("transfer-encoding: chunked");
      const parts: Buffer[] = [];
      for (let at = split + 4; ;) {
        const lineEnd = raw.indexOf("\r\n", at);
        const size = parseInt(raw.subarray(at, lineEnd).toString(), 16);
        if (size === 0) break;
        parts.push(raw.subarray(lineEnd + 2, lineEnd + 2 + size));
        at = lineEnd + 2 + size + 2;
      }
      return { jobId: /x-foreman-job-id: (\S+)/i.exec(head)![1]!, body: Buffer.concat(parts) };
    },
  };
}

test(`${READERS} clients paused on ${TOKENS}-token streamed answers keep foreman under ${RSS_BOUND_MB} MB, and get every byte`, async () => {
  const port = Number(new URL(foreman.url).port);
  const before = rssMb();
  const readers = Array.from({ length: READERS }, (_, n) => pausedReader(port, n));
  const db = new Database(dbPath, { readonly: true });
  const ended = () => db.query<{ n: number }, []>("SELECT count(*) AS n FROM jobs WHERE state = 'done'").get()!.n;
  // The GPU does not wait for the readers: every answer is generated and stored while they are paused.
  await until(() => ended() === READERS, 120_000, "every answer to be generated");
  await Bun.sleep(1000);
  const paused = rssMb();
  if (process.env.FOREMAN_REPORT)
    console.log(`RSS: ${before.toFixed(0)} MB idle, ${paused.toFixed(0)} MB with ${READERS} paused readers`);

  await Promise.all(readers.map((reader) => reader.resume()));
  for (const reader of readers) {
    const { jobId, body } = reader.answer();
    const stored = await fetch(`${foreman.url}/jobs/${jobId}/artifacts/stream.ndjson`);
    const expected = Buffer.from(await stored.arrayBuffer());
    expect(body.byteLength).toBeGreaterThan(30_000_000);
    // Byte for byte what Ollama sent, though most of it came from the stored stream.
    expect(body.equals(expected)).toBe(true);
    expect(JSON.parse(body.subarray(body.lastIndexOf("\n", body.length - 2) + 1).toString())).toMatchObject({ done: true });
  }
  db.close();
  expect(paused).toBeLessThan(RSS_BOUND_MB);
}, 300_000);
