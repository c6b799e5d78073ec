// The client subcommands, run as the real `foreman` command against a real server.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { type Stack, freePort, runForeman, startStack, until } from "../harness";

let stack: Stack;

beforeAll(async () => {
  stack = await startStack({ fake: { tokenDelayMs: 40 } });
});
afterAll(() => stack.stop());

/** The real `foreman` command, pointed at the test server unless FOREMAN_URL is given. */
const foreman = (args: string[], options: { env?: Record<string, string>; stdin?: string } = {}) =>
  runForeman(args, { ...options, env: { FOREMAN_URL: stack.foreman.url, ...options.env } });

describe("foreman submit", () => {
  test("prints the job id; the job runs", async () => {
    const result = await foreman(["submit", "--model", "llama3.2", "--message", "from the cli"]);
    expect(result.code).toBe(0);
    const id = result.stdout.trim();
    expect(id).toMatch(/^[0-9A-HJKMNP-TV-Z]{26}$/);
    await until(() => stack.foreman.jobs.store.getJob(id)?.state === "done", 10_000, "the job");
  });

  test("--wait shows the queue position while queued, then prints the answer", async () => {
    // Something ahead of it, so it has to queue.
    const ahead = await foreman(["submit", "--model", "qwen3", "--prompt", "a b c d e f g h"]);
    await until(() => stack.fake.inFlight === 1, 5000, "the job ahead to run");
    const result = await foreman(["submit", "--model", "llama3.2", "--message", "wait for me", "--wait"]);
    expect(result.code).toBe(0);
    expect(result.stdout).toBe("You said: wait for me\n");
    expect(result.stderr).toMatch(/queued, position 1(, starts [^\n]+)?\n/);
    expect(result.stderr).toContain(": done\n");
    expect(ahead.code).toBe(0);
  });

  test("the prompt comes from stdin with -, a --system goes first, --json prints the job", async () => {
    const result = await foreman(["submit", "--model", "qwen3", "--prompt", "-", "--system", "be brief", "--wait", "--json"], {
      stdin: "piped text",
    });
    expect(result.code).toBe(0);
    const job = JSON.parse(result.stdout);
    expect(job).toMatchObject({ type: "generate", state: "done", result: { response: "You said: piped text" } });
    expect(stack.fake.seen.at(-1)!.body).toMatchObject({ prompt: "piped text", system: "be brief" });
  });

  test("--wait says which retry a job waits for, and why", async () => {
    stack.fake.failures.push({ kind: "status", status: 503, error: "server busy" });
    const result = await foreman(["submit", "--model", "llama3.2", "--message", "try again", "--wait"]);
    expect(result.code).toBe(0);
    expect(result.stdout).toBe("You said: try again\n");
    expect(result.stderr).toMatch(/: retry 2\/3 after: server busy(, starts [^\n]+)?\n/);
    expect(result.stderr).toEndWith(": done\n");
  });

  test("--file reads the message from a file", async () => {
    const path = join(stack.dir, "note.txt");
    await Bun.write(path, "file contents");
    const result = await foreman(["submit", "--model", "llama3.2", "--file", path, "--wait"]);
    expect(result.stdout).toBe("You said: file contents\n");
  });

  test("bad flags and values print usage and exit 2 before any request; server-side refusals exit 1 with the server's reason", async () => {
    const before = stack.foreman.jobs.store.listJobs({ limit: 500 }).length;
    for (const [args, message] of [
      [["submit"], "--model is required"],
      [["submit", "--model", "x"], "give exactly one of --prompt, --message or --file"],
      [["submit", "--model", "x", "--message", "a", "--prompt", "b"], "give exactly one of --prompt, --message or --file"],
      [
        ["submit", "--model", "x", "--message", "a", "--priority", "high"],
        '--priority must be an integer from -1000 to 1000, not "high"',
      ],
      [
        ["submit", "--model", "x", "--message", "a", "--priority", "1001"],
        '--priority must be an integer from -1000 to 1000, not "1001"',
      ],
      [["submit", "--model", "x", "--message", "a", "--type", "embed"], '--type must be chat or generate, not "embed"'],
      [
        ["submit", "--model", "x", "--message", "a", "--webhook", "example.invalid/hook"],
        "--webhook must be an http or https URL",
      ],
      [["submit", "--model", "x", "--file", join(stack.dir, "missing.txt")], "--file: no such file: "],
      [["submit", "--bogus"], "Unknown option '--bogus'"],
      [["jobs", "--limit", "ten"], '--limit must be an integer from 1 to 500, not "ten"'],
      [["jobs", "--limit", "0"], '--limit must be an integer from 1 to 500, not "0"'],
      [["jobs", "--state", "bogus"], '--state must be one of queued, loading, working, done, failed, canceled, not "bogus"'],
      [["jobs", "--model", ""], "--model must not be empty"],
      [["job"], "job takes one job id"],
      [["job", "nope"], 'a job id is 26 characters of 0-9 and A-Z (a ULID, as submit prints it), not "nope"'],
      [["cancel", "a", "b"], "cancel takes one job id"],
    ] as Array<[string[], string]>) {
      const result = await foreman(args);
      expect({ args, code: result.code }).toEqual({ args, code: 2 });
      // One line, then a one-line hint: not the whole usage.
      expect(result.stderr.split("\n").slice(1)).toEqual(["run `foreman --help` for usage", ""]);
      expect(result.stderr.split("\n")[0]).toStartWith(`foreman ${args[0]}: `);
      expect(result.stderr.split("\n")[0]).toContain(message);
    }
    expect(stack.foreman.jobs.store.listJobs({ limit: 500 }).length).toBe(before);
    const unknownModel = await foreman(["submit", "--model", "ghost", "--message", "x"]);
    expect(unknownModel.code).toBe(1);
    expect(unknownModel.stderr).toBe("foreman submit: model 'ghost' not found\n");
  });
});

