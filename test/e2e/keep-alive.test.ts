// Keep-alive after a long wait, on raw node:net sockets against the compiled binary: a client whose job
// waited past Bun.serve's idle timeout (10 s, checked in ticks of a few seconds) in the queue is answered,
// and its connection stays alive for its next request, as a client library's pool expects; once answered,
// the idle timeout is back, so that same connection left idle is closed by foreman. Whole answers and
// relayed streams (NDJSON and SSE) alike. Timing is bounded loosely: the machine is shared.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { type Socket, connect } from "node:net";
import { FakeOllama } from "../fake-ollama";
import { type ForemanProcess, foremanEnv, spawnForeman, tempDir, until } from "../harness";

/** Past the idle timeout and its tick: a connection with the timeout still on would be cut by then. */
const WAIT_MS = 16_000;
/** The idle timeout, Bun's tick, and a margin for a loaded machine. */
const CLOSED_WITHIN_MS = 25_000;

let fake: FakeOllama;
let foreman: ForemanProcess;
const dir = tempDir();

beforeAll(async () => {
  fake = new FakeOllama().start();
  foreman = await spawnForeman(foremanEnv(fake.url, dir.path));
});
afterAll(async () => {
  foreman?.process.kill("SIGTERM");
  await foreman?.process.exited;
  await fake?.stop();
  dir.cleanup();
});

interface Answer {
  status: number;
  headers: Map<string, string>;
  body: string;
}

/** One persistent HTTP/1.1 connection: requests in turn, answers parsed by Content-Length or chunks. */
class Connection {
  readonly closed: Promise<number>;
  #buffer = Buffer.alloc(0);
  #wake: (() => void) | undefined;
  #isClosed = false;
  readonly #socket: Socket;

  private constructor(socket: Socket, closed: Promise<number>) {
    this.#socket = socket;
    this.closed = closed;
    socket.on("data", (chunk: Buffer) => {
      this.#buffer = Buffer.concat([this.#buffer, chunk]);
      this.#wake?.();
    });
    void closed.then(() => {
      this.#isClosed = true;
      this.#wake?.();
    });
  }

  static open(port: number): Promise<Connection> {
    return new Promise((resolve, reject) => {
      let closedAt!: (at: number) => void;
      const closed = new Promise<number>((r) => (closedAt = r));
      const socket = connect(port, "127.0.0.1", () => resolve(new Connection(socket, closed)));
      socket.on("error", () => {});
      socket.on("close", () => closedAt(performance.now()));
      socket.once("error", reject);
    });
  }

  get isClosed(): boolean {
    return this.#isClosed;
  }

  destroy(): void {
    this.#socket.destroy();
  }

