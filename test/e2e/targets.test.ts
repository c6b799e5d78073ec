// Several Ollama targets behind the compiled binary: the runners live in the Worker thread, the claim in
// its SQLite connection. Two fakes with overlapping models; each one's serving log is the witness.
import { afterEach, expect, test } from "bun:test";
import { FakeOllama, type SeenRequest } from "../fake-ollama";
import { type ForemanProcess, foremanCommand, foremanEnv, freePort, runForeman, spawnForeman, tempDir, until } from "../harness";

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function fake(options: ConstructorParameters<typeof FakeOllama>[0]): FakeOllama {
  const instance = new FakeOllama(options).start();
  cleanups.push(() => instance.stop());
  return instance;
}

async function serve(env: Record<string, string>): Promise<ForemanProcess> {
  const foreman = await spawnForeman(env);
  cleanups.push(() => {
    foreman.process.kill(9);
  });
  return foreman;
}

const submit = async (url: string, model: string, content: string) => {
  const response = await fetch(`${url}/jobs`, {
    method: "POST",
    body: JSON.stringify({ type: "chat", request: { model, messages: [{ role: "user", content }] } }),
  });
  expect(response.status).toBe(202);
  return ((await response.json()) as { id: string }).id;
};

/** A chat request's message, which names its job in these tests. */
const content = (seen: SeenRequest) => String((seen.body.messages as Array<{ content: string }>)[0]!.content);

const job = async (url: string, id: string) => (await (await fetch(`${url}/jobs/${id}`)).json()) as Record<string, unknown>;

test("two targets behind the binary: every job once, on a target with its model, no overlap; per-target views and metrics", async () => {
  const mac = fake({ models: ["llama3.2", "qwen3"], loadDelayMs: 20, tokenDelayMs: 2 });
  const box = fake({ models: ["qwen3", "mistral"], loadDelayMs: 5, tokenDelayMs: 2 });
  const dir = tempDir();
  cleanups.push(dir.cleanup);
  const foreman = await serve(foremanEnv(`mac=${mac.url},box=${box.url}`, dir.path, { FOREMAN_LOG_FORMAT: "json" }));
  const models = ["mistral", "llama3.2", "qwen3"];
  const ids: string[] = [];
  for (let i = 0; i < 24; i++) ids.push(await submit(foreman.url, models[i % 3]!, `job ${i}`));
  await until(
    async () => (await Promise.all(ids.map((id) => job(foreman.url, id)))).every((j) => j.state === "done"),
    20_000,
    "every job done",
  );
  expect(mac.violations).toEqual([]);
  expect(box.violations).toEqual([]);
  const served: Array<[string, SeenRequest]> = [
    ...mac.seen.map((s): [string, SeenRequest] => ["mac", s]),
    ...box.seen.map((s): [string, SeenRequest] => ["box", s]),
  ];
  expect(served).toHaveLength(24);
  for (const [i, id] of ids.entries()) {
    const view = await job(foreman.url, id);
    const where = served.filter(([, s]) => JSON.stringify(s.body).includes(`"job ${i}"`));
    expect(where.map(([name]) => name)).toEqual([view.target as string]);
    expect(view.attempts).toBe(1);
  }
  expect(mac.seen.some((s) => s.model === "mistral")).toBe(false);
  expect(box.seen.some((s) => s.model === "llama3.2")).toBe(false);

  const health = (await (await fetch(`${foreman.url}/healthz`)).json()) as Record<string, unknown>;
  expect(health).toEqual({
    status: "ok",
    degraded: false,
    reasons: [],
    targets: [
      { name: "mac", reachable: true },
      { name: "box", reachable: true },
    ],
  });
  const metrics = await (await fetch(`${foreman.url}/metrics`)).text();
  expect(metrics).toContain('foreman_target_up{target="mac"} 1');
  if (Bun.which("promtool")) {
    const check = Bun.spawn(["promtool", "check", "metrics"], { stdin: new Blob([metrics]), stdout: "pipe", stderr: "pipe" });
    const [out, err, exit] = await Promise.all([
      new Response(check.stdout).text(),
      new Response(check.stderr).text(),
      check.exited,
    ]);
    expect({ exit, output: out + err }).toEqual({ exit: 0, output: "" });
  }
  expect(metrics).toMatch(/foreman_jobs_ended_total\{[^}]*model="mistral"[^}]*target="box"\} 8/);
  // `foreman ps`: where each model is loaded, and a line per target.
  const ps = await runForeman(["ps"], { env: { FOREMAN_URL: foreman.url } });
  expect(ps.code, ps.stderr).toBe(0);
  expect(ps.stdout).toMatch(/^TARGET\s+NAME\s+ID/);
  expect(ps.stdout).toMatch(/\nTARGET\s+STATE\s+SLOTS\s+RUNNING\nmac\s+up\s+0\/1\s+-\nbox\s+up\s+0\/1\s+-\n/);
  // The job-end line names where the attempt ran.
  const ended = foreman
    .stdout()
    .split("\n")
    .filter((line) => line.includes('"job ended"'))
    .map((line) => JSON.parse(line) as Record<string, unknown>);
  expect(ended.filter((line) => line.model === "mistral").every((line) => line.target === "box")).toBe(true);
}, 60_000);

