// Who may see what, against the compiled binary on raw sockets: every job, batch and file route × {no key,
// wrong key, revoked key, the owner's client key, another client key, an admin key}. Another key's id must
// answer exactly as an unknown id does, and no answer to another key (lists, SSE, artifacts, batch output,
// the dashboard feed) may carry the owner's prompt, answer or ids. Keys are made with `foreman keys` on the
// database before the server starts, and revoked with it while the server runs.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { FakeOllama } from "../fake-ollama";
import { type ForemanProcess, foremanEnv, runForeman, spawnForeman, tempDir, until } from "../harness";

const PROMPT = "alice-private-prompt-7f3a";
const fake = new FakeOllama({ tokenDelayMs: 0 }).start();
const dir = tempDir();
let env: Record<string, string>;
let foreman: ForemanProcess;
let port: number;
const secrets: Record<string, string> = {};
/** Alice's things. */
const own = { job: "", batch: "", inputFile: "", outputFile: "", spareFile: "" };

/** `foreman keys create NAME` on the database: the secret it prints. */
async function makeKey(name: string, role: "admin" | "client"): Promise<string> {
  const made = await runForeman(["keys", "create", name, "--role", role], { env });
  expect(made.code).toBe(0);
  return made.stdout.trim();
}

interface RawAnswer {
  status: number;
  headers: string;
  body: string;
}

/**
 * Writes one request byte for byte (loopback Host, Connection: close) and reads the answer until the server
 * closes, or, given `enough`, until the text read so far satisfies it (a stream that never ends).
 */
function raw(method: string, path: string, auth: string | null, enough?: (text: string) => boolean): Promise<RawAnswer> {
  const lines = [`${method} ${path} HTTP/1.1`, `Host: 127.0.0.1:${port}`, "Connection: close"];
  if (auth !== null) lines.push(`Authorization: Bearer ${auth}`);
  const bytes = `${lines.join("\r\n")}\r\n\r\n`;
  return new Promise((resolve, reject) => {
    let text = "";
    let settled = false;
    const decoder = new TextDecoder();
    const done = () => {
      if (settled) return;
      settled = true;
      const split = text.indexOf("\r\n\r\n");
      const head = split === -1 ? text : text.slice(0, split);
      let body = split === -1 ? "" : text.slice(split + 4);
      if (/transfer-encoding: chunked/i.test(head)) body = unchunk(body);
      resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? 0), headers: head, body });
    };
    Bun.connect({
      hostname: "127.0.0.1",
      port,
      socket: {
        open: (socket) => void socket.write(bytes),
        data: (socket, chunk) => {
          text += decoder.decode(chunk, { stream: true });
          if (enough?.(text)) {
            done();
            socket.end();
          }
        },
        close: done,
        end: (socket) => void socket.end(),
        error: (_socket, error) => (text ? done() : reject(error)),
      },
    }).catch(reject);
  });
}

/** A chunked body's data. */
function unchunk(body: string): string {
  let out = "";
  let rest = body;
  for (;;) {
    const end = rest.indexOf("\r\n");
    if (end === -1) return out + rest;
    const size = parseInt(rest.slice(0, end), 16);
    if (!size) return out;
    out += rest.slice(end + 2, end + 2 + size);
    rest = rest.slice(end + 2 + size + 2);
  }
}

const api = (path: string, auth: string, init: RequestInit = {}) =>
  fetch(`${foreman.url}${path}`, { ...init, headers: { authorization: `Bearer ${auth}`, ...init.headers } });

async function upload(auth: string, text: string): Promise<string> {
  const form = new FormData();
  form.append("purpose", "batch");
  form.append("file", new Blob([text]), "input.jsonl");
  const response = await api("/v1/files", auth, { method: "POST", body: form });
  expect(response.status).toBe(200);
  return ((await response.json()) as { id: string }).id;
}

