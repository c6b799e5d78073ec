// POST /v1/files against the compiled binary over raw sockets: a delimiter line padded without end is
// refused at its bound (not re-read per packet), a chunked upload is refused as it streams past
// FOREMAN_MAX_FILE, and every such refusal is OpenAI's invalid_request_error.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { FakeOllama } from "../fake-ollama";
import { type ForemanProcess, foremanEnv, spawnForeman, tempDir } from "../harness";

const MAX_FILE = 1024 * 1024;
let fake: FakeOllama;
let dir: ReturnType<typeof tempDir>;
let foreman: ForemanProcess;
/** At the defaults (FOREMAN_MAX_FILE 200 MiB). */
let defaults: ForemanProcess;
beforeAll(async () => {
  fake = new FakeOllama().start();
  dir = tempDir();
  foreman = await spawnForeman(foremanEnv(fake.url, dir.path, { FOREMAN_MAX_FILE: String(MAX_FILE) }));
  defaults = await spawnForeman(foremanEnv(fake.url, dir.path, { FOREMAN_DB: `${dir.path}/defaults.db` }));
});
afterAll(async () => {
  for (const server of [foreman, defaults]) {
    server.process.kill("SIGTERM");
    await server.process.exited;
  }
  await fake.stop();
  dir.cleanup();
});

/**
 * Sends `head`, then `piece` over and over (up to `total` bytes, then `tail`) until the server answers;
 * resolves with the answer's status and body, how long the answer took, how many bytes had gone, and the
 * server's peak RSS (MB) by then. A null `tail` never ends the body: only an answer given while the body
 * streams can come then (how many bytes a client got out before the server's reading caught up says
 * nothing on a loaded loopback).
 */
function sendUntilAnswered(server: ForemanProcess, head: string, piece: Buffer, total: number, tail: string | null = "") {
  const { port, hostname } = new URL(server.url);
  return new Promise<{ status: number; body: string; ms: number; sent: number; peakMb: number }>((resolve, reject) => {
    const started = performance.now();
    const socket: Socket = connect(Number(port), hostname);
    let answer = "";
    let sent = 0;
    let answered = false;
    const pump = () => {
      while (!answered && sent < total) {
        sent += piece.length;
        if (!socket.write(piece)) return void socket.once("drain", pump);
      }
      if (!answered && tail !== null) socket.write(tail);
    };
    socket.on("connect", () => {
      socket.write(head);
      pump();
    });
    socket.on("data", (data) => {
      answer += data.toString("latin1");
      const end = answer.indexOf("\r\n\r\n");
      const length = /content-length: (\d+)/i.exec(answer)?.[1];
      if (end >= 0 && length !== undefined && answer.length >= end + 4 + Number(length)) {
        answered = true;
        const ms = performance.now() - started;
        socket.destroy();
        const peakMb = Number(/VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${server.process.pid}/status`, "utf8"))![1]) / 1024;
        resolve({ status: Number(answer.split(" ")[1]), body: answer.slice(end + 4), ms, sent, peakMb });
      }
    });
    socket.on("error", (error) => {
      if (!answered) reject(error);
    });
  });
}

const boundary = "b0undary";
const typeHeader = `content-type: multipart/form-data; boundary=${boundary}\r\n`;

test("a delimiter line padded to 100 MiB is refused at its bound, at once, with a 400 that says the bound", async () => {
  const total = 100 * 1024 * 1024;
  const head =
    `POST /v1/files HTTP/1.1\r\nhost: 127.0.0.1\r\n${typeHeader}content-length: ${total + boundary.length + 2}\r\n\r\n` +
    `--${boundary}`;
  // The body's last two bytes are never sent: the answer must come while the padding streams.
  const { status, body, ms, sent, peakMb } = await sendUntilAnswered(defaults, head, Buffer.alloc(64 * 1024, " "), total, null);
  if (process.env.UPLOADS_REPORT) console.log({ ms, sent, peakMb });
  expect(status).toBe(400);
  const error = JSON.parse(body).error;
  expect(error.type).toBe("invalid_request_error");
  expect(error.message).toContain("at most 1024 bytes of padding");
  // Measured: tens of ms (main: 21 s of CPU and 1.2 GB RSS). Generous: the machine is shared.
  expect(ms).toBeLessThan(5000);
});

test.each(["file", "extra"])(
  "a chunked upload is refused as it streams past FOREMAN_MAX_FILE (a %s part), with a 413 naming the limit",
  async (name) => {
    const total = 50 * MAX_FILE;
    const start = `--${boundary}\r\ncontent-disposition: form-data; name="${name}"; filename="a.jsonl"\r\n\r\n`;
    const head =
      `POST /v1/files HTTP/1.1\r\nhost: 127.0.0.1\r\n${typeHeader}transfer-encoding: chunked\r\n\r\n` +
      `${start.length.toString(16)}\r\n${start}\r\n`;
    const data = Buffer.alloc(64 * 1024, "x");
    const chunk = Buffer.concat([Buffer.from(`${data.length.toString(16)}\r\n`), data, Buffer.from("\r\n")]);
    // The chunked body never ends (no last chunk): the 413 must come while it streams.
    const { status, body } = await sendUntilAnswered(foreman, head, chunk, total, null);
    expect(status).toBe(413);
    const error = JSON.parse(body).error;
    expect(error).toMatchObject({ type: "invalid_request_error", param: null, code: null });
    expect(error.message).toContain(`${MAX_FILE} bytes`);
    expect(error.message).toContain("FOREMAN_MAX_FILE");
    // Nothing of it is kept.
    const list = await (await fetch(`${foreman.url}/v1/files`)).json();
    expect(list.data).toEqual([]);
  },
);

test("an upload whose declared length is over FOREMAN_MAX_FILE is an invalid_request_error 413", async () => {
  const form = new FormData();
  form.append("purpose", "batch");
  form.append("file", new Blob([new Uint8Array(2 * MAX_FILE)]), "big.jsonl");
  const response = await fetch(`${foreman.url}/v1/files`, { method: "POST", body: form });
  expect(response.status).toBe(413);
  const error = (await response.json()).error;
  expect(error.type).toBe("invalid_request_error");
  expect(error.message).toContain("FOREMAN_MAX_FILE");
});
