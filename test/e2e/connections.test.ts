// The bound on open connections (FOREMAN_MAX_CONNECTIONS) against the compiled binary, on raw sockets: past
// it requests get 503 and keep-alive stops, so a flood of sockets cannot take every file descriptor.
import { afterAll, afterEach, expect, test } from "bun:test";
import { readdirSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { FakeOllama } from "../fake-ollama";
import { type ForemanProcess, foremanCommand, foremanEnv, spawnForeman, tempDir, until } from "../harness";

const fake = new FakeOllama().start();
const dir = tempDir();
let foreman: ForemanProcess | undefined;
const sockets: Socket[] = [];

afterEach(async () => {
  for (const socket of sockets.splice(0)) socket.destroy();
  foreman?.process.kill();
  await foreman?.process.exited;
  foreman = undefined;
});
afterAll(async () => {
  await fake.stop();
  dir.cleanup();
});

const portOf = (process: ForemanProcess) => Number(new URL(process.url).port);

/** One request on a fresh socket, `Connection: close`: its status line, headers and body (status 0: no answer within 20 s). */
function once(port: number, head: string): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, "127.0.0.1", () => socket.write(`${head}\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`));
    let text = "";
    socket.setEncoding("utf8");
    socket.setTimeout(20_000, () => socket.destroy());
    socket.on("data", (chunk) => (text += chunk));
    socket.on("error", reject);
    socket.on("close", () => resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0), text }));
  });
}

const chat = (content: string) =>
  fetch(`${foreman!.url}/api/chat`, {
    method: "POST",
    body: JSON.stringify({ model: "llama3.2", messages: [{ role: "user", content }], stream: false }),
  });

test("past FOREMAN_MAX_CONNECTIONS requests in flight, a request gets 503 with Retry-After and its socket closed", async () => {
  foreman = await spawnForeman(foremanEnv(fake.url, dir.path, { FOREMAN_MAX_CONNECTIONS: "4", FOREMAN_LOG_LEVEL: "error" }));
  const port = portOf(foreman);
  const release = fake.hold();
  const arrived = fake.nextArrival();
  const waiting = [chat("running")];
  await arrived;
  waiting.push(chat("queued 1"), chat("queued 2"));
  const queued = async () =>
    ((await (await fetch(`${foreman!.url}/jobs?state=queued`)).json()) as { jobs: unknown[] }).jobs.length;
  await until(async () => (await queued()) === 2, 10_000, "two queued jobs");
  // Three waiting and this one: at the bound, still served.
  expect((await once(port, "GET /healthz HTTP/1.1")).status).toBe(200);
  waiting.push(chat("queued 3"));
  await until(async () => (await once(port, "GET /healthz HTTP/1.1")).status === 503, 10_000, "the bound to be reached");

  const refused = await once(port, "GET /v1/models HTTP/1.1");
  expect(refused.status).toBe(503);
  expect(refused.text).toMatch(/\r\nretry-after: 1\r\n/i);
  expect(refused.text).toMatch(/\r\nconnection: close\r\n/i);
  const body = JSON.parse(refused.text.slice(refused.text.indexOf("\r\n\r\n") + 4));
  expect(body).toEqual({
    error: {
      message: "foreman is at its limit of 4 open requests (FOREMAN_MAX_CONNECTIONS); retry shortly",
      type: "api_error",
      param: null,
      code: null,
    },
  });
  release();
  for (const response of await Promise.all(waiting)) expect(response.status).toBe(200);
  expect((await once(port, "GET /healthz HTTP/1.1")).status).toBe(200);
}, 60_000);

/** Opens `count` sockets to `port`, each sending `bytes` (if any) and then sitting idle; resolves once all are connected. */
async function idleSockets(port: number, count: number, bytes?: string): Promise<{ open: () => number }> {
  let closed = 0;
  for (let i = 0; i < count; i += 200) {
    await Promise.all(
      Array.from({ length: Math.min(200, count - i) }, () => {
        return new Promise<void>((resolve) => {
          const socket = connect(port, "127.0.0.1", () => {
            if (bytes) socket.write(bytes);
            resolve();
          });
          socket.on("data", () => {});
          socket.on("error", () => resolve());
          socket.on("close", () => closed++);
          sockets.push(socket);
        });
      }),
    );
  }
  return { open: () => count - closed };
}

/** foreman under a 4,096 open-file limit (soft and hard), as the outside attack found it. */
async function spawnLimited(env: Record<string, string> = {}) {
  const command = ["sh", "-c", 'ulimit -n 4096 && exec "$0" "$@"', ...foremanCommand()];
  return spawnForeman(foremanEnv(fake.url, dir.path, { FOREMAN_LOG_LEVEL: "error", ...env }), { command });
}

const openDescriptors = (pid: number) => readdirSync(`/proc/${pid}/fd`).length;

test("4,200 sockets that sent one request each and sit idle leave a real client served under a 4,096-descriptor limit", async () => {
  foreman = await spawnLimited();
  const port = portOf(foreman);
  const flood = await idleSockets(port, 4200, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
  const started = performance.now();
  const answer = await once(port, "GET /api/tags HTTP/1.1");
  const servedMs = performance.now() - started;
  expect(answer.status).toBe(200);
  // Keep-alive stops at the bound (1024 by default): the rest were closed after their answer.
  await until(() => flood.open() <= 1100, 20_000, "the idle sockets past the bound to be closed");
  const descriptors = openDescriptors(foreman.process.pid);
  expect(descriptors).toBeLessThan(1300);
  if (process.env.FOREMAN_REPORT) console.log({ servedMs: Math.round(servedMs), floodOpen: flood.open(), descriptors });
}, 90_000);

test("4,000 idle sockets that sent nothing leave a real client served", async () => {
  foreman = await spawnLimited();
  const port = portOf(foreman);
  const flood = await idleSockets(port, 4000);
  expect(flood.open()).toBe(4000);
  const started = performance.now();
  const answer = await once(port, "GET /api/tags HTTP/1.1");
  expect(answer.status).toBe(200);
  expect(flood.open()).toBeGreaterThan(3900);
  if (process.env.FOREMAN_REPORT)
    console.log({ servedMs: Math.round(performance.now() - started), descriptors: openDescriptors(foreman.process.pid) });
}, 90_000);
