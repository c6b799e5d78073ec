// DNS rebinding against the compiled binary at its defaults (no token, loopback listen): a web page whose
// name re-resolves to 127.0.0.1 talks to foreman as if same-origin, with its own name in Host. Written byte
// for byte on raw sockets; the fake Ollama must see none of the refused requests.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { connect } from "node:net";
import { FakeOllama } from "../fake-ollama";
import { type ForemanProcess, foremanEnv, spawnForeman, tempDir } from "../harness";

let fake: FakeOllama;
let dir: ReturnType<typeof tempDir>;
let foreman: ForemanProcess;
let port: number;

beforeAll(async () => {
  fake = new FakeOllama().start();
  dir = tempDir();
  foreman = await spawnForeman(foremanEnv(fake.url, dir.path, { FOREMAN_LOG_LEVEL: "error" }));
  port = Number(new URL(foreman.url).port);
});
afterAll(async () => {
  foreman?.process.kill();
  await foreman?.process.exited;
  await fake?.stop();
  dir?.cleanup();
});

interface Answer {
  status: number;
  body: string;
}

/** Writes `head` (request line and header lines) and `body` on a fresh socket; reads until foreman closes it. */
function raw(to: number, head: string[], body = ""): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const socket = connect(to, "127.0.0.1", () => {
      socket.write(`${[...head, "Connection: close"].join("\r\n")}\r\n\r\n${body}`);
    });
    let text = "";
    socket.setEncoding("utf8");
    socket.on("data", (chunk) => (text += chunk));
    socket.on("error", reject);
    socket.on("close", () =>
      resolve({ status: Number(/^HTTP\/1\.[01] (\d{3})/.exec(text)?.[1] ?? 0), body: text.slice(text.indexOf("\r\n\r\n") + 4) }),
    );
  });
}

const get = (path: string, host: string, extra: string[] = [], to = port) =>
  raw(to, [`GET ${path} HTTP/1.1`, `Host: ${host}`, ...extra]);
const GENERATE = JSON.stringify({ model: "llama3.2", prompt: "rebound", stream: false });
/** What a page's `fetch(url, {method: "POST", body})` sends: text/plain, so no preflight. */
const simplePost = (path: string, host: string, extra: string[] = []) =>
  raw(
    port,
    [
      `POST ${path} HTTP/1.1`,
      `Host: ${host}`,
      "Content-Type: text/plain;charset=UTF-8",
      `Content-Length: ${GENERATE.length}`,
      ...extra,
    ],
    GENERATE,
  );
const prompts = () => fake.generations.map((seen) => seen.body.prompt);

