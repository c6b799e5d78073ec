// 10 MB prompts and 10 MB answers through every surface of the compiled binary (the fake echoes the
// prompt), while the process's peak RSS (VmHWM) stays under a stated bound: nothing holds such a body
// many times over, and list pages do not carry them.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { FakeOllama } from "../fake-ollama";
import { type ForemanProcess, foremanEnv, spawnForeman, tempDir, until } from "../harness";

/** Peak resident memory the binary may reach over the whole test, in MB (measured: about 600 on Bun 1.4.5, both threads). */
const PEAK_RSS_BOUND_MB = 768;
const TEN_MB = 10 * 1024 * 1024;
// One word: the fake echoes it back in one record, so the answer is 10 MB too.
const prompt = "x".repeat(TEN_MB);

let fake: FakeOllama;
let dir: ReturnType<typeof tempDir>;
let foreman: ForemanProcess;
beforeAll(async () => {
  fake = new FakeOllama().start();
  dir = tempDir();
  foreman = await spawnForeman(foremanEnv(fake.url, dir.path));
});
afterAll(async () => {
  foreman.process.kill("SIGTERM");
  await foreman.process.exited;
  await fake.stop();
  dir.cleanup();
});

function memoryMb(pid: number): { rss: number; peak: number } {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = (field: string) => Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(status)![1]);
  return { rss: kb("VmRSS") / 1024, peak: kb("VmHWM") / 1024 };
}

const messages = [{ role: "user", content: prompt }];
const SURFACES: Array<[string, Record<string, unknown>]> = [
  ["/api/chat", { model: "llama3.2", messages, stream: false }],
  ["/api/chat", { model: "llama3.2", messages }],
  ["/api/generate", { model: "llama3.2", prompt, stream: false }],
  ["/api/generate", { model: "llama3.2", prompt }],
  ["/v1/chat/completions", { model: "llama3.2", messages }],
  ["/v1/chat/completions", { model: "llama3.2", messages, stream: true }],
  ["/v1/completions", { model: "llama3.2", prompt }],
  ["/v1/responses", { model: "llama3.2", input: prompt }],
  ["/v1/messages", { model: "llama3.2", max_tokens: 16, messages }],
  ["/v1/messages", { model: "llama3.2", max_tokens: 16, messages, stream: true }],
];

test(`10 MB prompts and answers through every surface: all answered, peak RSS under ${PEAK_RSS_BOUND_MB} MB`, async () => {
  for (let round = 0; round < 2; round++) {
    for (const [path, body] of SURFACES) {
      const response = await fetch(`${foreman.url}${path}`, { method: "POST", body: JSON.stringify(body) });
      const text = await response.text();
      expect([path, response.status]).toEqual([path, 200]);
      expect(text.length).toBeGreaterThan(TEN_MB);
    }
    const submitted = await fetch(`${foreman.url}/jobs`, {
      method: "POST",
      body: JSON.stringify({ type: "chat", request: { model: "llama3.2", messages } }),
    });
    const { id } = (await submitted.json()) as { id: string };
    await until(
      async () => ((await (await fetch(`${foreman.url}/jobs/${id}`)).json()) as { state: string }).state === "done",
      60_000,
    );
    expect((await (await fetch(`${foreman.url}/jobs/${id}`)).text()).length).toBeGreaterThan(TEN_MB);
    expect((await (await fetch(`${foreman.url}/jobs/${id}/artifacts/result.json`)).text()).length).toBeGreaterThan(TEN_MB);
  }
  // A page of 500 jobs holding 10 MB each is a page of summaries: small.
  const page = await (await fetch(`${foreman.url}/jobs?limit=500`)).text();
  expect(page.length).toBeLessThan(64 * 1024);
  // Quiet when it passes: a failure shows the peak it measured.
  expect(memoryMb(foreman.process.pid).peak).toBeLessThan(PEAK_RSS_BOUND_MB);
}, 300_000);
