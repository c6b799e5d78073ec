// With FOREMAN_TOKEN set, no request target, Host header, method or body gets past the token: every
// trick is written byte for byte on a raw socket, and the fake Ollama must see nothing but foreman's polls.
// Runs against the compiled binary the test run built (or `bun src/main.ts` with FOREMAN_BIN=source).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { FakeOllama } from "../fake-ollama";
import { type ForemanProcess, foremanEnv, spawnForeman, tempDir, until } from "../harness";

const TOKEN = "secret";

let fake: FakeOllama;
let foreman: ForemanProcess;
let dir: ReturnType<typeof tempDir>;
let port: number;
let jobId: string;

/** Requests foreman itself makes to Ollama on its own (the inventory poller): not caused by a client. */
const isPoll = (request: string) => request === "GET /api/tags" || request === "GET /api/ps";

beforeAll(async () => {
  fake = new FakeOllama().start();
  dir = tempDir();
  // Every Host is let through the DNS-rebinding check (test/e2e/host-check.test.ts), so that odd Hosts reach
  // the token check and the router, which is what is tested here.
  foreman = await spawnForeman(
    foremanEnv(fake.url, dir.path, { FOREMAN_TOKEN: TOKEN, FOREMAN_LOG_LEVEL: "error", FOREMAN_ALLOWED_HOSTS: "*" }),
  );
  port = Number(new URL(foreman.url).port);
  // One finished job, so that /jobs/{id}, its events and its artifacts exist: a request that got through
  // would answer 200 (or 409 for DELETE), not a 404 that looks like a refusal.
  const auth = { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" };
  const submitted = await fetch(`${foreman.url}/jobs`, {
    method: "POST",
    headers: auth,
    body: JSON.stringify({ type: "chat", request: { model: "llama3.2", messages: [{ role: "user", content: "hi" }] } }),
  });
  expect(submitted.status).toBe(202);
  jobId = ((await submitted.json()) as { id: string }).id;
  await until(
    async () =>
      ((await (await fetch(`${foreman.url}/jobs/${jobId}`, { headers: auth })).json()) as { state: string }).state === "done",
    10_000,
    "the seed job to finish",
  );
  fake.requests.length = 0;
});

afterAll(async () => {
  foreman?.process.kill();
  await foreman?.process.exited;
  await fake?.stop();
  dir?.cleanup();
});

interface RawAnswer {
  /** Status of each response on the connection, in order (pipelined requests get several). */
  statuses: number[];
  text: string;
}

/** Writes `bytes` to foreman as they are and reads until it closes the connection. */
function raw(bytes: string): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    let text = "";
    const decoder = new TextDecoder();
    const done = () =>
      resolve({ text, statuses: [...text.matchAll(/(?:^|\r\n)HTTP\/1\.[01] (\d{3})/g)].map((m) => Number(m[1])) });
    Bun.connect({
      hostname: "127.0.0.1",
      port,
      socket: {
        open: (socket) => void socket.write(bytes),
        data: (_socket, chunk) => void (text += decoder.decode(chunk, { stream: true })),
        close: done,
        end: (socket) => void socket.end(),
        error: (_socket, error) => (text ? done() : reject(error)),
      },
    }).catch(reject);
  });
}

/** One HTTP/1.1 request; `host` null leaves the Host header out. */
function request(method: string, target: string, options: { host?: string | null; headers?: string[]; body?: string } = {}) {
  const host = options.host === undefined ? `127.0.0.1:${port}` : options.host;
  const lines = [`${method} ${target} HTTP/1.1`];
  if (host !== null) lines.push(`Host: ${host}`);
  lines.push(...(options.headers ?? []), "Connection: close");
  if (options.body !== undefined)
    lines.push("Content-Type: application/json", `Content-Length: ${Buffer.byteLength(options.body)}`);
  return `${lines.join("\r\n")}\r\n\r\n${options.body ?? ""}`;
}

