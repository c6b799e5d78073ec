// The job loop over an asynchronous store (as the PostgreSQL engine will be): the same JobStore behind
// answers that are Promises, each a few random milliseconds late on the way there and on the way back,
// so claims, ends and looks interleave with the runner's other work as a database on a server makes them.
import { present } from "../../src/queue/maybe-promise";
import { afterEach, expect, test } from "bun:test";
import type { RunnerStore } from "../../src/queue/runner-store";
import type { JobRow, JobStore } from "../../src/queue/store";
import { until } from "../harness";
import { type InProcessStack, startInProcess } from "../in-process";

let stack: InProcessStack | undefined;
afterEach(async () => {
  await stack?.stop();
  stack = undefined;
});

/** Up to 1.5 ms: half the trip of a store's answer. */
const leg = () => new Promise((resolve) => setTimeout(resolve, Math.random() * 1.5));

/**
 * `store` with every RunnerStore method answering a Promise, 0–3 ms late (the work is done after the
 * first leg, the answer given after the second); `onClaimed` runs in between for each job claimed.
 */
function asyncStore(store: JobStore, onClaimed: (job: JobRow) => void = () => {}): RunnerStore & { costs: JobStore["costs"] } {
  const late =
    <A extends unknown[], T>(op: (...args: A) => T, then: (value: T) => void = () => {}) =>
    async (...args: A): Promise<T> => {
      await leg();
      const value = op(...args);
      then(value);
      await leg();
      return value;
    };
  return {
    recoverInterruptedJobs: late(() => store.recoverInterruptedJobs()),
    claimNextJob: late(
      (policy) => store.claimNextJob(policy),
      (job) => job && onClaimed(job),
    ),
    markWorking: late((id) => store.markWorking(id)),
    finishJob: late((id, result, artifacts, usage) => store.finishJob(id, result, artifacts, usage)),
    failJob: late((id, error, status, artifacts) => store.failJob(id, error, status, artifacts)),
    cancelJob: late((id, reason) => store.cancelJob(id, reason)),
    requeueJob: late((id, runAfter, error, status, refund) => store.requeueJob(id, runAfter, error, status, refund)),
    jobState: late((id) => store.jobState(id)),
    nextRunAfter: late(() => store.nextRunAfter()),
    pruneFinishedJobs: late((before) => store.pruneFinishedJobs(before)),
    // Read inside a claim (placement): an async store answers them from its claim's snapshot.
    costs: store.costs,
    queuedOfKey: (modelKey) => store.queuedOfKey(modelKey),
  };
}

const MODELS = ["llama3.2", "qwen3", "mistral"];
const promptOf = (job: JobRow) => (JSON.parse(job.request) as { prompt: string }).prompt;

/** 200 jobs over three models, queued while the first is held on the GPU; resolves with the fake's swaps. */
async function drain200(): Promise<number> {
  const s = stack!;
  const release = s.fake.hold();
  const ids = [(await s.jobs.submit("generate", { model: MODELS[0], prompt: "job 0" }, { source: "jobs" })).job.id];
  await s.fake.nextArrival();
  for (let i = 1; i < 200; i++) {
    const body = { model: MODELS[i % MODELS.length], prompt: `job ${i}` };
    ids.push((await s.jobs.submit("generate", body, { source: "jobs" })).job.id);
  }
  release();
  const rows = await Promise.all(ids.map((id) => s.ended(id)));
  expect(rows.filter((row) => row.state !== "done")).toEqual([]);
  // Each ended once, told once, and run once.
  const ended = s.messages.flatMap((m) => (m.type === "ended" ? [m.jobId] : []));
  expect(ended.length).toBe(200);
  expect(new Set(ended)).toEqual(new Set(ids));
  const prompts = s.fake.seen.map((seen) => seen.body.prompt as string);
  expect(prompts.length).toBe(200);
  expect(new Set(prompts).size).toBe(200);
  expect(s.fake.maxInFlight).toBe(1);
  expect(s.fake.violations).toEqual([]);
  return s.fake.seen.filter((seen) => seen.swapped).length;
}

test("200 jobs over three models on an async store: each done once, one at a time, drained by model as on SQLite", async () => {
  stack = await startInProcess();
  const syncSwaps = await drain200();
  await stack.stop();
  stack = await startInProcess({ runnerStore: (store) => asyncStore(store) });
  const asyncSwaps = await drain200();
  // Drain-by-model: three groups, one load each (the held first job's model first), as the sync store does.
  expect(syncSwaps).toBe(MODELS.length);
  expect(asyncSwaps).toBeLessThanOrEqual(syncSwaps + 1);
}, 60_000);

