// Several Ollama targets behind one queue, in process: a runner per target, each fake's serving log the
// witness. A target never serves more at once than its slots, never two model keys at once, never a model
// it lacks; every job runs on one target, once per attempt; a target that dies hands its job on.
import { afterEach, expect, test } from "bun:test";
import { until } from "../harness";
import { type InProcessStack, startInProcess } from "../in-process";
import type { FakeOllama } from "../fake-ollama";

let stack: InProcessStack | undefined;
afterEach(async () => {
  await stack?.stop();
  stack = undefined;
});

const prompt = (text: string) => ({ prompt: text, stream: false });

async function submit(model: string, text: string, options?: Record<string, unknown>): Promise<string> {
  return (await stack!.jobs.submit("generate", { model, ...prompt(text), options }, { source: "jobs" })).job.id;
}

/** Where each job was served, from the fakes' logs: the job's prompt is its identity there. */
function servedBy(fakes: Map<string, FakeOllama>): Map<string, string[]> {
  const where = new Map<string, string[]>();
  for (const [name, fake] of fakes) {
    for (const seen of fake.seen) {
      const text = String(seen.body.prompt);
      where.set(text, [...(where.get(text) ?? []), name]);
    }
  }
  return where;
}

test("two targets, one queue: each job runs once, on a target that has its model, none ever serving two keys at once", async () => {
  stack = await startInProcess({
    targets: [
      { name: "mac", fake: { models: ["llama3.2", "qwen3", "mistral"], loadDelayMs: 15, tokenDelayMs: 1 } },
      { name: "box", fake: { models: ["qwen3", "mistral", "gemma3"], loadDelayMs: 5, tokenDelayMs: 1 } },
    ],
  });
  // The first job is for a model only the second target has: the first runner, woken first, must leave it.
  const models = ["gemma3", "llama3.2", "qwen3", "mistral"];
  const ids: string[] = [];
  for (let i = 0; i < 40; i++) ids.push(await submit(models[(i * 7) % 4]!, `job ${i}`));
  const rows = await Promise.all(ids.map((id) => stack!.ended(id)));
  expect(rows.map((r) => r.state)).toEqual(ids.map(() => "done"));
  expect(rows.map((r) => r.attempts)).toEqual(ids.map(() => 1));

  const mac = stack.fakes.get("mac")!;
  const box = stack.fakes.get("box")!;
  expect(mac.violations).toEqual([]);
  expect(box.violations).toEqual([]);
  // Never sent a model it lacks (a 404 would have failed the job), and every job served exactly once.
  const where = servedBy(stack.fakes);
  for (let i = 0; i < 40; i++) expect(where.get(`job ${i}`), `job ${i}`).toHaveLength(1);
  expect(mac.seen.every((s) => s.model !== "gemma3")).toBe(true);
  expect(box.seen.every((s) => s.model !== "llama3.2")).toBe(true);
  // The row names the target of its attempt: the one whose log has it.
  for (const [i, row] of rows.entries()) expect(row.target).toBe(where.get(`job ${i}`)![0]!);
  // Both did work: one queue, two GPUs.
  expect(mac.seen.length).toBeGreaterThan(0);
  expect(box.seen.length).toBeGreaterThan(0);
  // The job view and the job-end log line say where it ran.
  const view = (await (await stack.request("GET", `/jobs/${ids[0]}`)).json()) as Record<string, unknown>;
  expect(view.target).toBe(rows[0]!.target);
  await until(() => stack!.logs.some((l) => l.includes('"job ended"') || l.includes("job ended")), 5000, "job-end lines");
  expect(stack.logs.find((l) => l.includes("job ended") && l.includes(ids[0]!))).toContain(`"target":"${rows[0]!.target}"`);
});