describe("foreman jobs, job, cancel, ps", () => {
  test("jobs prints an aligned table; --json the list", async () => {
    const result = await foreman(["jobs", "--limit", "3"]);
    expect(result.code).toBe(0);
    const lines = result.stdout.trimEnd().split("\n");
    expect(lines[0]).toMatch(/^ID\s+STATE\s+MODEL\s+TYPE\s+AGE\s+WAIT\s+DURATION\s+ATTEMPTS$/);
    expect(lines.length).toBe(4);
    // Every row's columns start where the header's do.
    const starts = (line: string) => [...line.matchAll(/(?<=\s{3}|^)\S/g)].map((m) => m.index);
    for (const line of lines.slice(1)) expect(starts(line)).toEqual(starts(lines[0]!));
    expect(lines[1]).toMatch(/done\s+\S+\s+(chat|generate)\s+\S+ ago\s+\d+(\.\d+)?m?s\s+\S+\s+1\/3$/);
    const json = JSON.parse((await foreman(["jobs", "--state", "done", "--model", "qwen3", "--json"])).stdout);
    expect(json.length).toBeGreaterThan(0);
    expect(json.every((j: { model: string; state: string }) => j.model === "qwen3" && j.state === "done")).toBe(true);
  });

  test("jobs with no match says so, naming the filters", async () => {
    expect(await foreman(["jobs", "--model", "ghost"])).toEqual({ stdout: "no jobs match --model ghost\n", stderr: "", code: 0 });
    const both = await foreman(["jobs", "--state", "failed", "--model", "ghost"]);
    expect(both.stdout).toBe("no jobs match --state failed --model ghost\n");
    expect((await foreman(["jobs", "--model", "ghost", "--json"])).stdout).toBe("[]\n");
  });

  test("job shows how long a job waited, and its tokens", async () => {
    const id = (await foreman(["submit", "--model", "qwen3", "--prompt", "count me", "--wait", "--json"])).stdout;
    const shown = await foreman(["job", JSON.parse(id).id]);
    expect(shown.stdout).toMatch(/\nwaited:\s+\d+(\.\d+)?m?s\n/);
    expect(shown.stdout).toMatch(/\ntokens:\s+\d+ in, \d+ out, [\d.]+\/s/);
  });

  test("job shows one job; cancel cancels; unknown ids are a clear error", async () => {
    // Long enough (60 tokens at 40 ms) that it still runs when `foreman job` looks, even on a busy machine.
    const words = Array.from({ length: 60 }, (_, i) => `w${i}`).join(" ");
    const id = (await foreman(["submit", "--model", "llama3.2", "--message", words])).stdout.trim();
    const shown = await foreman(["job", id]);
    expect(shown.stdout).toContain(`id:       ${id}`);
    expect(shown.stdout).toMatch(/state:\s+(queued|loading|working)/);
    const canceled = await foreman(["cancel", id]);
    expect(canceled).toEqual({ stdout: `canceled ${id}\n`, stderr: "", code: 0 });
    const again = await foreman(["cancel", id]);
    expect(again.code).toBe(1);
    expect(again.stderr).toBe("foreman cancel: job already ended: canceled\n");
    const missing = await foreman(["job", "01ARZ3NDEKTSV4RRFFQ69G5FAV"]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toBe("foreman job: job not found: 01ARZ3NDEKTSV4RRFFQ69G5FAV\n");
  });

  test("ps shows loaded models like `ollama ps`, then the queue", async () => {
    await stack.foreman.jobs.inventory.refresh();
    const result = await foreman(["ps"]);
    expect(result.code).toBe(0);
    // The fake keeps a model 5 minutes, as Ollama does by default: a moment later, 4 minutes are left.
    expect(result.stdout).toMatch(
      /^NAME\s+ID\s+SIZE\s+PROCESSOR\s+UNTIL\n\S+:latest\s+[0-9a-f]{12}\s+2\.0 GB\s+100% GPU\s+in 4 minutes\n/,
    );
    expect(result.stdout).toMatch(/QUEUE\s+\d+ queued/);
    expect(result.stdout).toMatch(/RUNNING\s+/);
  });

  test("a URL that is not foreman (Ollama itself) is named as such, not a bare HTTP 404", async () => {
    const ollama = await foreman(["jobs"], { env: { FOREMAN_URL: stack.fake.url } });
    expect(ollama.code).toBe(1);
    expect(ollama.stderr).toBe(
      `foreman jobs: ${stack.fake.url} does not look like foreman (GET /healthz answered 404): is FOREMAN_URL pointing at Ollama?\n`,
    );
  });

  test("an unreachable server is named; a missing token and a wrong one are clear 401s", async () => {
    const url = `http://127.0.0.1:${await freePort()}`;
    const down = await foreman(["jobs"], { env: { FOREMAN_URL: url } });
    expect(down.code).toBe(1);
    expect(down.stderr).toContain(`cannot reach foreman at ${url}`);
    const guarded = await startStack({ env: { FOREMAN_TOKEN: "t0ken" } });
    try {
      const denied = await foreman(["jobs"], { env: { FOREMAN_URL: guarded.foreman.url } });
      expect(denied.code).toBe(1);
      expect(denied.stderr).toBe(
        `foreman jobs: unauthorized: foreman at ${guarded.foreman.url} wants a token (set FOREMAN_TOKEN)\n`,
      );
      const refused = await foreman(["jobs"], { env: { FOREMAN_URL: guarded.foreman.url, FOREMAN_TOKEN: "wrong" } });
      expect(refused.code).toBe(1);
      expect(refused.stderr).toBe(
        `foreman jobs: unauthorized: foreman at ${guarded.foreman.url} refused the token in FOREMAN_TOKEN\n`,
      );
      const allowed = await foreman(["jobs"], { env: { FOREMAN_URL: guarded.foreman.url, FOREMAN_TOKEN: "t0ken" } });
      expect(allowed.code).toBe(0);
    } finally {
      await guarded.stop();
    }
  });
});

describe("a server that estimates start times, and a model kept loaded for good", () => {
  // A stand-in server answering the few routes the CLI reads, with what the CLI must render.
  const queuedJob = {
    id: "01ARZ3NDEKTSV4RRFFQ69G5FAV",
    type: "chat",
    model: "llama3.2",
    source: "jobs",
    state: "queued",
    priority: 0,
    attempts: 0,
    max_attempts: 3,
    started_at: null,
    finished_at: null,
    error: null,
    queue_position: 3,
    result: null,
    webhook: null,
    wait_ms: 12_000,
    run_ms: null,
    swapped: null,
    prompt_tokens: null,
    output_tokens: null,
    tokens_per_s: null,
    load_ms: null,
  };
  const answer = "a long answer ".repeat(100);
  const doneJob = {
    ...queuedJob,
    id: "01ARZ3NDEKTSV4RRFFQ69G5FAW",
    state: "done",
    queue_position: null,
    created_at: new Date().toISOString(),
    started_at: new Date().toISOString(),
    finished_at: new Date().toISOString(),
    result: { message: { role: "assistant", content: answer } },
  };
  let server: ReturnType<typeof Bun.serve>;
  beforeAll(() => {
    server = Bun.serve({
      port: 0,
      hostname: "127.0.0.1",
      fetch(request) {
        const path = new URL(request.url).pathname;
        // Queued 12 s ago, estimated to start two minutes and a few seconds from whenever it is asked.
        const job = {
          ...queuedJob,
          created_at: new Date(Date.now() - 12_000).toISOString(),
          estimated_start_at: new Date(Date.now() + 125_000).toISOString(),
          // Re-queued (a shutdown refunded its attempt): its last attempt's start stays on the row.
          started_at: new Date(Date.now() - 30_000).toISOString(),
        };
        if (path === `/jobs/${doneJob.id}`) return Response.json(doneJob);
        if (path === "/jobs") return Response.json({ jobs: [job], next_cursor: null });
        if (path === `/jobs/${job.id}`) return Response.json(job);
        if (path === "/api/ps") {
          return Response.json({
            models: [
              {
                name: "llama3.2:latest",
                digest: "sha256:a80c4f17acd55265",
                size: 2e9,
                size_vram: 2e9,
                expires_at: "2099-01-01T00:00:00Z",
              },
            ],
          });
        }
        if (path === "/queue")
          return Response.json({ depth: 1, by_model: { "llama3.2": 1 }, running: null, resident: [], degraded: false });
        return Response.json({ error: "not found" }, { status: 404 });
      },
    });
  });
  afterAll(() => server.stop(true));
  const against = (args: string[]) => foreman(args, { env: { FOREMAN_URL: `http://127.0.0.1:${server.port}` } });

  test("jobs and job show the estimated start of a queued job", async () => {
    const list = await against(["jobs"]);
    expect(list.stdout.split("\n")[1]).toMatch(
      /queued #3\s+llama3\.2\s+chat\s+1\d(\.\d)?s ago\s+12s \(starts in ~2m\)\s+-\s+0\/3$/,
    );
    const one = await against(["job", queuedJob.id]);
    expect(one.stdout).toContain("\nwaiting:  12s so far\n");
    // Waiting again, it shows no running duration.
    expect(one.stdout).toContain("\nduration: -\n");
    expect(one.stdout).toMatch(/\nstarts:\s+in ~2m \(\d{4}-\d\d-\d\dT[\d:.]+Z\)\n/);
  });

  test("job shows the first 500 characters of a long answer, and all of it with --full", async () => {
    const short = await against(["job", doneJob.id]);
    expect(short.stdout).toEndWith(
      `\nanswer:   ${answer.slice(0, 500)}… (${answer.length - 500} more characters; --full for all)\n`,
    );
    const full = await against(["job", doneJob.id, "--full"]);
    expect(full.stdout).toEndWith(`\nanswer:   ${answer}\n`);
  });

  test("ps shows a model kept loaded for good (keep_alive -1) as forever", async () => {
    const result = await against(["ps"]);
    expect(result.stdout).toMatch(
      /^NAME\s+ID\s+SIZE\s+PROCESSOR\s+UNTIL\nllama3\.2:latest\s+a80c4f17acd5\s+2\.0 GB\s+100% GPU\s+forever\n/,
    );
  });
});
