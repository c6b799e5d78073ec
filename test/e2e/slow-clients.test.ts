// Sockets that hold foreman without asking anything of it, on raw node:net sockets against the compiled
// binary with a token set: idle keep-alive connections, headers or a body that never complete, and bodies
// sent without the token. Bun.serve's idle timeout (10 s, checked in ticks of a few seconds) and its own
// header timeout close them; foreman lifts the timeout only for an authenticated wait (test/e2e/long-wait).
// Figures are printed only when a bound is missed: timing is never asserted tightly on a shared machine.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { type Socket, connect } from "node:net";
import { FakeOllama } from "../fake-ollama";
import { type ForemanProcess, foremanCommand, foremanEnv, spawnForeman, tempDir, until } from "../harness";

const TOKEN = "secret";
/** The idle timeout (10 s), Bun's tick, and a margin for a loaded machine. */
const CLOSED_WITHIN_MS = 25_000;

let fake: FakeOllama;
let foreman: ForemanProcess;
let dir: ReturnType<typeof tempDir>;
let port: number;

beforeAll(async () => {
  fake = new FakeOllama().start();
  dir = tempDir();
  // As a user's service might run it: 4096 open files (sh's ulimit, then exec, so the pid is foreman's).
  const [bin, ...rest] = foremanCommand();
  foreman = await spawnForeman(foremanEnv(fake.url, dir.path, { FOREMAN_TOKEN: TOKEN }), {
    command: ["sh", "-c", 'ulimit -n 4096 && exec "$0" "$@"', bin!, ...rest],
  });
  port = Number(new URL(foreman.url).port);
});
afterAll(async () => {
  foreman?.process.kill("SIGTERM");
  await foreman?.process.exited;
  await fake?.stop();
  dir?.cleanup();
});

/** A raw connection: what it received, and when the server closed it (ms after opening). */
interface Raw {
  socket: Socket;
  text: () => string;
  closed: Promise<number>;
}

function open(bytes = ""): Promise<Raw> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    let text = "";
    let closedAt: (ms: number) => void;
    const closed = new Promise<number>((r) => (closedAt = r));
    const socket = connect(port, "127.0.0.1", () => {
      if (bytes) socket.write(bytes);
      resolve({ socket, text: () => text, closed });
    });
    socket.on("data", (chunk) => (text += chunk.toString("latin1")));
    socket.on("error", () => {}); // A reset after a refusal is expected; `close` follows.
    socket.on("close", () => closedAt(performance.now() - started));
    socket.once("error", reject);
  });
}

/** Resolves with the ms until `raw` was closed, or Infinity if it still is open after `ms`. */
const closedWithin = (raw: Raw, ms: number) => Promise.race([raw.closed, Bun.sleep(ms).then(() => Infinity)]);

const get = (path: string, headers: string[] = []) =>
  [`GET ${path} HTTP/1.1`, `Host: 127.0.0.1:${port}`, ...headers, "", ""].join("\r\n");

function rssBytes(): number {
  const status = readFileSync(`/proc/${foreman.process.pid}/status`, "utf8");
  return Number(/^VmRSS:\s+(\d+) kB/m.exec(status)![1]) * 1024;
}