beforeAll(async () => {
  // Logging at info, JSON: the attribution test reads the request and job-end lines.
  env = foremanEnv(fake.url, dir.path, { FOREMAN_LOG_LEVEL: "info", FOREMAN_LOG_FORMAT: "json" });
  // Made on the database, before any server runs.
  secrets.admin = await makeKey("ops", "admin");
  secrets.alice = await makeKey("alice", "client");
  secrets.bob = await makeKey("bob", "client");
  secrets.mallory = await makeKey("mallory", "client");
  foreman = await spawnForeman(env);
  port = Number(new URL(foreman.url).port);

  const submitted = await api("/jobs", secrets.alice!, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ type: "chat", request: { model: "llama3.2", messages: [{ role: "user", content: PROMPT }] } }),
  });
  expect(submitted.status).toBe(202);
  own.job = ((await submitted.json()) as { id: string }).id;
  const line = {
    custom_id: "a-1",
    method: "POST",
    url: "/v1/chat/completions",
    body: { model: "llama3.2", messages: [{ role: "user", content: PROMPT }] },
  };
  own.inputFile = await upload(secrets.alice!, `${JSON.stringify(line)}\n`);
  own.spareFile = await upload(secrets.alice!, `${JSON.stringify(line)}\n`);
  const created = await api("/v1/batches", secrets.alice!, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ input_file_id: own.inputFile, endpoint: "/v1/chat/completions", completion_window: "24h" }),
  });
  expect(created.status).toBe(200);
  own.batch = ((await created.json()) as { id: string }).id;
  await until(
    async () => ((await (await api(`/jobs/${own.job}`, secrets.alice!)).json()) as { state: string }).state === "done",
    20_000,
    "alice's job to finish",
  );
  await until(
    async () => {
      const batch = (await (await api(`/v1/batches/${own.batch}`, secrets.alice!)).json()) as {
        status: string;
        output_file_id: string;
      };
      own.outputFile = batch.output_file_id;
      return batch.status === "completed";
    },
    20_000,
    "alice's batch to complete",
  );
  // Revoked while the server runs: refused within the one-second cache.
  expect((await raw("GET", "/jobs", secrets.mallory!)).status).toBe(200);
  expect((await runForeman(["keys", "revoke", "mallory"], { env })).code).toBe(0);
  await until(async () => (await raw("GET", "/jobs", secrets.mallory!)).status === 401, 3000, "the revoke to be seen");
}, 60_000);

afterAll(async () => {
  foreman?.process.kill();
  await foreman?.process.exited;
  await fake.stop();
  dir.cleanup();
});

/** An id of the same shape as one of alice's that nobody has. */
const unknownLike = (id: string) => id.replace(/[0-9A-Z]{6}$/, "000000");

/** Each route on one of alice's things: what the owner gets (its status), and the id in its path. */
const ROUTES: Array<{ method: string; path: (o: typeof own) => string; id: (o: typeof own) => string; owner: number }> = [
  { method: "GET", path: (o) => `/jobs/${o.job}`, id: (o) => o.job, owner: 200 },
  { method: "GET", path: (o) => `/jobs/${o.job}/events`, id: (o) => o.job, owner: 200 },
  { method: "GET", path: (o) => `/jobs/${o.job}/artifacts`, id: (o) => o.job, owner: 200 },
  { method: "GET", path: (o) => `/jobs/${o.job}/artifacts/result.json`, id: (o) => o.job, owner: 200 },
  { method: "DELETE", path: (o) => `/jobs/${o.job}`, id: (o) => o.job, owner: 409 },
  { method: "GET", path: (o) => `/v1/batches/${o.batch}`, id: (o) => o.batch, owner: 200 },
  { method: "POST", path: (o) => `/v1/batches/${o.batch}/cancel`, id: (o) => o.batch, owner: 409 },
  { method: "GET", path: (o) => `/v1/files/${o.inputFile}`, id: (o) => o.inputFile, owner: 200 },
  { method: "GET", path: (o) => `/v1/files/${o.inputFile}/content`, id: (o) => o.inputFile, owner: 200 },
  { method: "GET", path: (o) => `/v1/files/${o.outputFile}/content`, id: (o) => o.outputFile, owner: 200 },
];

