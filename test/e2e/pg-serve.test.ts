// Two `foreman serve` nodes (the compiled binary, as users run it) on one throwaway PostgreSQL cluster and one
// fake GPU: every client API answers from either node with the job running on the node holding the target's
// lease; the job API and cancels work across nodes; the routes still on SQLite alone say so (501); and a
// kill -9 of the lease holder hands the target to the other node, whose clients all get their answers while the
// dead node's clients' jobs are canceled, never sent.
import { afterAll, afterEach, beforeAll, expect, test } from "bun:test";
import { Ollama } from "ollama";
import OpenAI from "openai";
import { FakeOllama } from "../fake-ollama";
import { type ForemanProcess, runForeman, spawnForeman, until } from "../harness";
import { type PgCluster, startPgCluster } from "../pg-cluster";
import { WebhookReceiver, newSecret } from "../webhook/receiver";

const LEASE_TTL_MS = 1000;
let cluster: PgCluster;
let fake: FakeOllama;
let dbCount = 0;
const running: ForemanProcess[] = [];

beforeAll(async () => {
  cluster = await startPgCluster();
});
afterAll(async () => {
  await cluster.stop();
});
afterEach(async () => {
  for (const node of running.splice(0)) {
    node.process.kill();
    await node.process.exited;
  }
  await fake?.stop();
});

/** A fresh database and fake, and `names.length` nodes on them, started in order (the first takes the lease). */
async function startNodes(...names: string[]): Promise<ForemanProcess[]> {
  const db = `serve${++dbCount}`;
  await cluster.createDatabase(db);
  fake = new FakeOllama().start();
  const nodes: ForemanProcess[] = [];
  for (const name of names) {
    const node = await spawnForeman({
      FOREMAN_DB: cluster.urlFor(db),
      FOREMAN_OLLAMA_URL: fake.url,
      FOREMAN_NODE: name,
      FOREMAN_LEASE_TTL: `${LEASE_TTL_MS}ms`,
      FOREMAN_POLL_INTERVAL: "200ms",
      FOREMAN_LOG_FORMAT: "json",
      FOREMAN_WEBHOOK_ALLOW: "127.0.0.1",
    });
    running.push(node);
    nodes.push(node);
    // The first node holds the target before the next one starts.
    if (nodes.length === 1) await until(() => node.stdout().includes('"msg":"runs target"'), 10_000, "the first node's lease");
  }
  return nodes;
}

const chat = (prompt: string, stream = false) =>
  JSON.stringify({ model: "llama3.2", messages: [{ role: "user", content: prompt }], stream });