/** A body every POST route would accept, so a request that got through would run (and answer 200). */
const CHAT_BODY = JSON.stringify({ model: "llama3.2", messages: [{ role: "user", content: "bypass" }], stream: false });

/** Every protected route, with the method it is served on. */
function protectedRoutes(): Array<[string, string]> {
  return [
    ["GET", "/jobs"],
    ["POST", "/jobs"],
    ["GET", `/jobs/${jobId}`],
    ["DELETE", `/jobs/${jobId}`],
    ["GET", `/jobs/${jobId}/events`],
    ["GET", `/jobs/${jobId}/artifacts`],
    ["GET", `/jobs/${jobId}/artifacts/result.json`],
    ["GET", "/queue"],
    ["GET", "/ui/events"],
    ["POST", "/api/chat"],
    ["POST", "/api/generate"],
    ["POST", "/api/embed"],
    ["POST", "/api/embeddings"],
    ["POST", "/api/show"],
    ["GET", "/api/version"],
    ["GET", "/api/tags"],
    ["HEAD", "/api/tags"],
    ["GET", "/api/ps"],
    ["POST", "/api/pull"],
    ["POST", "/api/push"],
    ["POST", "/api/create"],
    ["POST", "/api/copy"],
    ["DELETE", "/api/delete"],
    ["HEAD", "/api/blobs/sha256:0"],
    ["POST", "/api/blobs/sha256:0"],
    ["POST", "/v1/chat/completions"],
    ["POST", "/v1/completions"],
    ["POST", "/v1/responses"],
    ["POST", "/v1/messages"],
    ["POST", "/v1/embeddings"],
    ["GET", "/v1/models"],
    ["GET", "/v1/models/llama3.2"],
    ["GET", "/"],
    ["HEAD", "/"],
  ];
}

/** Targets that smuggle `path` behind a public one, or spell it so that two parsers could disagree. */
function targetTricks(path: string): string[] {
  const rest = path.slice(1);
  const upper = path.toUpperCase();
  return [
    path,
    `/healthz#${path}`,
    `/healthz?${path}`,
    `/healthz?x=${path}`,
    `/swagger#${path}`,
    `/swagger?${path}`,
    `/swagger/json#${path}`,
    `/ui?${path}`,
    `/ui#${path}`,
    `/ui/..${path}`,
    `/ui/app.js/..${path}`,
    `/healthz/..${path}`,
    `/healthz/../..${path}`,
    `/swagger/..${path}`,
    `/healthz/%2e%2e${path}`,
    `/healthz/%2E%2E/${rest}`,
    `/healthz\\..\\${rest}`,
    `/healthz%2F..${path}`,
    `/healthz;${path}`,
    `//${rest}`,
    `${path}/`,
    `${path}//`,
    `${path}?`,
    `${path}#`,
    `${path}/.`,
    upper,
    `${path.replaceAll("/", "%2F")}`,
    `/${rest.replaceAll("/", "%2F")}`,
    ...(rest ? [`/%${rest.charCodeAt(0).toString(16)}${rest.slice(1)}`] : []),
    `http://evil${path}`,
    `http://127.0.0.1:${port}${path}`,
    `http://x${path}`,
    `http://evil/healthz#${path}`,
  ];
}

/** Host headers besides the real one: too short for Elysia's default path finding, or no host at all. */
const ODD_HOSTS = ["x", "ab", "abc", "abcd", "X", "", "a/healthz", "x?", "x#", "u@x"];

/**
 * A 200 that is the public route the target names by the URL standard (`/healthz?/queue` is /healthz with
 * a query), and its answer really is that route's: the health JSON, the documentation or the dashboard's page
 * (which holds no data), not /queue's.
 */