test("kill -9 with a job running on the second target: recovery re-queues it once, and a second serve is still refused", async () => {
  const a = fake({ models: ["llama3.2"] });
  const b = fake({ models: ["qwen3"] });
  const dir = tempDir();
  cleanups.push(dir.cleanup);
  const port = await freePort();
  const env = foremanEnv(`a=${a.url},b=${b.url}`, dir.path, { FOREMAN_LISTEN: `127.0.0.1:${port}` });
  const release = b.hold(1);
  const first = await spawnForeman(env);
  const id = await submit(first.url, "qwen3", "one two three");
  await until(async () => (await job(first.url, id)).state === "working", 10_000, "the job to run on b");
  expect((await job(first.url, id)).target).toBe("b");

  // One process per database, as with one target.
  const second = Bun.spawn([...foremanCommand(), "serve"], {
    env: { ...process.env, ...env, FOREMAN_LISTEN: `127.0.0.1:${await freePort()}` },
    stdout: "ignore",
    stderr: "pipe",
  });
  const [stderr, code] = await Promise.all([new Response(second.stderr).text(), second.exited]);
  expect(code).toBe(1);
  expect(stderr).toContain(`another foreman (pid ${first.process.pid})`);

  first.process.kill(9);
  await first.process.exited;
  release();
  const again = await serve(env);
  await until(async () => (await job(again.url, id)).state === "done", 10_000, "the job to run again");
  const view = await job(again.url, id);
  expect(view).toMatchObject({ attempts: 2, target: "b" });
  expect(b.seen).toHaveLength(2);
  expect(a.seen).toHaveLength(0);
  expect(b.violations).toEqual([]);
}, 60_000);

test("a client that hangs up aborts its job on the target running it", async () => {
  const a = fake({ models: ["llama3.2"] });
  const b = fake({ models: ["qwen3"] });
  const dir = tempDir();
  cleanups.push(dir.cleanup);
  const foreman = await serve(foremanEnv(`a=${a.url},b=${b.url}`, dir.path));
  const release = b.hold(1);
  cleanups.push(release);
  const client = new AbortController();
  const answer = await fetch(`${foreman.url}/api/chat`, {
    method: "POST",
    body: JSON.stringify({ model: "qwen3", messages: [{ role: "user", content: "one two three" }] }),
    signal: client.signal,
  });
  expect(answer.status).toBe(200);
  const id = answer.headers.get("x-foreman-job-id")!;
  await until(() => b.seen.length === 1, 10_000, "b to run it");
  client.abort();
  await until(() => b.seen[0]!.aborted === true, 10_000, "b's request to be aborted");
  await until(async () => (await job(foreman.url, id)).state === "canceled", 10_000, "the job to end canceled");
  expect((await job(foreman.url, id)).target).toBe("b");
  expect(a.seen).toHaveLength(0);
}, 60_000);

