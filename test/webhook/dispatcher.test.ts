import { afterEach, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { createLogger } from "../../src/log";
import { openDatabase } from "../../src/queue/db";
import { JobStore } from "../../src/queue/store";
import { parseAllowList, WebhookAllowList } from "../../src/webhook/allow-list";
import { WebhookDispatcher } from "../../src/webhook/dispatcher";
import { tempDir, until } from "../harness";

describe("WebhookAllowList", () => {
  test("empty allows any http(s) URL and nothing else", () => {
    const any = new WebhookAllowList(parseAllowList([]));
    expect(any.check("https://example.com/x")).toBeUndefined();
    expect(any.check("http://10.0.0.1:8080/x")).toBeUndefined();
    expect(any.check("file:///etc/passwd")).toContain("http or https");
    expect(any.check("not a url")).toContain("not a URL");
  });

  test("host names match exactly (any case); IP literals match CIDRs, v4 and v6", () => {
    const list = new WebhookAllowList(parseAllowList(["Hooks.Example.com", "192.168.1.0/24", "fd00::/8", "127.0.0.1"]));
    expect(list.check("https://hooks.example.com/a")).toBeUndefined();
    expect(list.check("https://evil.hooks.example.com/a")).toContain("not in FOREMAN_WEBHOOK_ALLOW");
    expect(list.check("http://192.168.1.77/a")).toBeUndefined();
    expect(list.check("http://192.168.2.1/a")).toContain("not in");
    expect(list.check("http://[fd12:3456::1]:9000/a")).toBeUndefined();
    expect(list.check("http://[fe80::1]/a")).toContain("not in");
    expect(list.check("http://127.0.0.1:9/a")).toBeUndefined();
    expect(list.check("http://127.0.0.2:9/a")).toContain("not in");
  });
});

describe("WebhookDispatcher", () => {
  let cleanup: () => Promise<void> = async () => {};
  afterEach(() => cleanup());

  test("an attempt that gets no answer in time counts as a failure and is retried", async () => {
    const dir = tempDir();
    const db = openDatabase(join(dir.path, "w.db"));
    const store = new JobStore(db);
    let calls = 0;
    // Never answers the first call; answers the second at once.
    const receiver = Bun.serve({
      port: 0,
      hostname: "127.0.0.1",
      fetch: async () => {
        if (++calls === 1) await Bun.sleep(5_000);
        return new Response(null, { status: 204 });
      },
    });
    const dispatcher = new WebhookDispatcher(
      store,
      { webhookBackoffMs: [50], webhookSecret: undefined, webhookAllow: [] },
      createLogger("error", "webhook"),
      { attemptTimeoutMs: 200 },
    );
    cleanup = async () => {
      dispatcher.stop();
      await receiver.stop(true);
      db.close();
      dir.cleanup();
    };
    const { job } = store.enqueue(
      {
        type: "chat",
        model: "m",
        modelKey: "m",
        request: "{}",
        source: "jobs",
        maxAttempts: 1,
        webhook: { url: `http://127.0.0.1:${receiver.port}/hook` },
      },
      10,
    );
    store.cancelJob(job.id);
    dispatcher.start();
    await until(() => store.deliveries.status(job.id)?.state === "delivered", 5000, "the retry to land");
    expect(store.deliveries.status(job.id)).toMatchObject({ attempts: 2, lastStatus: 204 });
    expect(calls).toBe(2);
  });
});