test("a model only one target has runs there; a model none has is a 404; /api/tags is the union, /api/ps names each target", async () => {
  stack = await startInProcess({
    targets: [
      { name: "a", fake: { models: ["llama3.2"] } },
      { name: "b", fake: { models: ["qwen3"] } },
    ],
  });
  const tags = (await (await stack.request("GET", "/api/tags")).json()) as { models: { name: string }[] };
  expect(tags.models.map((m) => m.name).sort()).toEqual(["all-minilm:latest", "llama3.2:latest", "qwen3:latest"]);
  const missing = await stack.request("POST", "/api/generate", { model: "mistral", prompt: "x", stream: false });
  expect(missing.status).toBe(404);
  const rows = await Promise.all(
    [await submit("qwen3", "q1"), await submit("llama3.2", "l1"), await submit("qwen3", "q2")].map((id) => stack!.ended(id)),
  );
  expect(rows.map((r) => [r.model, r.state, r.target])).toEqual([
    ["qwen3", "done", "b"],
    ["llama3.2", "done", "a"],
    ["qwen3", "done", "b"],
  ]);
  await stack.inventory.refresh();
  const ps = (await (await stack.request("GET", "/api/ps")).json()) as { models: { name: string; target: string }[] };
  expect(ps.models.map((m) => [m.name, m.target]).sort()).toEqual([
    ["llama3.2:latest", "a"],
    ["qwen3:latest", "b"],
  ]);
  const queue = (await (await stack.request("GET", "/queue")).json()) as { targets: Array<Record<string, unknown>> };
  expect(queue.targets.map((t) => [t.name, t.reachable, t.slots, t.resident])).toEqual([
    ["a", true, 1, ["llama3.2:latest"]],
    ["b", true, 1, ["qwen3:latest"]],
  ]);
});

test("slots: a target with 4 keeps up to 4 of its loaded key in flight, never 5, never a second key beside them", async () => {
  stack = await startInProcess({
    targets: [{ name: "big", slots: 4, fake: { parallel: { slots: 4, slowdown: 1.5 }, loadDelayMs: 10, tokenDelayMs: 3 } }],
  });
  const ids: string[] = [];
  for (let i = 0; i < 30; i++) ids.push(await submit(i % 10 < 7 ? "llama3.2" : "qwen3", `job ${i} one two three`));
  const rows = await Promise.all(ids.map((id) => stack!.ended(id)));
  expect(rows.every((r) => r.state === "done" && r.attempts === 1 && r.target === "big")).toBe(true);
  const big = stack.fakes.get("big")!;
  expect(big.violations).toEqual([]);
  expect(big.maxInFlight).toBeGreaterThan(1);
  expect(big.maxInFlight).toBeLessThanOrEqual(4);
  expect(big.seen).toHaveLength(30);
});

test("a target that dies mid-job: the job is re-queued without spending an attempt and finishes on the other; the dead one rejoins", async () => {
  stack = await startInProcess({
    targets: [
      { name: "a", fake: { tokenDelayMs: 5 } },
      { name: "b", fake: { tokenDelayMs: 5 } },
    ],
    env: { FOREMAN_POLL_INTERVAL: "200ms" },
  });
  const a = stack.fakes.get("a")!;
  const b = stack.fakes.get("b")!;
  // Hold whichever target takes the first job, mid-stream.
  const releaseA = a.hold(2);
  const releaseB = b.hold(2);
  const id = (await stack.jobs.submit("generate", { model: "llama3.2", prompt: "one two three four five" }, { source: "jobs" }))
    .job.id;
  await until(() => stack!.store.getJob(id)!.state === "working", 5000, "the job to start");
  const first = stack.store.getJob(id)!.target!;
  const [dead, alive] = first === "a" ? [a, b] : [b, a];
  // The one running it dies with the job held mid-stream; the other's hold is lifted for the job's second run.
  (dead === a ? releaseB : releaseA)();
  await dead.stop();
  (dead === a ? releaseA : releaseB)();
  const row = await stack.ended(id);
  expect(row.state).toBe("done");
  expect(row.attempts).toBe(1);
  expect(row.target).toBe(alive === a ? "a" : "b");
  expect(alive.seen).toHaveLength(1);
  expect(dead.violations).toEqual([]);
  expect(alive.violations).toEqual([]);
  // Degraded alone: /healthz is not degraded while another answers, and lists each target.
  await until(
    async () => {
      const health = (await (await stack!.request("GET", "/healthz")).json()) as {
        targets: { name: string; reachable: boolean }[];
      };
      return health.targets.some((t) => !t.reachable);
    },
    5000,
    "the dead target to show in /healthz",
  );
  const health = (await (await stack.request("GET", "/healthz")).json()) as { degraded: boolean };
  expect(health.degraded).toBe(false);
  // Back on the same port: it rejoins at its next poll, no restart, and takes work again.
  dead.start();
  await until(
    async () => {
      const h = (await (await stack!.request("GET", "/healthz")).json()) as { targets: { reachable: boolean }[] };
      return h.targets.every((t) => t.reachable);
    },
    5000,
    "the target to rejoin",
  );
  const hold = alive.hold(0);
  const next = await submit("llama3.2", "after the return");
  const again = await stack.ended(next);
  hold();
  expect(again.state).toBe("done");
  expect(again.target).toBe(dead === a ? "a" : "b");
});

