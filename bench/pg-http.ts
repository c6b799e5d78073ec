// The queue on PostgreSQL against SQLite through HTTP, side by side in one run: the compiled binary at its
// defaults (log level info, JSON lines to a pipe the bench reads), one on a SQLite file and one on a throwaway
// local cluster (test/pg-cluster.ts: fsync off, so the figures are the engine's and the round trips', not a
// disk's), in front of one instant fake in a process of its own (bench/fake-hold-main.ts) whose GPU the bench
// pauses. Three figures per engine: POST /jobs at a fixed concurrency while the GPU is held (the queue grows),
// the gap from a job's end to the next job's arrival at the fake as the held queue drains (the claim as the
// GPU sees it), and the latency a generation request adds over calling the fake directly.
import { existsSync } from "node:fs";
import { join } from "node:path";
import { type ForemanProcess, spawnForeman, tempDir } from "../test/harness";
import { type PgCluster, pgBinDir, startPgCluster } from "../test/pg-cluster";
import { median, quantile, table } from "./stats";

const ROOT = join(import.meta.dir, "..");
/** Jobs posted per engine and round, all queued behind the held one. */
const POSTS = 3_000;
const SUBMITTERS = 8;
/** Claims measured per round: the first after the GPU is let go, while at least POSTS - CLAIMS jobs still wait. */
const CLAIMS = 2_000;
/** Rounds of the queue phase, the engines taking turns. */
const QUEUE_ROUNDS = 2;
const LATENCY_ROUNDS = 5;
const LATENCY_PER_ROUND = 100;
/**
 * The one setting besides the database, port and Ollama URL: the default FOREMAN_MAX_QUEUE (512) would
 * answer 503 long before POSTS jobs wait.
 */
const MAX_QUEUE = String(2 * POSTS);

interface Engine {
  name: string;
  foreman: ForemanProcess;
  posts: { jobs: number; ms: number; latencies: number[] };
  gaps: number[];
  drainRates: number[];
  /** pg_stat_database's committed transactions, per job posted and per job run (PostgreSQL only). */
  xacts?: { post: number[]; run: number[] };
}

/** The fake in its own process, with its control port (see bench/fake-hold-main.ts). */
async function startFake() {
  const child = Bun.spawn(["bun", join(import.meta.dir, "fake-hold-main.ts")], { stdout: "pipe", stderr: "inherit" });
  const reader = child.stdout.getReader();
  const { value } = await reader.read();
  const [port, controlPort] = new TextDecoder().decode(value).trim().split(" ").map(Number);
  const control = `http://127.0.0.1:${controlPort}`;
  return {
    url: `http://127.0.0.1:${port}`,
    child,
    hold: () => fetch(`${control}/hold`, { method: "POST" }).then((r) => r.text()),
    release: () => fetch(`${control}/release`, { method: "POST" }).then((r) => r.text()),
    seen: async (tag: string) =>
      (await (await fetch(`${control}/seen?tag=${encodeURIComponent(tag)}`)).json()) as [number, number | null][],
    served: async (tag: string) => (await (await fetch(`${control}/served?tag=${encodeURIComponent(tag)}`)).json()) as number,
  };
}
type Fake = Awaited<ReturnType<typeof startFake>>;

/** POSTS jobs through POST /jobs from SUBMITTERS concurrent clients; each prompt starts with `tag`. */
async function postJobs(url: string, tag: string): Promise<{ ms: number; latencies: number[] }> {
  const latencies: number[] = [];
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: SUBMITTERS }, async () => {
      while (next < POSTS) {
        const body = JSON.stringify({ type: "generate", request: { model: "llama3.2", prompt: `${tag}${next++}` } });
        const t = performance.now();
        const response = await fetch(`${url}/jobs`, { method: "POST", body });
        const text = await response.text();
        latencies.push(performance.now() - t);
        if (response.status !== 202) throw new Error(`POST /jobs: ${response.status} ${text}`);
      }
    }),
  );
  return { ms: performance.now() - t0, latencies };
}

/** Committed transactions so far on the cluster's foreman database (every connection, this one's included). */
async function xactCommits(cluster: PgCluster): Promise<number> {
  const sql = new Bun.SQL(cluster.url, { max: 1 });
  try {
    // Backends flush their counters when idle, at most once a second: wait for the last flush.
    await Bun.sleep(1100);
    const [row] = await sql`SELECT xact_commit::int AS n FROM pg_stat_database WHERE datname = current_database()`;
    return row.n as number;
  } finally {
    await sql.close();
  }
}

/**
 * One engine's turn of the queue phase: the GPU held, POSTS jobs posted (the first is claimed and held, the
 * rest wait), then the GPU let go; the gaps between one job's end and the next's arrival at the fake, over the
 * first CLAIMS claims, and the rate at which the whole queue drained.
 */