test("either node answers every API, the job running where the lease is; the job API and cancels cross nodes", async () => {
  const [a, b] = await startNodes("node-a", "node-b");
  // The official clients, unchanged, against the node that runs no GPU.
  const ollama = new Ollama({ host: b!.url });
  const whole = await ollama.chat({ model: "llama3.2", messages: [{ role: "user", content: "hello there" }] });
  expect(whole.message.content).toContain("hello there");
  let streamed = "";
  let records = 0;
  for await (const part of await ollama.chat({
    model: "llama3.2",
    messages: [{ role: "user", content: "stream me" }],
    stream: true,
  })) {
    streamed += part.message.content;
    records++;
  }
  expect(records).toBeGreaterThan(2);
  expect(streamed).toContain("stream me");
  const openai = new OpenAI({ baseURL: `${b!.url}/v1`, apiKey: "unused" });
  let deltas = "";
  for await (const chunk of await openai.chat.completions.create({
    model: "llama3.2",
    messages: [{ role: "user", content: "via openai" }],
    stream: true,
  }))
    deltas += chunk.choices[0]?.delta?.content ?? "";
  expect(deltas).toContain("via openai");
  // The same stream's bytes from the node running it and from the other: identical records, in order.
  const body = chat("same bytes", true);
  const [fromA = "", fromB = ""] = await Promise.all(
    [a!, b!].map(async (node) => (await fetch(`${node.url}/api/chat`, { method: "POST", body })).text()),
  );
  const content = (text: string) =>
    text
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line).message?.content ?? "");
  expect(content(fromB)).toEqual(content(fromA));
  expect(fake.violations).toEqual([]);

  // Submitted on one node, read and waited on from the other.
  const submitted = await fetch(`${a!.url}/jobs`, {
    method: "POST",
    body: JSON.stringify({ type: "generate", request: { model: "llama3.2", prompt: "job api" } }),
  });
  expect(submitted.status).toBe(202);
  const { id } = (await submitted.json()) as { id: string };
  await until(
    async () => ((await (await fetch(`${b!.url}/jobs/${id}`)).json()) as { state: string }).state === "done",
    10_000,
    "the job",
  );
  const seenFromB = (await (await fetch(`${b!.url}/jobs/${id}`)).json()) as { result: { response: string }; target: string };
  expect(seenFromB.result.response).toContain("job api");
  const listed = (await (await fetch(`${b!.url}/jobs?limit=50`)).json()) as { jobs: Array<{ id: string }> };
  expect(listed.jobs.map((job) => job.id)).toContain(id);

  // A running job canceled through the other node: its call on the GPU is aborted, its client told.
  const release = fake.hold();
  const arrival = fake.nextArrival();
  const waiting = fetch(`${a!.url}/api/chat`, { method: "POST", body: chat("cancel me") });
  const seen = await arrival;
  const runningJob =
    ((await (await fetch(`${b!.url}/jobs?state=working`)).json()) as { jobs: Array<{ id: string }> }).jobs[0] ??
    ((await (await fetch(`${b!.url}/jobs?state=loading`)).json()) as { jobs: Array<{ id: string }> }).jobs[0];
  expect(runningJob).toBeDefined();
  const canceled = await fetch(`${b!.url}/jobs/${runningJob!.id}`, { method: "DELETE" });
  expect(canceled.status).toBe(200);
  await until(() => seen.aborted === true, 5_000, "the GPU call's abort");
  release();
  const answer = await waiting;
  expect(answer.status).toBe(499);
  expect(((await answer.json()) as { error: string }).error).toBe("request canceled");

  // The dashboard from the node that runs no GPU: the shared queue's picture (the jobs that ran on the other).
  expect((await fetch(`${b!.url}/ui`)).status).toBe(200);
  const feed = await fetch(`${b!.url}/ui/events`);
  const reader = feed.body!.getReader();
  let text = "";
  while (!text.includes("\n\n")) text += new TextDecoder().decode((await reader.read()).value);
  await reader.cancel();
  const snapshot = JSON.parse(/^data: (.*)$/m.exec(text)![1]!) as { recent: Array<{ id: string; state: string }> };
  expect(snapshot.recent.map((job) => job.id)).toContain(id);
  expect(snapshot.recent.find((job) => job.id === runningJob!.id)?.state).toBe("canceled");

  // What lives on SQLite alone so far answers 501 in its API's shape, with or without a body.
  // /metrics from either node: the shared queue's gauges, and the job ends each node made (their sum is every end).
  const scraped = await Promise.all([a!, b!].map(async (node) => (await fetch(`${node.url}/metrics`)).text()));
  const ends = (text: string) =>
    [...text.matchAll(/^foreman_jobs_ended_total\{[^}]*\} (\d+)$/gm)].reduce((sum, match) => sum + Number(match[1]), 0);
  for (const text of scraped) expect(text).toContain("foreman_queue_depth 0");
  const listedAll = (await (await fetch(`${b!.url}/jobs?limit=100`)).json()) as { jobs: unknown[] };
  expect(ends(scraped[0]!) + ends(scraped[1]!)).toBe(listedAll.jobs.length);
  for (const [method, path] of [
    ["POST", "/v1/batches"],
    ["POST", "/v1/files"],
  ] as const) {
    const response = await fetch(`${b!.url}${path}`, { method, body: method === "POST" ? "{}" : undefined });
    expect(response.status, `${method} ${path}`).toBe(501);
    expect(JSON.stringify(await response.json())).toContain("PostgreSQL");
  }
  // A job's webhook, submitted on one node and run on the other: delivered once, signed, and shown so on both.
  const secret = newSecret();
  const receiver = new WebhookReceiver(secret).start();
  try {
    const hooked = await fetch(`${b!.url}/jobs`, {
      method: "POST",
      body: JSON.stringify({
        type: "generate",
        request: { model: "llama3.2", prompt: "tell me when" },
        webhook: { url: `${receiver.url}/hook`, secret },
      }),
    });
    expect(hooked.status).toBe(202);
    const { id: hookedId } = (await hooked.json()) as { id: string };
    const delivered = async (node: ForemanProcess) =>
      ((await (await fetch(`${node.url}/jobs/${hookedId}`)).json()) as { webhook: { state: string } }).webhook.state;
    await until(async () => (await delivered(a!)) === "delivered", 10_000, "the delivery");
    expect(await delivered(b!)).toBe("delivered");
    expect(receiver.received.length).toBe(1);
    expect(receiver.received[0]!.verified).toBe(true);
  } finally {
    await receiver.stop();
  }
}, 60_000);