describe("connections that ask nothing are closed", () => {
  test("an idle keep-alive connection, headers that never end, a stalled body: each closed by foreman", async () => {
    const idle = await open(get("/healthz"));
    const headers = await open(`GET /queue HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAuthorization: Bearer ${TOKEN}\r\n`);
    const stalled = await open(
      `POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAuthorization: Bearer ${TOKEN}\r\nContent-Length: 100\r\n\r\n{"mo`,
    );
    const stalledChunked = await open(
      `POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAuthorization: Bearer ${TOKEN}\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{"mo\r\n`,
    );
    const times = await Promise.all([idle, headers, stalled, stalledChunked].map((raw) => closedWithin(raw, CLOSED_WITHIN_MS)));
    const named = { idle: times[0], headers: times[1], stalled: times[2], stalledChunked: times[3] };
    console.log(JSON.stringify(named));
    for (const ms of times) expect(ms, JSON.stringify(named)).toBeLessThan(CLOSED_WITHIN_MS);
    expect(idle.text()).toStartWith("HTTP/1.1 200");
    expect(fake.generations).toHaveLength(0);
  }, 60_000);

  test("a body without the token is refused at once, unread, and its connection closed", async () => {
    const declared = await open(`POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nContent-Length: 1000000\r\n\r\n{"model":`);
    const ms = await closedWithin(declared, 5_000);
    expect(declared.text()).toStartWith("HTTP/1.1 401");
    expect(declared.text().toLowerCase()).toContain("connection: close");
    expect(ms).toBeLessThan(5_000);
  });

  test("32 unauthenticated chunked senders of 63 MiB, never finishing, leave foreman's RSS within +50 MB", async () => {
    const before = rssBytes();
    const chunk = Buffer.alloc(64 * 1024, "a");
    const frame = Buffer.concat([Buffer.from(`${chunk.length.toString(16)}\r\n`), chunk, Buffer.from("\r\n")]);
    const senders = await Promise.all(
      Array.from({ length: 32 }, () =>
        open(
          `POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n`,
        ),
      ),
    );
    // Each writes its 63 MiB as fast as foreman takes it (never the last chunk), until foreman closes it.
    const sent = await Promise.all(
      senders.map(
        (raw) =>
          new Promise<number>((resolve) => {
            let bytes = 0;
            const pump = () => {
              while (!raw.socket.destroyed && bytes < 63 * 1024 * 1024) {
                bytes += chunk.length;
                if (!raw.socket.write(frame)) return void raw.socket.once("drain", pump);
              }
              resolve(bytes);
            };
            raw.closed.then(() => resolve(bytes));
            pump();
          }),
      ),
    );
    await Bun.sleep(1000);
    const after = rssBytes();
    const figures = `RSS ${(before / 2 ** 20).toFixed(0)} MiB -> ${(after / 2 ** 20).toFixed(0)} MiB, ${(sent.reduce((a, b) => a + b) / 2 ** 20).toFixed(0)} MiB offered`;
    // foreman refused each (401, which the reset of the unread bytes may keep from the client) and closed it.
    const closed = await Promise.all(senders.map((raw) => closedWithin(raw, 5_000)));
    for (const raw of senders) raw.socket.destroy();
    console.log(figures);
    expect(after - before, figures).toBeLessThan(50 * 1024 * 1024);
    expect(closed.filter((ms) => ms === Infinity)).toEqual([]);
    expect(fake.generations).toHaveLength(0);
  }, 60_000);

  test("an authenticated wait lifts the timeout for its own connection only, which stays alive after its answer", async () => {
    const body = JSON.stringify({ model: "llama3.2", messages: [{ role: "user", content: "hi" }], stream: false });
    const waiter = await open(
      [
        "POST /api/chat HTTP/1.1",
        `Host: 127.0.0.1:${port}`,
        `Authorization: Bearer ${TOKEN}`,
        `Content-Length: ${body.length}`,
        "",
        body,
      ].join("\r\n"),
    );
    try {
      await until(() => waiter.text().includes("You said: hi"), 5_000, "the answer");
      expect(waiter.text()).toStartWith("HTTP/1.1 200");
      // Kept alive for its next request (test/e2e/keep-alive.test.ts: until the idle timeout closes it). Before
      // the 4,000 idle connections below: they fill the keep-alive bound, past which answers close.
      expect(waiter.text().toLowerCase()).not.toContain("connection: close");
      expect(await closedWithin(waiter, 1_000)).toBe(Infinity);
    } finally {
      waiter.socket.destroy();
    }
  });

  test("4,000 idle keep-alive connections (foreman has 4,096 files): a client is served, and foreman closes them all", async () => {
    const idle: Raw[] = [];
    try {
      for (let i = 0; i < 4000; i += 200) {
        idle.push(...(await Promise.all(Array.from({ length: 200 }, () => open(get("/healthz"))))));
      }
      const served = await fetch(`${foreman.url}/queue`, {
        headers: { authorization: `Bearer ${TOKEN}` },
        signal: AbortSignal.timeout(10_000),
      });
      expect(served.status).toBe(200);
      const times = await Promise.all(idle.map((raw) => closedWithin(raw, CLOSED_WITHIN_MS)));
      const stillOpen = times.filter((ms) => ms === Infinity).length;
      console.log(`slowest close ${Math.max(...times.filter(Number.isFinite)).toFixed(0)} ms`);
      expect(stillOpen, `slowest close ${Math.max(...times.filter(Number.isFinite)).toFixed(0)} ms`).toBe(0);
      // With the descriptors back, foreman serves as before.
      expect((await fetch(`${foreman.url}/healthz`)).status).toBe(200);
    } finally {
      for (const raw of idle) raw.socket.destroy();
    }
  }, 90_000);
});