  async post(path: string, body: unknown): Promise<Answer> {
    const text = JSON.stringify(body);
    this.#socket.write(
      [
        `POST ${path} HTTP/1.1`,
        "Host: 127.0.0.1",
        "Content-Type: application/json",
        `Content-Length: ${Buffer.byteLength(text)}`,
        "",
        text,
      ].join("\r\n"),
    );
    const head = await this.#until(() => {
      const end = this.#buffer.indexOf("\r\n\r\n");
      return end < 0 ? undefined : end;
    });
    const [statusLine, ...lines] = this.#buffer.subarray(0, head).toString("latin1").split("\r\n");
    this.#buffer = this.#buffer.subarray(head + 4);
    const headers = new Map(
      lines.map((line) => [line.slice(0, line.indexOf(":")).toLowerCase(), line.slice(line.indexOf(":") + 1).trim()]),
    );
    const status = Number(statusLine!.split(" ")[1]);
    const length = headers.get("content-length");
    if (length !== undefined) {
      const n = Number(length);
      await this.#until(() => (this.#buffer.length >= n ? true : undefined));
      const answer = this.#buffer.subarray(0, n).toString("utf8");
      this.#buffer = this.#buffer.subarray(n);
      return { status, headers, body: answer };
    }
    expect(headers.get("transfer-encoding")).toBe("chunked");
    const parts: Buffer[] = [];
    for (;;) {
      const line = await this.#until(() => {
        const end = this.#buffer.indexOf("\r\n");
        return end < 0 ? undefined : end;
      });
      const size = parseInt(this.#buffer.subarray(0, line).toString("latin1"), 16);
      await this.#until(() => (this.#buffer.length >= line + 2 + size + 2 ? true : undefined));
      parts.push(this.#buffer.subarray(line + 2, line + 2 + size));
      this.#buffer = this.#buffer.subarray(line + 2 + size + 2);
      if (size === 0) return { status, headers, body: Buffer.concat(parts).toString("utf8") };
    }
  }

  async #until<T>(ready: () => T | undefined): Promise<T> {
    for (;;) {
      const value = ready();
      if (value !== undefined) return value;
      if (this.#isClosed) throw new Error("the connection was closed before the answer was complete");
      await new Promise<void>((resolve) => (this.#wake = resolve));
    }
  }
}

const chat = (content: string, stream: boolean) => ({ model: "llama3.2", messages: [{ role: "user", content }], stream });

/** The next request on `connection`, and what each API's answer must hold. */
async function expectServedAgain(connection: Connection): Promise<void> {
  const ndjson = await connection.post("/api/chat", chat("again", true));
  expect(ndjson.status).toBe(200);
  expect(ndjson.headers.get("connection")).not.toBe("close");
  const records = ndjson.body
    .trim()
    .split("\n")
    .map((line) => JSON.parse(line) as { done: boolean });
  expect(records.at(-1)!.done).toBe(true);

  const sse = await connection.post("/v1/chat/completions", chat("and again", true));
  expect(sse.status).toBe(200);
  expect(sse.headers.get("connection")).not.toBe("close");
  expect(sse.body.trim().endsWith("data: [DONE]")).toBe(true);

  const whole = await connection.post("/v1/messages", {
    model: "llama3.2",
    max_tokens: 50,
    messages: [{ role: "user", content: "once more" }],
  });
  expect(whole.status).toBe(200);
  expect(whole.headers.get("connection")).not.toBe("close");
  expect(JSON.parse(whole.body)).toMatchObject({ type: "message", content: [{ type: "text", text: "You said: once more" }] });
}

test("a whole answer and a stream that waited past the idle timeout keep their connections alive for the next requests, which the idle timeout then closes", async () => {
  const port = Number(new URL(foreman.url).port);
  const release = fake.hold();
  const streamed = await Connection.open(port);
  const whole = await Connection.open(port);
  try {
    // Both wait silently: the first at the GPU (held), the second in the queue behind it.
    const streamedAnswer = streamed.post("/api/chat", chat("first", true));
    await fake.nextArrival();
    const wholeAnswer = whole.post("/api/chat", chat("second", false));
    await until(
      async () => ((await (await fetch(`${foreman.url}/queue`)).json()) as { depth: number }).depth === 1,
      5000,
      "the second job queued",
    );
    await Bun.sleep(WAIT_MS);
    expect([streamed.isClosed, whole.isClosed]).toEqual([false, false]);
    release();

    const first = await streamedAnswer;
    expect(first.status).toBe(200);
    expect(first.headers.get("content-type")).toStartWith("application/x-ndjson");
    expect(first.headers.get("connection")).not.toBe("close");
    expect(first.body).toContain('"done":true');
    const second = await wholeAnswer;
    expect(second.status).toBe(200);
    expect(second.headers.get("connection")).not.toBe("close");
    expect(JSON.parse(second.body)).toMatchObject({ done: true, message: { content: "You said: second" } });

    await Promise.all([expectServedAgain(streamed), expectServedAgain(whole)]);
    const servedAt = performance.now();
    // Idle now, with the timeout back: foreman closes both (not the client, which never does here).
    const closedIn = await Promise.race([
      Promise.all([streamed.closed, whole.closed]).then((at) => Math.max(...at) - servedAt),
      Bun.sleep(CLOSED_WITHIN_MS).then(() => Infinity),
    ]);
    if (!(closedIn < CLOSED_WITHIN_MS)) console.log(`idle connections still open after ${CLOSED_WITHIN_MS} ms`);
    expect(closedIn).toBeLessThan(CLOSED_WITHIN_MS);
  } finally {
    release();
    streamed.destroy();
    whole.destroy();
  }
}, 90_000);