test("cancel aborts the job on whichever target runs it", async () => {
  stack = await startInProcess({
    targets: [
      { name: "a", fake: { models: ["llama3.2"] } },
      { name: "b", fake: { models: ["qwen3"] } },
    ],
  });
  const b = stack.fakes.get("b")!;
  const release = b.hold(1);
  const id = (await stack.jobs.submit("generate", { model: "qwen3", prompt: "one two three" }, { source: "jobs" })).job.id;
  await until(() => stack!.store.getJob(id)!.state === "working", 5000, "the job to start on b");
  const canceled = await stack.request("DELETE", `/jobs/${id}`);
  expect(canceled.status).toBe(200);
  await until(() => b.seen[0]?.aborted === true, 5000, "b's request to be aborted");
  release();
  expect((await stack.ended(id)).state).toBe("canceled");
});

/** Seeds what each target has learned a model key costs there (as finished jobs would have taught it). */
function learned(target: string, modelKey: string, loadMs: number, runMs: number): void {
  stack!.db.run(
    `INSERT INTO target_costs (target, model_key, load_ms, run_ms, jobs, loads, updated_at) VALUES (?, ?, ?, ?, 10, 10, 0)
     ON CONFLICT (target, model_key) DO UPDATE SET load_ms = excluded.load_ms, run_ms = excluded.run_ms`,
    [target, modelKey, loadMs, runMs],
  );
}

async function twoTargetsWithLlamaOnA(): Promise<{ a: FakeOllama; b: FakeOllama }> {
  stack = await startInProcess({ targets: [{ name: "a" }, { name: "b" }] });
  const a = stack.fakes.get("a")!;
  const b = stack.fakes.get("b")!;
  a.loaded = "llama3.2:latest";
  await stack.inventory.refresh();
  return { a, b };
}

test("placement: a free target leaves a group to the target that has it resident when that one's remaining work is less than a load here", async () => {
  const { a, b } = await twoTargetsWithLlamaOnA();
  learned("a", "llama3.2:latest", 50, 10);
  learned("b", "llama3.2:latest", 5000, 10);
  const release = a.hold(0);
  const ids = [await submit("llama3.2", "p1"), await submit("llama3.2", "p2"), await submit("llama3.2", "p3")];
  await until(() => a.seen.length === 1, 5000, "a to take the first");
  // b is woken by every enqueue and job change; a's remaining work (3 × 10 ms) is far below b's 5 s load.
  await Bun.sleep(300);
  expect(b.seen).toEqual([]);
  release();
  const rows = await Promise.all(ids.map((id) => stack!.ended(id)));
  expect(rows.map((r) => [r.state, r.target])).toEqual([
    ["done", "a"],
    ["done", "a"],
    ["done", "a"],
  ]);
  // What ran was learned per target and model key, beside the key's costs anywhere.
  expect(stack!.store.costs.forTarget("a").get("llama3.2:latest")!.jobs).toBe(13);
  expect(stack!.store.costs.forTarget("b").get("llama3.2:latest")!.jobs).toBe(10);
});

test("placement: a load here cheaper than the resident target's remaining work is taken: the group is shared", async () => {
  const { a, b } = await twoTargetsWithLlamaOnA();
  learned("a", "llama3.2:latest", 50, 1000);
  learned("b", "llama3.2:latest", 20, 1000);
  const release = a.hold(0);
  const ids = [await submit("llama3.2", "s1"), await submit("llama3.2", "s2"), await submit("llama3.2", "s3")];
  // a holds one and has two more queued (3 × 1 s left), against a 20 ms load on b.
  await until(() => b.seen.length > 0, 5000, "b to load the group too");
  release();
  const rows = await Promise.all(ids.map((id) => stack!.ended(id)));
  expect(new Set(rows.map((r) => r.target))).toEqual(new Set(["a", "b"]));
  expect(a.violations).toEqual([]);
  expect(b.violations).toEqual([]);
});

