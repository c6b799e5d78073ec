// Learned costs and start estimates as the API shows them: GET /jobs/{id}, the job list and GET /queue.
import { afterEach, expect, test } from "bun:test";
import { type Stack, startStack, until } from "../harness";

let stack: Stack | undefined;
afterEach(async () => {
  await stack?.stop();
  stack = undefined;
});

async function call(method: string, path: string, body?: unknown) {
  const response = await fetch(`${stack!.foreman.url}${path}`, {
    method,
    headers: body === undefined ? {} : { "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  expect(response.status).toBeLessThan(300);
  return (await response.json()) as Record<string, any>;
}

const generate = (model: string, prompt: string) => ({ type: "generate", request: { model, prompt } });

test("queued jobs carry an estimated start in the scheduler's order; /queue shows each model key's learned costs", async () => {
  stack = await startStack({ fake: { tokenDelayMs: 20, loadDelayMs: 50 } });
  // Teach llama3.2 its costs (one swap), then hold the GPU with a long job and queue three behind it.
  const first = await call("POST", "/jobs", generate("llama3.2", "one two three"));
  await until(async () => (await call("GET", `/jobs/${first.id}`)).state === "done", 10_000, "the first job");
  const learned = (await call("GET", "/queue")).by_model_key["llama3.2:latest"];
  expect(learned).toMatchObject({ queued: 0, learned_from: 1, estimated_start_at: null });
  expect(learned.expected_load_ms).toBeGreaterThanOrEqual(50);
  expect(learned.expected_run_ms).toBeGreaterThan(0);

  await call("POST", "/jobs", generate("llama3.2", "a b c d e f g h i j k l m n o p q r s t"));
  await until(() => stack!.fake.inFlight === 1, 5000, "the long job to run");
  const warm = [await call("POST", "/jobs", generate("llama3.2", "x")), await call("POST", "/jobs", generate("llama3.2", "y"))];
  const other = await call("POST", "/jobs", generate("qwen3", "z"));
  const views = await Promise.all([...warm, other].map((job) => call("GET", `/jobs/${job.id}`)));
  const starts = views.map((view) => Date.parse(view.estimated_start_at));
  expect(views.map((view) => view.state)).toEqual(["queued", "queued", "queued"]);
  // The loaded model's jobs first, in order; the other model after them (and after its load).
  expect(starts[0]).toBeLessThanOrEqual(starts[1]!);
  expect(starts[1]).toBeLessThan(starts[2]!);
  // The list shows the same estimates (made at a later moment, so compared by order, not by value).
  const listed = (await call("GET", "/jobs?state=queued")).jobs as Record<string, any>[];
  expect(listed.map((job) => job.id)).toEqual([other.id, warm[1]!.id, warm[0]!.id]);
  const listedStarts = listed.map((job) => Date.parse(job.estimated_start_at));
  expect(listedStarts[0]).toBeGreaterThan(listedStarts[1]!);
  expect(listedStarts[1]).toBeGreaterThanOrEqual(listedStarts[2]!);

  const queue = await call("GET", "/queue");
  expect(queue.by_model_key["llama3.2:latest"]).toMatchObject({ queued: 2 });
  expect(queue.by_model_key["qwen3:latest"]).toMatchObject({ queued: 1, expected_load_ms: null, learned_from: 0 });
  expect(Date.parse(queue.by_model_key["qwen3:latest"].estimated_start_at)).toBeGreaterThan(
    Date.parse(queue.by_model_key["llama3.2:latest"].estimated_start_at),
  );

  await until(async () => (await call("GET", `/jobs/${other.id}`)).state === "done", 10_000, "the queue to drain");
  expect((await call("GET", `/jobs/${other.id}`)).estimated_start_at).toBeNull();
  expect((await call("GET", "/queue")).by_model_key["qwen3:latest"]).toMatchObject({ queued: 0, learned_from: 1 });
});

test("queue_position is the order the scheduler runs the queue in, and agrees with the start estimates", async () => {
  stack = await startStack();
  const release = stack.fake.hold();
  const running = await call("POST", "/jobs", generate("llama3.2", "running"));
  await until(() => stack!.fake.inFlight === 1, 5000, "the llama3.2 job to run");
  // The newcomer's mix: five jobs of another model, then one of the running model, then one at a higher priority.
  const queued: Record<string, any>[] = [];
  for (const prompt of ["q1", "q2", "q3", "q4", "q5"]) queued.push(await call("POST", "/jobs", generate("qwen3", prompt)));
  queued.push(await call("POST", "/jobs", generate("llama3.2", "l1")));
  queued.push(await call("POST", "/jobs", { ...generate("llama3.2", "p1"), priority: 1 }));
  const views = await Promise.all(queued.map((job) => call("GET", `/jobs/${job.id}`)));
  const byPosition = [...views].sort((a, b) => a.queue_position - b.queue_position);
  expect(byPosition.map((view) => view.queue_position)).toEqual([1, 2, 3, 4, 5, 6, 7]);
  // A later position never starts earlier.
  const starts = byPosition.map((view) => Date.parse(view.estimated_start_at));
  for (let i = 1; i < starts.length; i++) expect(starts[i]).toBeGreaterThanOrEqual(starts[i - 1]!);
  // The list shows the same positions.
  const listed = (await call("GET", "/jobs?state=queued")).jobs as Record<string, any>[];
  expect(Object.fromEntries(listed.map((job) => [job.id, job.queue_position]))).toEqual(
    Object.fromEntries(views.map((view) => [view.id, view.queue_position])),
  );

  release();
  // Every job ended, not just claimed: a queue of depth 0 may still have its last request on the way to the fake.
  await until(
    async () => (await Promise.all(queued.map((job) => call("GET", `/jobs/${job.id}`)))).every((view) => view.state === "done"),
    10_000,
    "every job to end",
  );
  const prompts = ["q1", "q2", "q3", "q4", "q5", "l1", "p1"];
  const promptOf = (view: Record<string, any>) => prompts[queued.findIndex((job) => job.id === view.id)];
  const served = stack.fake.generations.map((seen) => seen.body.prompt);
  expect(served).toEqual(["running", ...byPosition.map(promptOf)]);
  expect(running.state).toBe("queued");
});

test("a job past FOREMAN_MAX_WAIT is placed where the starvation guard runs it: positions, estimates and the serving order agree", async () => {
  stack = await startStack({ env: { FOREMAN_MAX_WAIT: "1s" } });
  const release = stack.fake.hold();
  await call("POST", "/jobs", generate("llama3.2", "running"));
  await until(() => stack!.fake.inFlight === 1, 5000, "the llama3.2 job to run");
  // Two jobs that pass the guard while llama3.2 holds the GPU: one of qwen3, then one of a third model.
  const queued: Record<string, any>[] = [];
  queued.push(await call("POST", "/jobs", generate("qwen3", "q0")));
  queued.push(await call("POST", "/jobs", generate("mistral", "m0")));
  await Bun.sleep(1200);
  // Then a group of qwen3 that is not overdue. Drain-by-model alone would run qwen3's four before mistral's one;
  // the guard takes q0 and m0 first, oldest first, and the rest of qwen3 after them.
  for (const prompt of ["q1", "q2", "q3"]) queued.push(await call("POST", "/jobs", generate("qwen3", prompt)));
  const views = await Promise.all(queued.map((job) => call("GET", `/jobs/${job.id}`)));
  const byPosition = [...views].sort((a, b) => a.queue_position - b.queue_position);
  expect(byPosition.map((view) => view.queue_position)).toEqual([1, 2, 3, 4, 5]);
  const starts = byPosition.map((view) => Date.parse(view.estimated_start_at));
  for (let i = 1; i < starts.length; i++) expect(starts[i]).toBeGreaterThanOrEqual(starts[i - 1]!);
  const listed = (await call("GET", "/jobs?state=queued")).jobs as Record<string, any>[];
  expect(Object.fromEntries(listed.map((job) => [job.id, job.queue_position]))).toEqual(
    Object.fromEntries(views.map((view) => [view.id, view.queue_position])),
  );

  release();
  // Every job ended, not just claimed: a queue of depth 0 may still have its last request on the way to the fake.
  await until(
    async () => (await Promise.all(queued.map((job) => call("GET", `/jobs/${job.id}`)))).every((view) => view.state === "done"),
    10_000,
    "every job to end",
  );
  const prompts = ["q0", "m0", "q1", "q2", "q3"];
  const promptOf = (view: Record<string, any>) => prompts[queued.findIndex((job) => job.id === view.id)];
  const served = stack.fake.generations.map((seen) => seen.body.prompt);
  expect(served).toEqual(["running", ...byPosition.map(promptOf)]);
  expect(served).toEqual(["running", "q0", "m0", "q1", "q2", "q3"]);
});