async function queueRound(engine: Engine, fake: Fake, tag: string, cluster: PgCluster | undefined): Promise<void> {
  await fake.hold();
  const before = cluster && engine.xacts ? await xactCommits(cluster) : 0;
  const posted = await postJobs(engine.foreman.url, tag);
  engine.posts.jobs += POSTS;
  engine.posts.ms += posted.ms;
  engine.posts.latencies.push(...posted.latencies);
  const afterPosts = cluster && engine.xacts ? await xactCommits(cluster) : 0;
  await fake.release();
  const deadline = Date.now() + 120_000;
  while ((await fake.served(tag)) < POSTS) {
    if (Date.now() > deadline) throw new Error(`${engine.name}: the queue did not drain in 120 s`);
    await Bun.sleep(100);
  }
  const seen = await fake.seen(tag);
  for (let i = 1; i <= CLAIMS; i++) engine.gaps.push(seen[i]![0] - seen[i - 1]![1]!);
  engine.drainRates.push((POSTS - 1) / ((seen.at(-1)![1]! - seen[0]![1]!) / 1000));
  if (cluster && engine.xacts) {
    const afterRun = await xactCommits(cluster);
    engine.xacts.post.push((afterPosts - before) / POSTS);
    engine.xacts.run.push((afterRun - afterPosts) / POSTS);
  }
}

async function timeRequest(url: string, body: string): Promise<number> {
  const start = performance.now();
  const response = await fetch(`${url}/api/generate`, { method: "POST", body });
  await response.arrayBuffer();
  if (!response.ok) throw new Error(`HTTP ${response.status}`);
  return performance.now() - start;
}

/** Time to the first chunk of a small streaming request (the rest is read and dropped). */
async function timeFirstChunk(url: string, body: string): Promise<number> {
  const start = performance.now();
  const response = await fetch(`${url}/api/generate`, { method: "POST", body });
  const reader = response.body!.getReader();
  await reader.read();
  const elapsed = performance.now() - start;
  while (!(await reader.read()).done);
  if (!response.ok) throw new Error(`HTTP ${response.status}`);
  return elapsed;
}

const ms = (v: number) => v.toFixed(3);
const ratio = (pg: number, lite: number) => `${(pg / lite).toFixed(2)}×`;