describe("every route × every caller", () => {
  for (const route of ROUTES) {
    const name = `${route.method} ${route.path({ job: "{job}", batch: "{batch}", inputFile: "{file}", outputFile: "{output}", spareFile: "" })}`;
    test(name, async () => {
      const path = route.path(own);
      for (const auth of [null, "fmn_not-a-key", secrets.mallory!]) {
        const answer = await raw(route.method, path, auth);
        expect(answer.status).toBe(401);
        expect(answer.body).not.toContain(PROMPT);
      }
      // Another client key: exactly the unknown id's answer (same status, same body with the id swapped).
      const other = await raw(route.method, path, secrets.bob!);
      const id = route.id(own);
      const unknown = await raw(route.method, path.replace(id, unknownLike(id)), secrets.bob!);
      expect(other.status).toBe(404);
      expect(other.status).toBe(unknown.status);
      expect(other.body.replaceAll(id, "ID")).toBe(unknown.body.replaceAll(unknownLike(id), "ID"));
      expect(other.body).not.toContain(PROMPT);
      for (const auth of [secrets.alice!, secrets.admin!]) {
        const answer = await raw(route.method, path, auth);
        expect(answer.status).toBe(route.owner);
      }
    });
  }

  test("the owner reads its prompt and answer through the job, its SSE and its artifact; the batch output through its file", async () => {
    expect((await raw("GET", `/jobs/${own.job}/events`, secrets.alice!)).body).toContain("event: end");
    expect((await raw("GET", `/jobs/${own.job}/artifacts/result.json`, secrets.alice!)).body).toContain('"message"');
    expect((await raw("GET", `/v1/files/${own.inputFile}/content`, secrets.alice!)).body).toContain(PROMPT);
    expect((await raw("GET", `/v1/files/${own.outputFile}/content`, secrets.alice!)).body).toContain('"custom_id":"a-1"');
  });

  test("DELETE of a file: another key's is a 404 and stays; the owner deletes it", async () => {
    expect((await raw("DELETE", `/v1/files/${own.spareFile}`, secrets.bob!)).status).toBe(404);
    expect((await raw("GET", `/v1/files/${own.spareFile}`, secrets.alice!)).status).toBe(200);
    expect((await raw("DELETE", `/v1/files/${own.spareFile}`, secrets.alice!)).status).toBe(200);
    expect((await raw("GET", `/v1/files/${own.spareFile}`, secrets.admin!)).status).toBe(404);
  });

  test("another key cannot run a batch over the owner's file (its bytes would come back in the output)", async () => {
    const response = await api("/v1/batches", secrets.bob!, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ input_file_id: own.inputFile, endpoint: "/v1/chat/completions", completion_window: "24h" }),
    });
    expect(response.status).toBe(404);
    expect(await response.text()).not.toContain(PROMPT);
  });
});

describe("every documented route", () => {
  test("refuses no key, a wrong key and a revoked key (401) before anything runs", async () => {
    const doc = JSON.parse((await raw("GET", "/swagger/json", null)).body) as { paths: Record<string, Record<string, unknown>> };
    const ids: Record<string, string> = { id: own.job, name: "alice", digest: "sha256-00", model: "llama3.2" };
    const publicPaths = new Set(["/healthz"]);
    let checked = 0;
    for (const [template, operations] of Object.entries(doc.paths)) {
      const path = template.replace(/\{(\w+)\}/g, (_, name: string) => ids[name] ?? "x");
      for (const method of Object.keys(operations)) {
        if (publicPaths.has(template)) continue;
        for (const auth of [null, "fmn_not-a-key", secrets.mallory!]) {
          const answer = await raw(method.toUpperCase(), path, auth);
          expect(`${method} ${template} ${answer.status}`).toBe(`${method} ${template} 401`);
        }
        checked++;
      }
    }
    expect(checked).toBeGreaterThan(40);
    // Nothing reached Ollama but the two generations of the set-up.
    expect(fake.generations.length).toBe(2);
  });
});