test("a host dies mid-run: nothing lost or run twice, no attempt spent, its job ends on the other; back, it takes work at its first poll", async () => {
  const a = fake({ models: ["llama3.2"], tokenDelayMs: 2 });
  const b = fake({ models: ["llama3.2"], tokenDelayMs: 2 });
  const dir = tempDir();
  cleanups.push(dir.cleanup);
  const foreman = await serve(foremanEnv(`a=${a.url},b=${b.url}`, dir.path, { FOREMAN_POLL_INTERVAL: "300ms" }));
  // Both hold their first job mid-stream (after two chunks), with more queued behind them.
  const releaseA = a.hold(2);
  const releaseB = b.hold(2);
  const ids: string[] = [];
  for (let i = 0; i < 8; i++) ids.push(await submit(foreman.url, "llama3.2", `job ${i}`));
  await until(() => a.seen.length === 1 && b.seen.length === 1, 10_000, "one job running on each");
  await until(
    async () => (await Promise.all(ids.slice(0, 2).map((id) => job(foreman.url, id)))).every((j) => j.state === "working"),
    10_000,
    "both mid-stream",
  );
  const onA = (await Promise.all(ids.map((id) => job(foreman.url, id)))).find((j) => j.target === "a")!.id as string;

  // a's port closes with its job mid-stream; b is let go and drains the rest, a's job among them.
  await a.stop();
  releaseA();
  releaseB();
  const views = await (async () => {
    await until(
      async () => (await Promise.all(ids.map((id) => job(foreman.url, id)))).every((j) => j.state === "done"),
      20_000,
      "every job done",
    );
    return Promise.all(ids.map((id) => job(foreman.url, id)));
  })();
  expect(views.map((v) => v.attempts)).toEqual(ids.map(() => 1));
  expect(views.find((v) => v.id === onA)!.target).toBe("b");
  // Each job served to its end exactly once; a's lost one was cut off there (aborted), never finished twice.
  const finished = [...a.seen, ...b.seen].filter((s) => !s.aborted).map(content);
  expect(finished.sort()).toEqual(ids.map((_, i) => `job ${i}`).sort());
  expect(a.seen.filter((s) => !s.aborted)).toHaveLength(0);
  expect([...a.violations, ...b.violations]).toEqual([]);

  // Back on its port while b is busy and a job waits: a's first poll brings it back, and that job is its
  // next request (no generation before a poll has found it; nothing but that one poll before the job).
  const holdB = b.hold(0);
  cleanups.push(holdB);
  const busy = await submit(foreman.url, "llama3.2", "busy b");
  await until(async () => (await job(foreman.url, busy)).state !== "queued", 10_000, "b to be busy");
  const waiting = await submit(foreman.url, "llama3.2", "after the return");
  const before = a.requests.length;
  a.start();
  await until(async () => (await job(foreman.url, waiting)).state === "done", 10_000, "the waiting job to run on a");
  expect((await job(foreman.url, waiting)).target).toBe("a");
  const since = a.requests.slice(before);
  const first = since.findIndex((r) => r === "POST /api/generate" || r === "POST /api/chat");
  expect(since.slice(0, first).filter((r) => r === "GET /api/tags")).toHaveLength(1);
  holdB();
}, 60_000);

test("GET /queue's lanes show another key's running job as the top-level `running` does: model and state, no id", async () => {
  const a = fake({ models: ["llama3.2"] });
  const b = fake({ models: ["qwen3"] });
  const dir = tempDir();
  cleanups.push(dir.cleanup);
  const env = foremanEnv(`a=${a.url},b=${b.url}`, dir.path);
  const secret = async (name: string) => {
    const made = await runForeman(["keys", "create", name, "--role", "client"], { env });
    expect(made.code).toBe(0);
    return made.stdout.trim();
  };
  const [alice, bob] = [await secret("alice"), await secret("bob")];
  const foreman = await serve(env);
  const release = b.hold(0);
  cleanups.push(release);
  const submitted = await fetch(`${foreman.url}/jobs`, {
    method: "POST",
    headers: { authorization: `Bearer ${alice}` },
    body: JSON.stringify({ type: "generate", request: { model: "qwen3", prompt: "alice's" } }),
  });
  const { id } = (await submitted.json()) as { id: string };
  await until(() => b.seen.length === 1, 10_000, "b to run alice's job");
  const lane = async (secret: string) => {
    const queue = (await (await fetch(`${foreman.url}/queue`, { headers: { authorization: `Bearer ${secret}` } })).json()) as {
      targets: { name: string; running: Record<string, unknown>[] }[];
    };
    return queue.targets.find((t) => t.name === "b")!.running;
  };
  expect(await lane(alice)).toEqual([
    { id, key: "alice", model: "qwen3", state: expect.any(String), started_at: expect.any(String) },
  ]);
  expect(await lane(bob)).toEqual([
    { id: null, key: null, model: "qwen3", state: expect.any(String), started_at: expect.any(String) },
  ]);
  release();
}, 60_000);