test("around the queue: embeddings and /api/show go to a target that has the model; pull and delete act on every target", async () => {
  stack = await startInProcess({
    targets: [
      { name: "a", fake: { models: ["llama3.2"], embedModels: [] } },
      { name: "b", fake: { models: ["qwen3"], embedModels: ["all-minilm"] } },
    ],
  });
  const a = stack.fakes.get("a")!;
  const b = stack.fakes.get("b")!;
  for (const path of ["/api/embed", "/v1/embeddings"]) {
    const answer = await stack.request("POST", path, { model: "all-minilm", input: "hello" });
    expect(answer.status, path).toBe(200);
  }
  expect(b.embeds).toHaveLength(2);
  expect(a.embeds).toHaveLength(0);
  expect((await stack.request("POST", "/api/show", { model: "llama3.2" })).status).toBe(200);
  expect((await stack.request("POST", "/api/show", { model: "qwen3" })).status).toBe(200);

  // Pull on every target: one NDJSON stream, each target's progress in turn.
  const pulled = await stack.request("POST", "/api/pull", { model: "mistral" });
  expect(pulled.status).toBe(200);
  const lines = (await pulled.text())
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as { status?: string });
  expect(lines.filter((l) => l.status === "success")).toHaveLength(2);
  expect(a.has("mistral") && b.has("mistral")).toBe(true);
  // Named: one target alone.
  const one = await stack.request("POST", "/api/pull", { model: "gemma3", stream: false }, { "x-foreman-target": "b" });
  expect(one.status).toBe(200);
  expect([a.has("gemma3"), b.has("gemma3")]).toEqual([false, true]);
  expect((await stack.request("POST", "/api/pull", { model: "x" }, { "x-foreman-target": "nope" })).status).toBe(404);
  // Delete where it is: a model on one target only is deleted there, and that is a success.
  expect((await stack.request("DELETE", "/api/delete", { model: "gemma3" })).status).toBe(200);
  expect(b.has("gemma3")).toBe(false);
  expect((await stack.request("DELETE", "/api/delete", { model: "gemma3" })).status).toBe(404);
  // The inventory follows: a job for the pulled model is now accepted and runs.
  await stack.inventory.refresh();
  const id = await submit("mistral", "pulled");
  expect((await stack.ended(id)).state).toBe("done");
});

test("a job that loses every target it is sent to is refunded once per target, then spends its attempts and fails", async () => {
  stack = await startInProcess({
    targets: [
      { name: "a", fake: {} },
      { name: "b", fake: {} },
    ],
    env: { FOREMAN_MAX_ATTEMPTS: "2", FOREMAN_POLL_INTERVAL: "100ms" },
  });
  for (const fake of stack.fakes.values()) {
    for (let i = 0; i < 5; i++) fake.failures.push({ kind: "drop", afterChunks: 1 });
  }
  const id = (await stack.jobs.submit("generate", { model: "llama3.2", prompt: "one two three" }, { source: "jobs" })).job.id;
  const row = await stack.ended(id);
  expect(row.state).toBe("failed");
  expect(row.attempts).toBe(2);
  // Two refunded losses (one per target), then the two attempts it has.
  const served = [...stack.fakes.values()].reduce((n, fake) => n + fake.seen.length, 0);
  expect(served).toBe(4);
}, 30_000);

test("GET /queue with several targets: `running` is the oldest running job, each lane lists every job running on it", async () => {
  stack = await startInProcess({
    targets: [
      { name: "a", slots: 2, fake: { models: ["llama3.2"], parallel: { slots: 2, slowdown: 1 } } },
      { name: "b", fake: { models: ["qwen3"] } },
    ],
  });
  const releases = [stack.fakes.get("a")!.hold(0), stack.fakes.get("b")!.hold(0)];
  const ids = [await submit("llama3.2", "first"), await submit("llama3.2", "second"), await submit("qwen3", "third")];
  await until(() => ids.every((id) => stack!.store.getJob(id)!.state !== "queued"), 5000, "all three to run");
  const queue = (await (await stack.request("GET", "/queue")).json()) as {
    running: { id: string; started_at: string } | null;
    targets: { name: string; running: { id: string; model: string; started_at: string }[] }[];
  };
  const lane = (name: string) => queue.targets.find((t) => t.name === name)!.running;
  expect(
    lane("a")
      .map((j) => j.id)
      .sort(),
  ).toEqual([ids[0]!, ids[1]!].sort());
  expect(lane("b").map((j) => [j.id, j.model])).toEqual([[ids[2]!, "qwen3"]]);
  const all = [...lane("a"), ...lane("b")];
  const oldest = all.reduce((a, b) => (Date.parse(b.started_at) < Date.parse(a.started_at) ? b : a));
  expect(queue.running?.started_at).toBe(oldest.started_at);
  expect(all.map((j) => j.id)).toContain(queue.running!.id);
  for (const release of releases) release();
  await Promise.all(ids.map((id) => stack!.ended(id)));
});