export async function benchPgHttp(): Promise<string> {
  const title = "### PostgreSQL against SQLite through HTTP (the compiled binary at its defaults)";
  if (!pgBinDir()) {
    return [
      title,
      "",
      "Skipped: PostgreSQL's server programs were not found (install Debian's postgresql package, or point PG_BIN at a folder holding initdb and pg_ctl).",
    ].join("\n");
  }
  if (!process.env.FOREMAN_BIN) {
    if (!existsSync(join(ROOT, "dist", "foreman"))) Bun.spawnSync(["bun", "run", "build"], { cwd: ROOT, stdout: "ignore" });
    process.env.FOREMAN_BIN = join(ROOT, "dist", "foreman");
  }
  const started = performance.now();
  const dir = tempDir();
  let cluster: PgCluster | undefined;
  let fake: Fake | undefined;
  const engines: Engine[] = [];
  try {
    cluster = await startPgCluster();
    fake = await startFake();
    const env = (db: string) => ({ FOREMAN_OLLAMA_URL: fake!.url, FOREMAN_DB: db, FOREMAN_MAX_QUEUE: MAX_QUEUE });
    for (const [name, db] of [
      ["SQLite", join(dir.path, "foreman.db")],
      ["PostgreSQL", cluster.url],
    ] as const) {
      engines.push({
        name,
        foreman: await spawnForeman(env(db)),
        posts: { jobs: 0, ms: 0, latencies: [] },
        gaps: [],
        drainRates: [],
        xacts: name === "PostgreSQL" ? { post: [], run: [] } : undefined,
      });
    }
    const [lite, pg] = engines as [Engine, Engine];

    // Added latency first, while both queues are empty: direct and each engine in turn, interleaved by round.
    const small = JSON.stringify({ model: "llama3.2", prompt: "lat hi", stream: false });
    const smallStream = JSON.stringify({ model: "llama3.2", prompt: "lat hi" });
    const paths: Array<[string, string]> = [
      ["direct", fake.url],
      ...engines.map((e): [string, string] => [`via foreman, ${e.name}`, e.foreman.url]),
    ];
    const whole = new Map(paths.map(([name]) => [name, [] as number[]]));
    const first = new Map(paths.map(([name]) => [name, [] as number[]]));
    for (const [, url] of paths) {
      for (let i = 0; i < 50; i++) {
        await timeRequest(url, small); // warm-up
        await timeFirstChunk(url, smallStream);
      }
    }
    for (let round = 0; round < LATENCY_ROUNDS; round++) {
      for (const [name, url] of paths)
        for (let i = 0; i < LATENCY_PER_ROUND; i++) whole.get(name)!.push(await timeRequest(url, small));
      for (const [name, url] of paths) {
        for (let i = 0; i < LATENCY_PER_ROUND; i++) first.get(name)!.push(await timeFirstChunk(url, smallStream));
      }
    }

    // The queue phase, the engines taking turns.
    for (let round = 0; round < QUEUE_ROUNDS; round++) {
      for (const engine of engines) await queueRound(engine, fake, `job:${engine.name}:${round}:`, cluster);
    }

    const kinds: Array<[string, Map<string, number[]>]> = [
      ["non-streaming, whole answer", whole],
      ["streaming, first chunk", first],
    ];
    const latencyRows: string[][] = [];
    const addedP50 = new Map<string, number>();
    for (const [kind, samples] of kinds) {
      const direct = samples.get("direct")!;
      for (const [name] of paths) {
        const s = samples.get(name)!;
        const added =
          name === "direct" ? ["", ""] : [ms(median(s) - median(direct)), ms(quantile(s, 0.99) - quantile(direct, 0.99))];
        if (name !== "direct") addedP50.set(`${kind}|${name}`, median(s) - median(direct));
        latencyRows.push([kind, name, ms(median(s)), ms(quantile(s, 0.99)), ...added]);
      }
    }
    const addedRatios = kinds.map(([kind]) => {
      const l = addedP50.get(`${kind}|via foreman, SQLite`)!;
      const p = addedP50.get(`${kind}|via foreman, PostgreSQL`)!;
      return [kind, ms(l), ms(p), ratio(p, l)];
    });

    const postRate = (e: Engine) => e.posts.jobs / (e.posts.ms / 1000);
    const queueRows = engines.map((e) => [
      e.name,
      Math.round(postRate(e)).toLocaleString("en-US"),
      ms(median(e.posts.latencies)),
      ms(quantile(e.posts.latencies, 0.99)),
      ms(median(e.gaps)),
      ms(quantile(e.gaps, 0.99)),
      Math.round(median(e.drainRates)).toLocaleString("en-US"),
    ]);
    queueRows.push([
      "PostgreSQL / SQLite",
      ratio(postRate(pg), postRate(lite)),
      ratio(median(pg.posts.latencies), median(lite.posts.latencies)),
      ratio(quantile(pg.posts.latencies, 0.99), quantile(lite.posts.latencies, 0.99)),
      ratio(median(pg.gaps), median(lite.gaps)),
      ratio(quantile(pg.gaps, 0.99), quantile(lite.gaps, 0.99)),
      ratio(median(pg.drainRates), median(lite.drainRates)),
    ]);
    const perJob = (values: number[]) => median(values).toFixed(1);
    return [
      title,
      "",
      `One run, both engines side by side: each a \`foreman serve\` with only FOREMAN_DB, the port, the Ollama URL and FOREMAN_MAX_QUEUE=${MAX_QUEUE} set (the default 512 would refuse the queue below), in front of one instant fake in its own process. PostgreSQL: a throwaway local cluster (fsync off).`,
      "",
      `#### Job API and claims: ${POSTS.toLocaleString("en-US")} POST /jobs per round from ${SUBMITTERS} concurrent clients with the GPU held, then the GPU let go; ${QUEUE_ROUNDS} rounds each, the engines taking turns`,
      "",
      table(
        ["engine", "POST /jobs/s", "POST p50 ms", "POST p99 ms", "claim gap p50 ms", "claim gap p99 ms", "drain jobs/s"],
        queueRows,
      ),
      "",
      `Claim gap: from one job's end at the fake (its last byte written) to the next job's arrival there, over the first ${CLAIMS.toLocaleString("en-US")} claims after the GPU is let go (${(POSTS - CLAIMS).toLocaleString("en-US")} to ${(POSTS - 1).toLocaleString("en-US")} jobs still waiting): the job's end, the next claim and its send, as the GPU sees them. Drain: the whole queue's rate, median of rounds.`,
      pg.xacts
        ? `PostgreSQL committed ${perJob(pg.xacts.post)} transactions per job posted and ${perJob(pg.xacts.run)} per job run (pg_stat_database; the node's own background work, its lease, heartbeat and safety poll, included).`
        : "",
      "",
      `#### Added latency: ${LATENCY_ROUNDS * LATENCY_PER_ROUND} sequential small /api/generate requests per path, interleaved by round, empty queues`,
      "",
      table(["request", "path", "p50 ms", "p99 ms", "added p50 ms", "added p99 ms"], latencyRows),
      "",
      table(["request", "SQLite added p50 ms", "PostgreSQL added p50 ms", "PostgreSQL / SQLite"], addedRatios),
      "",
      `The section took ${((performance.now() - started) / 1000).toFixed(0)} s. Figures from a busy machine are noisy; read the ratios, not single runs.`,
    ].join("\n");
  } finally {
    // The GPU let go first: a held job would keep its foreman's shutdown waiting out the grace.
    await fake?.release().catch(() => {});
    for (const engine of engines) {
      engine.foreman.process.kill("SIGTERM");
      await engine.foreman.process.exited;
    }
    if (fake) {
      fake.child.kill();
      await fake.child.exited;
    }
    await cluster?.stop();
    dir.cleanup();
  }
}

if (import.meta.main) console.log(await benchPgHttp());
