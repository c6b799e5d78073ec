// What a client key sees of the queue while others' work waits and runs, in-process: its own jobs by id and
// prompt, the rest as the anonymous aggregate (counts per model, the running model), in GET /queue and in
// the dashboard feed; an admin sees every job and who asked. Webhook deliveries carry the key too.
import { afterEach, describe, expect, test } from "bun:test";
import type { DashboardSnapshot } from "../../src/dashboard/types";
import { readSse } from "../../src/ui/sse";
import { until } from "../harness";
import { type InProcessStack, startInProcess } from "../in-process";

const ADMIN = { authorization: "Bearer admin-token" };
let stack: InProcessStack;
afterEach(() => stack?.stop());

async function key(name: string): Promise<Record<string, string>> {
  const made = await stack.request("POST", "/admin/keys", { name, role: "client" }, ADMIN);
  return { authorization: `Bearer ${((await made.json()) as { secret: string }).secret}` };
}

const submit = async (auth: Record<string, string>, text: string) => {
  const response = await stack.request(
    "POST",
    "/jobs",
    { type: "chat", request: { model: "llama3.2", messages: [{ role: "user", content: text }] } },
    auth,
  );
  expect(response.status).toBe(202);
  return ((await response.json()) as { id: string }).id;
};

async function firstSnapshot(auth: Record<string, string>): Promise<DashboardSnapshot> {
  const response = await stack.request("GET", "/ui/events", undefined, auth);
  expect(response.status).toBe(200);
  const events = readSse(response.body!);
  for (;;) {
    const { value, done } = await events.next();
    if (done) throw new Error("the feed ended");
    if (value.event !== "snapshot") continue;
    await events.return(undefined);
    return JSON.parse(value.data) as DashboardSnapshot;
  }
}

describe("a client key's view of a busy queue", () => {
  test("GET /queue and the feed: its own jobs, the others' as counts; an admin sees all and who asked", async () => {
    // Slow tokens: alice's first job runs while the rest wait.
    stack = await startInProcess({ fake: { tokenDelayMs: 100 }, env: { FOREMAN_TOKEN: "admin-token" } });
    const alice = await key("alice");
    const bob = await key("bob");
    const running = await submit(alice, "alice-secret-one");
    await until(() => stack.store.getJobHead(running)?.state !== "queued", 5000, "alice's job to start");
    const aliceQueued = await submit(alice, "alice-secret-two");
    const bobQueued = await submit(bob, "bob-own-prompt");

    const queueOf = async (auth: Record<string, string>) =>
      (await (await stack.request("GET", "/queue", undefined, auth)).json()) as {
        depth: number;
        by_model: Record<string, number>;
        running: { id: string | null; key: string | null; model: string } | null;
      };
    const bobQueue = await queueOf(bob);
    expect(bobQueue).toMatchObject({
      depth: 2,
      by_model: { "llama3.2": 2 },
      running: { id: null, key: null, model: "llama3.2" },
    });
    expect((await queueOf(alice)).running).toMatchObject({ id: running, key: "alice" });
    expect((await queueOf(ADMIN)).running).toMatchObject({ id: running, key: "alice" });

    const bobView = await firstSnapshot(bob);
    const text = JSON.stringify(bobView);
    for (const secret of ["alice-secret-one", "alice-secret-two", running, aliceQueued]) expect(text).not.toContain(secret);
    expect(bobView.running).toMatchObject({ id: "", preview: "", key: null, model: "llama3.2" });
    expect(bobView.queue.total).toBe(2);
    expect(bobView.queue.groups[0]!.count).toBe(2);
    expect(bobView.queue.groups[0]!.jobs.map((job) => [job.id, job.preview, job.key])).toEqual([
      [bobQueued, "bob-own-prompt", "bob"],
    ]);
    expect(bobView.queue.groups[0]!.more).toBe(1);

    const aliceView = await firstSnapshot(alice);
    expect(aliceView.running).toMatchObject({ id: running, key: "alice" });
    expect(aliceView.running!.preview).toContain("alice-secret-one");
    expect(aliceView.queue.groups[0]!.jobs.map((job) => job.id)).toEqual([aliceQueued]);

    const adminView = await firstSnapshot(ADMIN);
    expect(adminView.queue.groups[0]!.jobs.map((job) => [job.id, job.key])).toEqual([
      [aliceQueued, "alice"],
      [bobQueued, "bob"],
    ]);
    for (const id of [running, aliceQueued, bobQueued]) stack.jobs.cancel(id);
  });
});