test("kill -9 of the node holding the GPU: the other takes it over in a lease time, answers all its clients, and the dead node's clients' jobs never run", async () => {
  const [a, b] = await startNodes("node-a", "node-b");
  const release = fake.hold();
  const first = fake.nextArrival();
  // One client of node B whose job runs on A when A dies; more of B's and of A's waiting behind it; job API work too.
  const onB = [fetch(`${b!.url}/api/chat`, { method: "POST", body: chat("b-0") })];
  await first;
  for (let i = 1; i < 4; i++) onB.push(fetch(`${b!.url}/api/chat`, { method: "POST", body: chat(`b-${i}`) }));
  const onA = [0, 1, 2].map((i) => fetch(`${a!.url}/api/chat`, { method: "POST", body: chat(`a-${i}`) }).catch(() => null));
  const jobIds: string[] = [];
  for (let i = 0; i < 3; i++) {
    const r = await fetch(`${b!.url}/jobs`, {
      method: "POST",
      body: JSON.stringify({ type: "generate", request: { model: "llama3.2", prompt: `job-${i}` } }),
    });
    jobIds.push(((await r.json()) as { id: string }).id);
  }
  await until(
    async () => ((await (await fetch(`${b!.url}/queue`)).json()) as { depth: number }).depth === 9,
    5_000,
    "all queued",
  );

  a!.process.kill(9);
  const killedAt = Date.now();
  await a!.process.exited;
  release();
  await until(() => b!.stdout().includes('"msg":"runs target"'), 10_000, "the takeover");
  const takeoverMs = Date.now() - killedAt;
  // The lease time, one poll of the free targets (a fifth of it) and the recovery's round trips.
  expect(takeoverMs).toBeLessThan(LEASE_TTL_MS * 1.2 + 1000);

  const answers = await Promise.all(onB);
  for (const answer of answers) expect(answer.status).toBe(200);
  const bodies = (await Promise.all(answers.map((r) => r.json()))) as Array<{ message: { content: string } }>;
  expect(bodies.map((body) => body.message.content).sort()).toEqual([0, 1, 2, 3].map((i) => `You said: b-${i}`).sort());
  for (const id of jobIds) {
    await until(
      async () => ((await (await fetch(`${b!.url}/jobs/${id}`)).json()) as { state: string }).state === "done",
      10_000,
      `job ${id}`,
    );
  }
  // Node A's clients died with it: their jobs end canceled and the GPU never sees them.
  await until(
    async () => {
      const list = (await (await fetch(`${b!.url}/jobs?state=canceled&limit=50`)).json()) as { jobs: unknown[] };
      return list.jobs.length === 3;
    },
    5_000,
    "the dead node's clients' jobs canceled",
  );
  const prompts = fake.seen.map((s) => JSON.stringify(s.body));
  for (let i = 0; i < 3; i++) expect(prompts.some((p) => p.includes(`a-${i}`))).toBe(false);
  // b-0 ran on A when it died: sent again on B, so it is seen twice, and nothing else is.
  expect(prompts.filter((p) => p.includes('"b-0"')).length).toBe(2);
  for (let i = 1; i < 4; i++) expect(prompts.filter((p) => p.includes(`"b-${i}"`)).length).toBe(1);
  expect(fake.violations).toEqual([]);
  expect(fake.maxInFlight).toBe(1);
}, 60_000);

/** Reads a streamed body record by record: each record's text and when it arrived (ms since `since`). */
async function recordsAsTheyCome(response: Response, since: number): Promise<Array<{ text: string; at: number }>> {
  const records: Array<{ text: string; at: number }> = [];
  let held = "";
  const decoder = new TextDecoder();
  for await (const bytes of response.body!) {
    held += decoder.decode(bytes, { stream: true });
    let newline: number;
    while ((newline = held.indexOf("\n")) >= 0) {
      records.push({ text: held.slice(0, newline + 1), at: performance.now() - since });
      held = held.slice(newline + 1);
    }
  }
  if (held) records.push({ text: held, at: performance.now() - since });
  return records;
}