test("on an async store a queued job canceled is never sent, and a running one canceled is aborted", async () => {
  stack = await startInProcess({ runnerStore: (store) => asyncStore(store) });
  const prompt = (p: string) => ({ model: "llama3.2", prompt: p });
  const release = stack.fake.hold();
  const running = (await stack.jobs.submit("generate", prompt("running"), { source: "jobs" })).job;
  await stack.fake.nextArrival();
  const queued = (await stack.jobs.submit("generate", prompt("queued"), { source: "jobs" })).job;
  const last = (await stack.jobs.submit("generate", prompt("last"), { source: "jobs" })).job;
  expect(present(stack!.jobs.cancel(queued.id), "the test")?.state).toBe("canceled");
  expect(present(stack!.jobs.cancel(running.id), "the test")?.state).toBe("canceled");
  release();
  expect((await stack.ended(last.id)).state).toBe("done");
  expect(stack.fake.seen.map((seen) => seen.body.prompt)).toEqual(["running", "last"]);
  // The runner aborted it (not its answer's end): it says so, and the next request waited for the abort.
  expect(stack.logs.some((line) => line.includes("job canceled while running") && line.includes(running.id))).toBe(true);
  const [aborted, sent] = stack.fake.seen;
  expect(sent!.arrivedMs).toBeGreaterThanOrEqual(aborted!.servedMs!);
  expect(stack.store.getJob(running.id)!.state).toBe("canceled");
  expect(stack.store.getJob(queued.id)!.state).toBe("canceled");
  expect(stack.fake.maxInFlight).toBe(1);
});

test("on an async store a cancel that comes while the claim of its job is answered still stops it being sent", async () => {
  // The cancel is written and told after the claim marked the job loading, before the runner has its answer.
  stack = await startInProcess({
    runnerStore: (store) =>
      asyncStore(store, (job) => {
        if (promptOf(job) === "canceled") expect(present(stack!.jobs.cancel(job.id), "the test")?.state).toBe("canceled");
      }),
  });
  const prompt = (p: string) => ({ model: "llama3.2", prompt: p });
  // Queued on an idle loop: claimed by the loop's own claim, sent without a look at its row (a claim
  // ahead is looked at first, and would be caught there).
  const canceled = (await stack.jobs.submit("generate", prompt("canceled"), { source: "jobs" })).job;
  expect((await stack.ended(canceled.id)).state).toBe("canceled");
  const last = (await stack.jobs.submit("generate", prompt("last"), { source: "jobs" })).job;
  expect((await stack.ended(last.id)).state).toBe("done");
  expect(stack.fake.seen.map((seen) => seen.body.prompt)).toEqual(["last"]);
});

test("on an async store a job whose claim is answered after shutdown began goes back to the queue unsent", async () => {
  let claimed = false;
  stack = await startInProcess({
    runnerStore: (store) =>
      asyncStore(store, (job) => {
        if (promptOf(job) !== "late") return;
        claimed = true;
        stack!.runners.handle({ type: "shutdown", graceMs: 60_000 });
      }),
  });
  const late = (await stack.jobs.submit("generate", { model: "llama3.2", prompt: "late" }, { source: "jobs" })).job;
  await until(() => claimed && stack!.store.getJob(late.id)!.state === "queued", 5000, "the job given back");
  // Its attempt refunded: the claim's count undone.
  expect(stack.store.getJob(late.id)).toMatchObject({ state: "queued", attempts: 0, error: "re-queued at shutdown" });
  expect(stack.fake.seen).toEqual([]);
});

test("on an async store two targets, one of two slots, claim one at a time: never two keys on a GPU, each job done once", async () => {
  // Three runner loops in one thread, each claim 0-3 ms on its way: left to overlap, the two slots of
  // "big" could take two keys at once, which its fake (two parallel slots, one key) records.
  stack = await startInProcess({
    runnerStore: (store) => asyncStore(store),
    targets: [
      { name: "big", slots: 2, fake: { parallel: { slots: 2, slowdown: 1 }, tokenDelayMs: 1 } },
      { name: "small", fake: { tokenDelayMs: 1 } },
    ],
  });
  const ids: string[] = [];
  for (let i = 0; i < 90; i++) {
    const body = { model: MODELS[i % MODELS.length], prompt: `job ${i} one two three` };
    ids.push((await stack.jobs.submit("generate", body, { source: "jobs" })).job.id);
  }
  const rows = await Promise.all(ids.map((id) => stack!.ended(id)));
  expect(rows.filter((row) => row.state !== "done" || row.attempts !== 1)).toEqual([]);
  const fakes = [...stack.fakes.values()];
  expect(fakes.flatMap((fake) => fake.violations)).toEqual([]);
  const prompts = fakes.flatMap((fake) => fake.seen.map((seen) => seen.body.prompt));
  expect(prompts.length).toBe(90);
  expect(new Set(prompts).size).toBe(90);
  expect(stack.fakes.get("small")!.maxInFlight).toBe(1);
}, 60_000);
