import { afterEach, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { createLogger } from "../../src/log";
import { openDatabase } from "../../src/queue/db";
import { openJobTables } from "../../src/tables";
import { DEFAULT_ALLOW, parseAllowList, WebhookAllowList } from "../../src/webhook/allow-list";
import { WebhookDispatcher } from "../../src/webhook/dispatcher";
import { tempDir, until } from "../harness";

describe("WebhookAllowList", () => {
  test("* allows any http(s) URL and nothing else", () => {
    const any = new WebhookAllowList(parseAllowList(["*"]));
    expect(any.check("https://example.com/x")).toBeUndefined();
    expect(any.check("http://10.0.0.1:8080/x")).toBeUndefined();
    expect(any.check("file:///etc/passwd")).toContain("http or https");
    expect(any.check("not a url")).toContain("not a URL");
  });

  test("a list that names nothing is refused, not read as anywhere", () => {
    for (const entries of [[""], ["", ""], ["hooks.example.com", ""]]) {
      expect(() => parseAllowList(entries)).toThrow("is set but has an empty entry");
    }
  });

  test("the default (public) refuses loopback, private, link-local and metadata addresses, however spelled", () => {
    const list = new WebhookAllowList(DEFAULT_ALLOW);
    expect(list.check("https://hooks.example.com/x")).toBeUndefined();
    expect(list.check("http://93.184.216.34/x")).toBeUndefined();
    expect(list.check("http://[2606:4700::1]/x")).toBeUndefined();
    for (const url of [
      "http://127.0.0.1:9/x",
      "http://127.1/x",
      "http://2130706433/x",
      "http://0x7f000001/x",
      "http://0.0.0.0/x",
      "http://localhost:9/x",
      "http://LOCALHOST./x",
      "http://api.localhost/x",
      "http://10.1.2.3/x",
      "http://172.16.0.1/x",
      "http://192.168.1.1/x",
      "http://100.64.0.1/x",
      "http://169.254.169.254/latest/meta-data/",
      "http://[::1]/x",
      "http://[::]/x",
      "http://[::ffff:127.0.0.1]/x",
      "http://[::ffff:a9fe:a9fe]/x",
      "http://[64:ff9b::a00:1]/x",
      "http://[fe80::1]/x",
      "http://[fd00:ec2::254]/x",
      "http://224.0.0.1/x",
      "http://255.255.255.255/x",
    ]) {
      expect([url, list.check(url)]).toEqual([url, expect.stringContaining("FOREMAN_WEBHOOK_ALLOW")]);
    }
  });

  test("at delivery a name is checked on the addresses it resolves to, and the connection is pinned to one", async () => {
    // localhost is resolved by the system (its spelling alone is refused at submission already).
    const strict = new WebhookAllowList(DEFAULT_ALLOW, async () => ["127.0.0.1"]);
    expect(await strict.target("http://hooks.example.com:81/x")).toContain("resolves to 127.0.0.1, which FOREMAN_WEBHOOK_ALLOW");
    const system = new WebhookAllowList(DEFAULT_ALLOW);
    expect(await system.target("http://localhost:81/x")).toContain("FOREMAN_WEBHOOK_ALLOW");
    // Beside public, a network entry allows a name that resolves into it; the fetch goes to the checked address.
    const loopback = new WebhookAllowList(parseAllowList(["public", "127.0.0.0/8", "::1"]));
    const target = await loopback.target("http://localhost:81/x");
    expect(target).toMatchObject({ host: "localhost:81" });
    expect(["http://127.0.0.1:81/x", "http://[::1]:81/x"]).toContain((target as { url: string }).url);
    // A listed name is trusted as spelled.
    expect(await new WebhookAllowList(parseAllowList(["localhost"])).target("http://localhost:81/x")).toEqual({
      url: "http://localhost:81/x",
    });
  });

  test("host names match exactly (any case); IP literals match CIDRs, v4 and v6", () => {
    const list = new WebhookAllowList(parseAllowList(["Hooks.Example.com", "192.168.1.0/24", "fd00::/8", "127.0.0.1"]));
    expect(list.check("https://hooks.example.com/a")).toBeUndefined();
    expect(list.check("https://evil.hooks.example.com/a")).toContain("not allowed by FOREMAN_WEBHOOK_ALLOW");
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
    const { store, deliveries } = openJobTables(db);
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
      deliveries,
      { webhookBackoffMs: [50], webhookSecret: undefined, webhookAllow: parseAllowList(["127.0.0.1"]) },
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
    await until(() => deliveries.status(job.id)?.state === "delivered", 5000, "the retry to land");
    expect(deliveries.status(job.id)).toMatchObject({ attempts: 2, lastStatus: 204 });
    expect(calls).toBe(2);
  });
});