describe("on a loopback listen without a token", () => {
  test("a rebinding page's Host (with or without port, any case) is refused with 403 in the API's shape", async () => {
    for (const host of [
      "evil.example",
      `evil.example:${port}`,
      "EVIL.example",
      "evil.example.",
      "127.0.0.1.evil.example",
      "localhost.evil.example",
    ]) {
      const jobs = await get("/jobs?include=request", host);
      expect([host, jobs.status]).toEqual([host, 403]);
      const error = (JSON.parse(jobs.body) as { error: string }).error;
      expect(error).toContain("is not allowed");
      expect(error).toContain("FOREMAN_ALLOWED_HOSTS");
    }
    const openai = await get("/v1/models", "evil.example");
    expect(openai.status).toBe(403);
    expect(JSON.parse(openai.body)).toMatchObject({ error: { type: "api_error", param: null, code: null } });
    // Two Host headers, one of them local: Bun reads the first, a proxy might read the other. Refused.
    expect((await raw(port, ["GET /jobs HTTP/1.1", "Host: 127.0.0.1", "Host: evil.example"])).status).toBe(403);
  });

  test("the page's simple POST (same-origin to the browser) never reaches Ollama", async () => {
    const before = prompts().length;
    for (const host of ["evil.example", `evil.example:${port}`]) {
      const answer = await simplePost("/api/generate", host, [`Origin: http://${host}`]);
      expect(answer.status).toBe(403);
    }
    // A chunked body is not read either: the answer comes while the body is still open.
    const chunked = await new Promise<number>((resolve, reject) => {
      const socket = connect(port, "127.0.0.1", () =>
        socket.write(
          `POST /api/generate HTTP/1.1\r\nHost: evil.example\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n${"x".repeat(16)}\r\n`,
        ),
      );
      socket.setEncoding("utf8");
      socket.on("data", (chunk: string) => {
        resolve(Number(/^HTTP\/1\.1 (\d{3})/.exec(chunk)?.[1] ?? 0));
        socket.destroy();
      });
      socket.on("error", reject);
    });
    expect(chunked).toBe(403);
    expect(prompts().length).toBe(before);
  });

  test("an attacker's Origin is refused even with a loopback Host", async () => {
    const before = prompts().length;
    const answer = await simplePost("/api/generate", `127.0.0.1:${port}`, ["Origin: http://evil.example"]);
    expect(answer.status).toBe(403);
    expect(JSON.parse(answer.body).error).toBe("origin http://evil.example is not allowed (add it to FOREMAN_ORIGINS)");
    expect(prompts().length).toBe(before);
  });

  test("loopback names and addresses are served, with or without port", async () => {
    for (const host of [
      "localhost",
      `localhost:${port}`,
      "LocalHost",
      "app.localhost",
      `127.0.0.1:${port}`,
      "127.1.2.3",
      "[::1]",
      `[::1]:${port}`,
      "0.0.0.0",
    ]) {
      const jobs = await get("/jobs", host);
      expect([host, jobs.status]).toEqual([host, 200]);
    }
    const page = await simplePost("/api/generate", `localhost:${port}`, [`Origin: http://localhost:${port}`]);
    expect(page.status).toBe(200);
    expect(prompts()).toContain("rebound");
  });

  test("HTTP/1.0 without a Host has nothing to rebind, and is refused as a target the router cannot read", async () => {
    const answer = await raw(port, ["GET /jobs HTTP/1.0"]);
    expect(answer.status).toBe(400);
    expect(JSON.parse(answer.body).error).toStartWith("invalid Host header");
  });
});

describe("opening the Host check deliberately", () => {
  const withForeman = async (env: Record<string, string>, run: (port: number) => Promise<void>) => {
    const other = tempDir();
    const started = await spawnForeman(foremanEnv(fake.url, other.path, { FOREMAN_LOG_LEVEL: "error", ...env }));
    try {
      await run(Number(new URL(started.url).port));
    } finally {
      started.process.kill();
      await started.process.exited;
      other.cleanup();
    }
  };

  test("FOREMAN_ALLOWED_HOSTS serves the names listed beside the local ones", async () => {
    await withForeman({ FOREMAN_ALLOWED_HOSTS: "foreman.example.com, *.lan" }, async (to) => {
      for (const host of ["foreman.example.com", `Foreman.Example.com:${to}`, "gpu.lan", "localhost"])
        expect([host, (await get("/jobs", host, [], to)).status]).toEqual([host, 200]);
      for (const host of ["evil.example", "example.com", "lan"])
        expect([host, (await get("/jobs", host, [], to)).status]).toEqual([host, 403]);
    });
  });

  test("a non-loopback listen serves any Host; FOREMAN_ALLOWED_HOSTS=* too", async () => {
    await withForeman({ FOREMAN_LISTEN: "0.0.0.0:0" }, async (to) => {
      expect((await get("/jobs", "evil.example", [], to)).status).toBe(200);
    });
    await withForeman({ FOREMAN_ALLOWED_HOSTS: "*" }, async (to) => {
      expect((await get("/jobs", `evil.example:${to}`, [], to)).status).toBe(200);
    });
  });
});