function isPublicAnswer(method: string, target: string, text: string): boolean {
  const path = new URL(target, "http://h").pathname;
  if (!["/healthz", "/swagger", "/swagger/json", "/ui"].includes(path) || !(method === "GET" || method === "HEAD")) return false;
  const body = text.slice(text.indexOf("\r\n\r\n") + 4);
  if (method === "HEAD") return body === "";
  if (path === "/ui") return body.startsWith("<!doctype html>") && body.includes('src="ui/app.js"');
  return path === "/healthz"
    ? /^\{"status":"ok","degraded":(true|false),"reasons":\[("[^"]*",?)*\]\}$/.test(body)
    : /swagger|"openapi"/i.test(body);
}

/** /ui/ sends the browser to the page (src/http/dashboard.ts): a public redirect, nothing in it but where. */
function isUiRedirect(method: string, target: string, text: string): boolean {
  const path = new URL(target, "http://h").pathname;
  const [head = "", body = ""] = text.split("\r\n\r\n");
  return path === "/ui/" && (method === "GET" || method === "HEAD") && /\r\nlocation: \.\.\/ui\r\n/i.test(head) && body === "";
}

/** Statuses a request without the right token may get. */
const REFUSALS = new Set([400, 401, 404, 405]);

describe("without the token nothing protected is reachable", () => {
  test("every route, target trick, Host and method: only 400/401/404/405, and Ollama sees nothing", async () => {
    const cases: Array<{ method: string; target: string; bytes: string }> = [];
    const add = (method: string, target: string, options: Parameters<typeof request>[2] = {}) =>
      cases.push({ method, target, bytes: request(method, target, options) });
    for (const [method, path] of protectedRoutes()) {
      for (const target of targetTricks(path)) {
        for (const m of new Set([method, "GET", "POST", "HEAD", "OPTIONS"])) {
          add(m, target, { body: m === "POST" || m === "DELETE" ? CHAT_BODY : undefined });
        }
      }
      const body = method === "POST" || method === "DELETE" ? CHAT_BODY : undefined;
      for (const host of [`127.0.0.1:${port}`, ...ODD_HOSTS]) {
        for (const target of [path, `/healthz?${path}`, `/healthz#${path}`, `/swagger?${path}`])
          add(method, target, { host, body });
      }
      for (const authorization of [
        "Bearer",
        "Bearer ",
        "Bearer secre",
        "Bearer secret2",
        "Basic c2VjcmV0",
        "secret",
        "bearer  SECRET",
      ]) {
        add(method, path, { headers: [`Authorization: ${authorization}`], body });
      }
    }
    // No Host at all: Bun refuses it itself.
    add("GET", "/queue", { host: null });

    const failures: string[] = [];
    // A few at a time: the machine is shared.
    for (let i = 0; i < cases.length; i += 8) {
      const batch = cases.slice(i, i + 8);
      const answers = await Promise.all(batch.map((c) => raw(c.bytes)));
      answers.forEach((answer, j) => {
        const { method, target, bytes } = batch[j]!;
        const [status = 0, ...more] = answer.statuses;
        if (
          more.length === 0 &&
          (REFUSALS.has(status) ||
            (status === 200 && isPublicAnswer(method, target, answer.text)) ||
            (status === 308 && isUiRedirect(method, target, answer.text)))
        )
          return;
        failures.push(`${answer.statuses.join(",") || "no answer"} <- ${JSON.stringify(bytes.split("\r\n\r\n")[0])}`);
      });
    }
    expect(failures).toEqual([]);
    expect(cases.length).toBeGreaterThan(2000);
    expect(fake.requests.filter((r) => !isPoll(r))).toEqual([]);
    expect(fake.generations).toHaveLength(1); // the seed job only
  }, 120_000);

  test("a body on a public path is its body, not a second request, and a pipelined request still needs the token", async () => {
    const smuggled = request("GET", "/queue", { host: "x" }).replace("Connection: close\r\n", "");
    for (const method of ["GET", "POST", "HEAD"]) {
      const head = [`${method} /healthz HTTP/1.1`, "Host: x", `Content-Length: ${smuggled.length}`];
      // Content-Length counts the smuggled request as the body; the next request on the line asks for /queue.
      const answer = await raw(`${head.join("\r\n")}\r\n\r\n${smuggled}${request("GET", "/queue", { host: "x" })}`);
      for (const status of answer.statuses.slice(1)) expect(REFUSALS).toContain(status);
      expect(answer.text).not.toContain('"depth"');
      // Both framings at once is how requests are smuggled past proxies: refused or framed by the chunked one.
      const conflicting = await raw(
        `${method} /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n${request("GET", "/queue", { host: "x" })}`,
      );
      for (const status of conflicting.statuses.slice(1)) expect(REFUSALS).toContain(status);
      expect(conflicting.text).not.toContain('"depth"');
    }
    expect(fake.requests.filter((r) => !isPoll(r))).toEqual([]);
  });
});

describe("targets the router and a URL parser could read differently are refused with 400", () => {
  test.each([
    ["a fragment", "/healthz#/queue", "x"],
    ["a fragment after the query", "/healthz?a=1#/queue", `127.0.0.1`],
    ["a Host with a path", "/healthz", "a/b"],
    ["a Host with userinfo", "/healthz", "u@x"],
    ["an empty Host", "/healthz", ""],
  ])("%s: %s with Host %p", async (_what, target, host) => {
    const answer = await raw(request("GET", target, { host, headers: [`Authorization: Bearer ${TOKEN}`] }));
    expect(answer.statuses).toEqual([400]);
    const body = JSON.parse(answer.text.slice(answer.text.indexOf("\r\n\r\n") + 4)) as { error: string };
    expect(body.error).toMatch(/^invalid (request target|Host header): /);
  });
});

describe("routing and the public routes, whatever the Host", () => {
  test.each(["x", "ab", "abc", "abcd", "localhost", "127.0.0.1:1", "[::1]"])(
    "Host %p: /healthz is open, /queue needs the token and then answers",
    async (host) => {
      const health = await raw(request("GET", "/healthz", { host }));
      expect(health.statuses).toEqual([200]);
      expect(health.text).toContain('"status":"ok"');
      expect((await raw(request("HEAD", "/healthz", { host }))).statuses).toEqual([200]);
      expect((await raw(request("GET", "/queue", { host }))).statuses).toEqual([401]);
      const queue = await raw(request("GET", "/queue?x=/healthz", { host, headers: [`Authorization: Bearer ${TOKEN}`] }));
      expect(queue.statuses).toEqual([200]);
      expect(queue.text).toContain('"depth"');
    },
  );

  test("the documentation is open; unknown routes need the token (deny by default), then are 404", async () => {
    // "/swagger/" is listed as public in its own right (the page works at both spellings).
    for (const path of ["/swagger", "/swagger/", "/swagger/json", "/swagger/assets/swagger-ui.css"]) {
      expect((await raw(request("GET", path, { host: "x" }))).statuses).toEqual([200]);
    }
    for (const path of ["/nope", "/HEALTHZ", "/swagger/json/x", "/api"]) {
      expect((await raw(request("GET", path))).statuses).toEqual([401]);
      expect((await raw(request("GET", path, { headers: [`Authorization: Bearer ${TOKEN}`] }))).statuses).toEqual([404]);
    }
    // Public paths are compared exactly: the router's lenient spellings need the token.
    for (const path of ["/healthz/", "/swagger/json/", "/metrics/"])
      expect((await raw(request("GET", path))).statuses).toEqual([401]);
    // Only reading is public: another method on a public path needs the token too.
    for (const method of ["POST", "PUT", "DELETE", "OPTIONS", "PATCH"]) {
      expect((await raw(request(method, "/healthz", { body: CHAT_BODY }))).statuses).toEqual([401]);
    }
  });
});
