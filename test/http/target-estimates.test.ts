// Start estimates with several Ollama targets: the plan is played per target (each lane drains the key
// it holds, then what the placement rule gives it, only models it has, slots dividing run time), so the
// estimates come in the order the jobs really start, not the order one GPU would run them in.
import { afterEach, expect, test } from "bun:test";
import { until } from "../harness";
import { type InProcessStack, startInProcess } from "../in-process";

let stack: InProcessStack | undefined;
afterEach(async () => {
  await stack?.stop();
  stack = undefined;
});

async function submit(model: string, prompt: string): Promise<string> {
  return (await stack!.jobs.submit("generate", { model, prompt }, { source: "jobs" })).job.id;
}

const view = async (id: string) => (await (await stack!.request("GET", `/jobs/${id}`)).json()) as Record<string, any>;

test("two targets: estimates and positions follow the order the jobs start in across both", async () => {
  stack = await startInProcess({
    targets: [
      { name: "a", fake: { models: ["llama3.2", "qwen3"], tokenDelayMs: 10 } },
      { name: "b", fake: { models: ["qwen3", "mistral"], tokenDelayMs: 10 } },
    ],
  });
  const releases = [stack.fakes.get("a")!.hold(0), stack.fakes.get("b")!.hold(0)];
  // Each target busy with a key only it has: llama3.2 on a, mistral on b.
  const busy = [await submit("llama3.2", "busy a"), await submit("mistral", "busy b")];
  await until(() => busy.every((id) => stack!.store.getJob(id)!.state !== "queued"), 5000, "both targets to be busy");
  expect(busy.map((id) => stack!.store.getJob(id)!.target)).toEqual(["a", "b"]);
  // Behind them: three of a model both have, then one for each target's own key. One GPU would run
  // llama3.2's, then qwen3's three, then mistral's last; two run each held key first, side by side, then
  // share qwen3's.
  const queued = [
    await submit("qwen3", "q1"),
    await submit("qwen3", "q2"),
    await submit("qwen3", "q3"),
    await submit("llama3.2", "l1"),
    await submit("mistral", "m1"),
  ];
  const views = await Promise.all(queued.map(view));
  expect(views.every((v) => v.state === "queued")).toBe(true);
  const estimates = views.map((v) => Date.parse(v.estimated_start_at));
  const [q1, q2, q3, l1, m1] = estimates as [number, number, number, number, number];
  // Each target's own key first, at the same time; the shared group after, split over both.
  expect(Math.abs(l1 - m1)).toBeLessThan(50);
  expect(m1).toBeLessThan(q1);
  expect(q1).toBeLessThan(q2);
  expect(q2).toBeLessThan(q3);
  // Two jobs at each step, so the last starts two runs after the first, not four.
  expect(q3 - l1).toBeLessThan(2.5 * (q1 - l1));
  // Positions agree with the estimates: a later position never starts earlier.
  const byPosition = [...views].sort((a, b) => a.queue_position - b.queue_position);
  expect(byPosition.map((v) => v.queue_position)).toEqual([1, 2, 3, 4, 5]);
  const starts = byPosition.map((v) => Date.parse(v.estimated_start_at));
  for (let i = 1; i < starts.length; i++) expect(starts[i]).toBeGreaterThanOrEqual(starts[i - 1]!);
  // GET /queue's by_model_key agrees: mistral's start is its job's, not after qwen3's.
  const queue = (await (await stack.request("GET", "/queue")).json()) as Record<string, any>;
  expect(Date.parse(queue.by_model_key["mistral:latest"].estimated_start_at)).toBeLessThan(
    Date.parse(queue.by_model_key["qwen3:latest"].estimated_start_at),
  );

  for (const release of releases) release();
  const rows = await Promise.all(queued.map((id) => stack!.ended(id)));
  expect(rows.every((r) => r.state === "done" && r.attempts === 1)).toBe(true);
  // Whatever one estimate puts before another starts no later.
  for (const [i, a] of rows.entries()) {
    for (const [j, b] of rows.entries()) {
      if (estimates[i]! < estimates[j]! - 1) expect([queued[i], a.startedAt! <= b.startedAt!]).toEqual([queued[i], true]);
    }
  }
  expect(rows.map((r) => r.target)).toEqual([expect.any(String), expect.any(String), expect.any(String), "a", "b"]);
});

test("slots divide run time: a group shared by a 2-slot and a 1-slot target starts a job every third of a run", async () => {
  stack = await startInProcess({
    targets: [
      { name: "a", slots: 2, fake: { models: ["llama3.2", "qwen3"], parallel: { slots: 2, slowdown: 1 }, tokenDelayMs: 5 } },
      { name: "b", fake: { models: ["qwen3"], tokenDelayMs: 5 } },
    ],
  });
  const releases = [stack.fakes.get("a")!.hold(0), stack.fakes.get("b")!.hold(0)];
  // Both of a's slots on llama3.2, b on qwen3; nothing learned yet, so every job is expected to take 1 s.
  const busy = [await submit("llama3.2", "busy a1"), await submit("llama3.2", "busy a2"), await submit("qwen3", "busy b")];
  await until(() => busy.every((id) => stack!.store.getJob(id)!.state !== "queued"), 5000, "every slot to be busy");
  expect(busy.map((id) => stack!.store.getJob(id)!.target)).toEqual(["a", "a", "b"]);
  const queued: string[] = [];
  for (let i = 1; i <= 4; i++) queued.push(await submit("qwen3", `q${i}`));
  const estimates = (await Promise.all(queued.map(view))).map((v) => Date.parse(v.estimated_start_at));
  for (let i = 1; i < estimates.length; i++) expect(estimates[i]).toBeGreaterThan(estimates[i - 1]!);
  // Three slots on qwen3 from the first start on: 1 s / 3 between starts (one slot each: 1/2 s; one GPU: 1 s).
  const step = (estimates[3]! - estimates[0]!) / 3;
  expect(step).toBeGreaterThan(300);
  expect(step).toBeLessThan(370);

  for (const release of releases) release();
  const rows = await Promise.all(queued.map((id) => stack!.ended(id)));
  expect(rows.every((r) => r.state === "done" && r.attempts === 1)).toBe(true);
  for (let i = 1; i < rows.length; i++) expect(rows[i]!.startedAt!).toBeGreaterThanOrEqual(rows[i - 1]!.startedAt!);
  expect(new Set(rows.map((r) => r.target))).toEqual(new Set(["a", "b"]));
  expect([...stack.fakes.values()].flatMap((f) => f.violations)).toEqual([]);
});
