// FOREMAN_WEBHOOK_ALLOW on the compiled binary: a value that lists nothing refuses to start (exit 2, naming
// the variable), and unset, webhooks to loopback, private and link-local addresses are refused at submission
// while a public host name is taken (its addresses are checked at delivery).
import { afterAll, beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import { FakeOllama } from "../fake-ollama";
import { type ForemanProcess, foremanEnv, runForeman, spawnForeman, tempDir, until } from "../harness";
import { WebhookReceiver } from "../webhook/receiver";

let fake: FakeOllama;
let dir: ReturnType<typeof tempDir>;
beforeAll(() => {
  fake = new FakeOllama().start();
  dir = tempDir();
});
afterAll(async () => {
  await fake.stop();
  dir.cleanup();
});

test("a list that names nothing refuses to start, naming the variable", async () => {
  for (const value of [",", " , ", "hooks.example.com,,10.0.0.0/8"]) {
    const { code, stderr, stdout } = await runForeman(["serve"], {
      env: foremanEnv(fake.url, dir.path, { FOREMAN_WEBHOOK_ALLOW: value, FOREMAN_DB: join(dir.path, "none.db") }),
    });
    expect([value, code]).toEqual([value, 2]);
    expect(stderr + stdout).toContain("FOREMAN_WEBHOOK_ALLOW: is set but has an empty entry");
  }
});

test("unset, a webhook to loopback, private or link-local addresses is refused; a public name is taken", async () => {
  const receiver = new WebhookReceiver().start();
  let foreman: ForemanProcess | undefined;
  try {
    foreman = await spawnForeman(foremanEnv(fake.url, dir.path, { FOREMAN_DB: join(dir.path, "default.db") }));
    const submit = (url: string) =>
      fetch(`${foreman!.url}/jobs`, {
        method: "POST",
        body: JSON.stringify({
          type: "chat",
          request: { model: "llama3.2", messages: [{ role: "user", content: "hi" }] },
          webhook: { url },
        }),
      });
    for (const url of [
      receiver.url,
      "http://localhost:9/x",
      "http://2130706433/x",
      "http://[::ffff:127.0.0.1]/x",
      "http://169.254.169.254/latest/meta-data/",
      "http://10.0.0.1/x",
      "http://[fd00::1]/x",
    ]) {
      const response = await submit(url);
      expect([url, response.status]).toEqual([url, 400]);
      expect((await response.json()).error).toContain("FOREMAN_WEBHOOK_ALLOW");
    }
    // A public-looking name is taken at submission; at delivery it does not resolve here and fails, untried.
    const taken = await submit("http://hooks.example.invalid/x");
    expect(taken.status).toBe(202);
    const { id } = await taken.json();
    await until(async () => (await (await fetch(`${foreman!.url}/jobs/${id}`)).json()).webhook?.state === "failed", 20_000);
    const job = await (await fetch(`${foreman.url}/jobs/${id}`)).json();
    expect(job.webhook.last_error).toContain('webhook host "hooks.example.invalid" does not resolve');
    expect(receiver.received).toEqual([]);
  } finally {
    foreman?.process.kill("SIGTERM");
    await foreman?.process.exited;
    await receiver.stop();
  }
});