test("a streaming client on one node, its job on the other: the records are relayed as they come, in order, byte for byte", async () => {
  const [a, b] = await startNodes("node-a", "node-b");
  const TOKEN_MS = 120;
  fake.tokenDelayMs = TOKEN_MS;
  const body = chat("one two three four five six", true);
  const direct = await fetch(`${a!.url}/api/chat`, { method: "POST", body });
  const fromA = await recordsAsTheyCome(direct, performance.now());
  const started = performance.now();
  const relayed = await fetch(`${b!.url}/api/chat`, { method: "POST", body });
  expect(relayed.status).toBe(200);
  expect(relayed.headers.get("content-type")).toBe(direct.headers.get("content-type"));
  const fromB = await recordsAsTheyCome(relayed, started);
  // Every record, in order; only the timings inside them (durations, created_at) differ between two runs.
  const shape = (records: Array<{ text: string }>) =>
    records.map(({ text }) => {
      const { message, done } = JSON.parse(text) as { message: { content: string }; done: boolean };
      return [message.content, done];
    });
  expect(shape(fromB)).toEqual(shape(fromA));
  expect(fromB.length).toBeGreaterThan(6);
  // Live, not the stored stream at the end: the records arrive a token's time apart, as they do from the GPU's node.
  const spread = fromB.at(-1)!.at - fromB[0]!.at;
  expect(spread).toBeGreaterThan(TOKEN_MS * (fromB.length - 2) * 0.6);
  // The relayed bytes are the job's own: what the running node stored for it, exactly.
  const id = relayed.headers.get("x-foreman-job-id")!;
  const sql = new Bun.SQL(cluster.urlFor(`serve${dbCount}`));
  try {
    // The client has the final record before the running node has written the job's end: wait for it.
    const storedStream = async () => (await sql`SELECT data FROM artifacts WHERE job_id = ${id} AND name = 'stream.ndjson'`)[0];
    await until(async () => (await storedStream()) !== undefined, 5_000, "the stored stream");
    const stored = await storedStream();
    expect(Buffer.from(stored.data).toString()).toBe(fromB.map((r) => r.text).join(""));
    const [{ secret }] = await sql`SELECT secret FROM node_secret`;
    // The relay answers the nodes' secret alone: no secret, a wrong one, or the right one for another method.
    const relayUrl = `${a!.url}/_foreman/relay/${id}`;
    expect((await fetch(relayUrl)).status).toBe(401);
    expect((await fetch(relayUrl, { headers: { authorization: `Bearer ${secret}x` } })).status).toBe(401);
    expect((await fetch(relayUrl, { method: "POST", headers: { authorization: `Bearer ${secret}` } })).status).toBe(405);
    // An ended job is not relayed (its stored stream is the answer).
    expect((await fetch(relayUrl, { headers: { authorization: `Bearer ${secret}` } })).status).toBe(404);
  } finally {
    await sql.close();
  }

  // A job API job submitted to the GPU's node, watched live (SSE) from the other: its chunks as they come.
  const submitted = await fetch(`${a!.url}/jobs`, {
    method: "POST",
    body: JSON.stringify({ type: "generate", request: { model: "llama3.2", prompt: "watch me from afar please" } }),
  });
  const { id: watchedId } = (await submitted.json()) as { id: string };
  const events = await fetch(`${b!.url}/jobs/${watchedId}/events`);
  const chunkTimes: number[] = [];
  const since = performance.now();
  let sse = "";
  for await (const bytes of events.body!) {
    const text = new TextDecoder().decode(bytes);
    for (const _ of text.matchAll(/^event: chunk$/gm)) chunkTimes.push(performance.now() - since);
    sse += text;
  }
  expect(sse).toContain("event: end");
  expect(chunkTimes.length).toBeGreaterThan(5);
  expect(chunkTimes.at(-1)! - chunkTimes[0]!).toBeGreaterThan(TOKEN_MS * (chunkTimes.length - 2) * 0.6);
  expect(fake.violations).toEqual([]);
}, 60_000);

test("the node running a relayed stream dies midway: the client is told the answer cannot be resumed, and the job is not run again", async () => {
  const [a, b] = await startNodes("node-a", "node-b");
  fake.tokenDelayMs = 50;
  const release = fake.hold(3);
  const started = performance.now();
  const response = await fetch(`${b!.url}/api/chat`, { method: "POST", body: chat("kill me midway please", true) });
  expect(response.status).toBe(200);
  const reading = recordsAsTheyCome(response, started);
  await until(() => fake.seen.length === 1, 5_000, "the job on the GPU");
  await Bun.sleep(400); // the records before the hold reach the client
  a!.process.kill(9);
  await a!.process.exited;
  release();
  const records = await reading;
  expect(records.length).toBe(4); // three records, then the error
  const last = JSON.parse(records.at(-1)!.text) as { error: string };
  expect(last.error).toContain("cannot be resumed");
  const id = response.headers.get("x-foreman-job-id")!;
  const job = (await (await fetch(`${b!.url}/jobs/${id}`)).json()) as { state: string };
  expect(job.state).toBe("canceled");
  await until(() => b!.stdout().includes('"msg":"runs target"'), 10_000, "the takeover");
  await Bun.sleep(300);
  expect(fake.seen.filter((s) => JSON.stringify(s.body).includes("kill me midway")).length).toBe(1);
}, 60_000);

