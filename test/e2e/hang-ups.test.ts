// Slow, against the binary with raw sockets: thousands of waiting clients that hang up at once. Not one
// of their jobs may reach Ollama, and the queue stays answerable while their cancels are recorded.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { FakeOllama } from "../fake-ollama";
import { type ForemanProcess, foremanEnv, spawnForeman, tempDir, until } from "../harness";

const CLIENTS = 5000;
let fake: FakeOllama;
let foreman: ForemanProcess;
let dir: ReturnType<typeof tempDir>;
let dbPath: string;

beforeAll(async () => {
  fake = new FakeOllama().start();
  dir = tempDir();
  const env = foremanEnv(fake.url, dir.path, { FOREMAN_MAX_QUEUE: String(CLIENTS + 10), FOREMAN_LOG_LEVEL: "error" });
  dbPath = env.FOREMAN_DB!;
  foreman = await spawnForeman(env);
});
afterAll(async () => {
  foreman?.process.kill("SIGTERM");
  await foreman?.process.exited;
  await fake?.stop();
  dir?.cleanup();
});

const countByState = () => {
  const db = new Database(dbPath, { readonly: true });
  const rows = db.query<{ state: string; n: number }, []>("SELECT state, count(*) AS n FROM jobs GROUP BY state").all();
  db.close();
  return Object.fromEntries(rows.map((r) => [r.state, r.n])) as Record<string, number>;
};

/**
 * A process holding `count` plain /api/chat clients (stream: false), one connection each, `client-<n>`
 * their prompts: the first, then (once `more()` is called) the others, until `hangUp()` closes them all.
 */
async function spawnClients(port: number, count: number) {
  const script = `
    const { connect } = require("node:net");
    const [port, count] = process.argv.slice(-2).map(Number);
    const open = (n) => new Promise((resolve, reject) => {
      const body = JSON.stringify({ model: "llama3.2", messages: [{ role: "user", content: "client-" + n }], stream: false });
      const socket = connect(port, "127.0.0.1", () => {
        socket.write("POST /api/chat HTTP/1.1\\r\\nhost: foreman\\r\\ncontent-type: application/json\\r\\ncontent-length: " + Buffer.byteLength(body) + "\\r\\n\\r\\n" + body);
        resolve(socket);
      });
      socket.on("error", reject);
    });
    const sockets = [await open(0)];
    console.log("first");
    for await (const line of console) break;
    for (let i = 1; i < count; i += 250) {
      sockets.push(...(await Promise.all(Array.from({ length: Math.min(250, count - i) }, (_, k) => open(i + k)))));
    }
    console.log("ready");
    for await (const line of console) break;
    for (const socket of sockets) socket.destroy();
    process.exit(0);
  `;
  const child = Bun.spawn([process.execPath, "-e", script, String(port), String(count)], {
    stdin: "pipe",
    stdout: "pipe",
    stderr: "inherit",
  });
  const reader = (child.stdout as ReadableStream<Uint8Array>).getReader();
  const said = async (word: string) => {
    const { value } = await reader.read();
    if (!new TextDecoder().decode(value).includes(word)) throw new Error("the clients did not connect");
  };
  await said("first");
  return {
    child,
    async more() {
      child.stdin.write("go\n");
      child.stdin.flush();
      await said("ready");
    },
    /** Every client hangs up, one after the other as fast as the process can close them. */
    hangUp() {
      child.stdin.write("hang up\n");
      child.stdin.flush();
    },
  };
}

test(`${CLIENTS} waiting clients that hang up at once put nothing more on Ollama, and GET /queue still answers`, async () => {
  const port = Number(new URL(foreman.url).port);
  const release = fake.hold();
  const arrived = fake.nextArrival();
  const clients = await spawnClients(port, CLIENTS);
  await arrived; // the first one runs (held), every other one waits behind it
  await clients.more();
  await until(() => countByState().queued === CLIENTS - 1, 60_000, "every client's job to be queued");
  expect(fake.seen).toHaveLength(1);

  // Everyone hangs up at once, the running job's client too; the queue is asked meanwhile.
  clients.hangUp();
  let slowest = 0;
  let asked = 0;
  while (countByState().canceled !== CLIENTS) {
    const started = performance.now();
    const response = await fetch(`${foreman.url}/queue`);
    expect(response.status).toBe(200);
    await response.json();
    slowest = Math.max(slowest, performance.now() - started);
    asked++;
    if (asked > 10_000) throw new Error(`not all canceled: ${JSON.stringify(countByState())}`);
  }
  if (process.env.FOREMAN_REPORT) console.log(`GET /queue slowest during the cancels: ${slowest.toFixed(0)} ms (${asked} asked)`);
  release();
  // Had a canceled job been claimed and sent, the fake would have seen it by now; a new one shows the loop is free.
  const after = await fetch(`${foreman.url}/api/chat`, {
    method: "POST",
    body: JSON.stringify({ model: "llama3.2", messages: [{ role: "user", content: "after" }], stream: false }),
  });
  expect(after.status).toBe(200);
  expect(fake.seen.map((seen) => (seen.body.messages as { content: string }[])[0]!.content)).toEqual(["client-0", "after"]);
  expect(fake.maxInFlight).toBe(1);
  // Generous: the machine is shared; unbatched, one transaction per cancel took seconds.
  expect(slowest).toBeLessThan(1500);
}, 180_000);