describe("lists and feeds", () => {
  const ids = () => [own.job, own.batch, own.inputFile, own.outputFile];

  test("GET /jobs, /v1/batches and /v1/files list a client key's own things only; an admin's list has all", async () => {
    for (const path of ["/jobs?include=request,result", "/v1/batches", "/v1/files"]) {
      const bob = await raw("GET", path, secrets.bob!);
      expect(bob.status).toBe(200);
      for (const id of ids()) expect(bob.body).not.toContain(id);
      expect(bob.body).not.toContain(PROMPT);
      const alice = await raw("GET", path, secrets.alice!);
      const admin = await raw("GET", path, secrets.admin!);
      expect(ids().some((id) => alice.body.includes(id))).toBe(true);
      expect(admin.body).toBe(alice.body);
    }
    // The batch's line is alice's job too.
    const lines = JSON.parse((await raw("GET", "/jobs", secrets.alice!)).body) as { jobs: { source: string }[] };
    expect(lines.jobs.map((job) => job.source).sort()).toEqual(["batch", "jobs"]);
  });

  test("the dashboard feed: alice's snapshot has her jobs, bob's the aggregate alone, the admin's who asked", async () => {
    const snapshot = async (auth: string) => {
      const answer = await raw("GET", "/ui/events", auth, (text) => /event: snapshot\ndata: .*\n\n/.test(text));
      expect(answer.status).toBe(200);
      return JSON.parse(/event: snapshot\ndata: (.*)\n\n/.exec(answer.body)![1]!) as {
        recent: { id: string; key: string | null }[];
        timeline: { jobs: { id: string; key: string | null }[] };
      };
    };
    const alice = await snapshot(secrets.alice!);
    expect(alice.recent.map((job) => job.id)).toContain(own.job);
    const bob = await snapshot(secrets.bob!);
    expect(bob.recent).toEqual([]);
    expect(JSON.stringify(bob)).not.toContain(own.job);
    // The GPU timeline is the aggregate: bob sees that the GPU ran two jobs, not whose or which.
    expect(bob.timeline.jobs.map((bar) => [bar.id, bar.key])).toEqual([
      ["", null],
      ["", null],
    ]);
    const admin = await snapshot(secrets.admin!);
    expect(admin.recent.find((job) => job.id === own.job)?.key).toBe("alice");
  });

  test("GET /queue answers every key with the aggregate", async () => {
    for (const auth of [secrets.alice!, secrets.bob!, secrets.admin!]) {
      const answer = await raw("GET", "/queue", auth);
      expect(answer.status).toBe(200);
      expect(JSON.parse(answer.body)).toMatchObject({ depth: 0, running: null });
    }
  });
});

describe("attribution", () => {
  test("job views, the job-end and request log lines and /metrics name the key; no secret is ever logged", async () => {
    expect(JSON.parse((await raw("GET", `/jobs/${own.job}`, secrets.admin!)).body).key).toBe("alice");
    expect(JSON.parse((await raw("GET", `/jobs/${own.job}`, secrets.alice!)).body).key).toBe("alice");
    const metrics = await raw("GET", "/metrics", secrets.admin!);
    expect(metrics.body).toContain('foreman_key_jobs_ended_total{key="alice",outcome="done"} 2');
    expect(metrics.body).toMatch(/foreman_key_tokens_total\{key="alice",kind="output"\} [1-9]/);
    // Every key's usage is an operator's to read, not another client's.
    expect((await raw("GET", "/metrics", secrets.bob!)).status).toBe(403);
    const lines = foreman
      .stdout()
      .split("\n")
      .filter(Boolean)
      .map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(lines.filter((line) => line.msg === "job ended").map((line) => line.key)).toEqual(["alice", "alice"]);
    expect(lines.some((line) => line.msg === "request" && line.key === "bob")).toBe(true);
    const log = foreman.stdout();
    for (const secret of Object.values(secrets)) expect(log).not.toContain(secret.slice(4));
    // Nor is one forwarded to Ollama.
    expect(fake.generations.length).toBe(2);
    for (const seen of fake.generations) {
      for (const secret of Object.values(secrets)) expect(JSON.stringify(seen.headers)).not.toContain(secret.slice(4));
    }
  });
});
