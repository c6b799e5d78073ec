// The README's "Try it without Ollama" command, run as a newcomer runs it: `bun run try` prints the
// dashboard's address, foreman answers through it in front of the fake's three models, and Ctrl-C
// (SIGINT) stops foreman and the fake and removes the throwaway database.
import { expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";

const ROOT = join(import.meta.dir, "..", "..");

test("bun run try serves foreman in front of the fake and stops on SIGINT", async () => {
  const child = Bun.spawn(["bun", "run", "try", "--no-burst"], {
    cwd: ROOT,
    env: { ...process.env, FOREMAN_LISTEN: "127.0.0.1:0", FOREMAN_TOKEN: "" },
    stdout: "pipe",
    stderr: "pipe",
  });
  let output = "";
  let errors = "";
  const reader = (async () => {
    for await (const chunk of child.stdout) output += new TextDecoder().decode(chunk);
  })();
  void (async () => {
    for await (const chunk of child.stderr) errors += new TextDecoder().decode(chunk);
  })();
  const deadline = Date.now() + 15_000;
  let match: RegExpMatchArray | null = null;
  while (
    !(match = output.match(/dashboard: (http:\/\/127\.0\.0\.1:\d+)\/ui/)) &&
    Date.now() < deadline &&
    child.exitCode === null
  ) {
    await Bun.sleep(50);
  }
  expect(match, `no dashboard line in:\n${output}${errors}`).not.toBeNull();
  const url = match![1]!;
  const dbPath = output.match(/database (\S+)\)/)![1]!;

  const health = await fetch(`${url}/healthz`);
  expect(health.status).toBe(200);
  const tags = (await (await fetch(`${url}/api/tags`)).json()) as { models: { name: string }[] };
  expect(tags.models.map((m) => m.name).sort()).toEqual(["all-minilm:latest", "gemma3:1b", "llama3.2:1b", "qwen3:0.6b"]);
  const answer = await fetch(`${url}/api/generate`, {
    method: "POST",
    body: JSON.stringify({ model: "llama3.2:1b", prompt: "hi", stream: false, options: { num_predict: 2 } }),
  });
  expect(((await answer.json()) as { response: string }).response).toBe("w0 w1");
  expect(answer.headers.get("x-foreman-job-id")).toBeTruthy();

  child.kill("SIGINT");
  expect(await child.exited).toBe(0);
  await reader;
  expect(existsSync(dirname(dbPath))).toBe(false);
  await expect(fetch(`${url}/healthz`)).rejects.toThrow();
});