test("API keys on PostgreSQL: made with the CLI, honoured by every node, each caller sees its own work, a revoke anywhere holds everywhere within a second", async () => {
  const [a, b] = await startNodes("node-a", "node-b");
  const db = { FOREMAN_DB: cluster.urlFor(`serve${dbCount}`) };
  const made = await runForeman(["keys", "create", "root", "--role", "admin"], { env: db });
  expect(made.code).toBe(0);
  const root = made.stdout.trim();
  const alice = (await runForeman(["keys", "create", "alice", "--max-jobs", "5"], { env: db })).stdout.trim();
  const bob = (await runForeman(["keys", "create", "bob", "--apis", "ollama"], { env: db })).stdout.trim();
  const carol = (await runForeman(["keys", "create", "carol"], { env: db })).stdout.trim();
  const as = (secret: string) => ({ authorization: `Bearer ${secret}` });
  // The nodes read the keys within a second: then foreman is closed to anyone without one.
  await until(async () => (await fetch(`${b!.url}/jobs`)).status === 401, 3_000, "node B closed by the keys");
  for (const node of [a!, b!])
    await until(async () => (await fetch(`${node.url}/jobs`, { headers: as(carol) })).ok, 3_000, "the last key known");
  expect((await fetch(`${a!.url}/api/tags`)).status).toBe(401);

  const submit = async (node: ForemanProcess, secret: string, prompt: string) => {
    const response = await fetch(`${node.url}/jobs`, {
      method: "POST",
      headers: as(secret),
      body: JSON.stringify({ type: "generate", request: { model: "llama3.2", prompt } }),
    });
    return { status: response.status, body: (await response.json()) as { id: string; error?: unknown } };
  };
  const mine = await submit(a!, alice, "alice's");
  expect(mine.status).toBe(202);
  const chatted = await fetch(`${b!.url}/api/chat`, { method: "POST", headers: as(bob), body: chat("bob's") });
  expect(chatted.status).toBe(200);
  // bob may use the Ollama API alone; alice sees her job from either node, and only hers; root sees both.
  expect((await submit(b!, bob, "no")).status).toBe(403);
  const seen = async (node: ForemanProcess, secret: string) =>
    ((await (await fetch(`${node.url}/jobs?limit=50`, { headers: as(secret) })).json()) as { jobs: Array<{ id: string }> }).jobs;
  expect((await seen(b!, alice)).map((job) => job.id)).toEqual([mine.body.id]);
  expect((await seen(a!, root)).length).toBe(2);
  expect(await seen(a!, carol)).toEqual([]);
  expect((await fetch(`${b!.url}/jobs/${mine.body.id}`, { headers: as(carol) })).status).toBe(404);

  // The admin API on one node, the CLI on the database: the same keys, the same usage (alice's job ended first).
  await until(
    async () =>
      ((await (await fetch(`${b!.url}/jobs/${mine.body.id}`, { headers: as(root) })).json()) as { state: string }).state ===
      "done",
    10_000,
    "alice's job",
  );
  const listed = (await (await fetch(`${b!.url}/admin/keys`, { headers: as(root) })).json()) as {
    keys: Array<{ name: string; today: { jobs: number } }>;
  };
  expect(listed.keys.map((key) => key.name)).toEqual(["alice", "bob", "carol", "root"]);
  expect((await fetch(`${b!.url}/admin/keys`, { headers: as(alice) })).status).toBe(403);
  const cli = JSON.parse((await runForeman(["keys", "list", "--json"], { env: db })).stdout) as { keys: unknown[] };
  expect(cli.keys).toEqual(listed.keys);

  // Revoked through node A's API: node B refuses the key within a second (its copy is re-read that often).
  expect((await fetch(`${a!.url}/admin/keys/alice/revoke`, { method: "POST", headers: as(root) })).status).toBe(200);
  expect((await fetch(`${a!.url}/jobs`, { headers: as(alice) })).status).toBe(401);
  const revokedAt = Date.now();
  await until(async () => (await fetch(`${b!.url}/jobs`, { headers: as(alice) })).status === 401, 3_000, "node B refusing alice");
  expect(Date.now() - revokedAt).toBeLessThan(2_000);
  const again = await runForeman(["keys", "revoke", "alice"], { env: db });
  expect(again.code).toBe(1);
  expect(again.stderr).toContain('key "alice" is revoked already');
}, 60_000);
