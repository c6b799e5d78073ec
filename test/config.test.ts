import { describe, expect, test } from "bun:test";
import { ConfigError, loadConfig, unknownSettings } from "../src/config";
import { parseDuration } from "../src/duration";

describe("durations", () => {
  test("Go-style strings", () => {
    expect(parseDuration("500ms")).toBe(500);
    expect(parseDuration("30s")).toBe(30_000);
    expect(parseDuration("5m")).toBe(300_000);
    expect(parseDuration("24h")).toBe(86_400_000);
    expect(parseDuration("1h30m")).toBe(5_400_000);
    expect(parseDuration("1.5s")).toBe(1500);
    expect(parseDuration("0")).toBe(0);
    for (const bad of ["", "5", "5x", "m5", "5m junk", "-5s"]) expect(parseDuration(bad)).toBeUndefined();
  });
});

describe("loadConfig", () => {
  test("defaults", () => {
    const config = loadConfig({});
    expect(config).toMatchObject({
      listen: { hostname: "127.0.0.1", port: 8080 },
      ollamaUrl: "http://127.0.0.1:11434",
      dbPath: "./foreman.db",
      pollIntervalMs: 30_000,
      maxAttempts: 3,
      jobTtlMs: 86_400_000,
      logLevel: "info",
      schedule: "drain",
      maxWaitMs: 120_000,
      maxQueue: 512,
      maxConnections: 1024,
      jobTimeoutMs: 1_800_000,
      stallTimeoutMs: 300_000,
      durability: "normal",
      maxBodyBytes: 64 * 1024 * 1024,
      maxResultBytes: 64 * 1024 * 1024,
      webhookBackoffMs: [5_000, 30_000, 120_000, 600_000, 1_800_000, 3_600_000, 10_800_000, 21_600_000],
    });
    expect(config.token).toBeUndefined();
    expect(config.metricsPublic).toBe(false);
    // Text for a person at a terminal, JSON for a program reading a pipe.
    expect(config.logFormat).toBe(process.stdout.isTTY ? "text" : "json");
    expect(loadConfig({ FOREMAN_LOG_FORMAT: "text" }).logFormat).toBe("text");
  });

  test("FOREMAN_OLLAMA_URL: one URL is one target named host:port with one slot, as foreman always was", () => {
    expect(loadConfig({}).targets).toEqual([
      { name: "127.0.0.1:11434", url: "http://127.0.0.1:11434", slots: 1, token: undefined },
    ]);
    expect(loadConfig({ FOREMAN_OLLAMA_URL: "http://gpu.lan:11434/", FOREMAN_OLLAMA_TOKEN: "t" }).targets).toEqual([
      { name: "gpu.lan:11434", url: "http://gpu.lan:11434", slots: 1, token: "t" },
    ]);
  });

  test("FOREMAN_OLLAMA_URL: several targets with names, slots and a per-target token", () => {
    const config = loadConfig({
      FOREMAN_OLLAMA_URL: " mac=http://127.0.0.1:11434 , box=https://10.0.0.5:11434;slots=4;token=own, http://laptop:11434",
      FOREMAN_OLLAMA_TOKEN: "shared",
    });
    expect(config.targets).toEqual([
      { name: "mac", url: "http://127.0.0.1:11434", slots: 1, token: "shared" },
      { name: "box", url: "https://10.0.0.5:11434", slots: 4, token: "own" },
      { name: "laptop:11434", url: "http://laptop:11434", slots: 1, token: "shared" },
    ]);
    // Model management and the log line's `ollama` go to the first.
    expect(config.ollamaUrl).toBe("http://127.0.0.1:11434");
  });

  test("FOREMAN_OLLAMA_URL: each bad entry is one error naming it", () => {
    const cases: Array<[string, string]> = [
      ["a=http://x:1,a=http://y:1", 'entry "a=http://y:1": the name "a" is taken'],
      ["http://x:1,http://x:1", 'entry "http://x:1": the name "x:1" is taken'],
      ["a=http://x:1,b=http://x:1", `entry "b=http://x:1": the URL is target "a"'s too`],
      ["a=ftp://x", "must be an http or https URL"],
      ["a=nothing", '"nothing" is not a URL'],
      ["http://x:1;slots=0", 'entry "http://x:1;slots=0": slots "0" must be an integer from 1 to 64'],
      ["http://x:1;slots=two", 'slots "two" must be an integer'],
      ["http://x:1;slots=1.5", 'slots "1.5" must be an integer'],
      ["http://x:1;gpu=2", 'unknown parameter "gpu=2"'],
      ["http://x:1;token=", "token is empty"],
      ["http://x:1,,http://y:1", "has an empty entry"],
      ["bad name=http://x:1", 'name "bad name" may hold only'],
    ];
    for (const [value, message] of cases) {
      expect(() => loadConfig({ FOREMAN_OLLAMA_URL: value }), value).toThrow(ConfigError);
      expect(() => loadConfig({ FOREMAN_OLLAMA_URL: value }), value).toThrow(`FOREMAN_OLLAMA_URL: `);
      try {
        loadConfig({ FOREMAN_OLLAMA_URL: value });
      } catch (error) {
        expect((error as Error).message, value).toContain(message);
      }
    }
  });

  test("each bad value is one error naming its variable", () => {
    const cases: Array<[Record<string, string>, string]> = [
      [{ FOREMAN_LISTEN: "8080" }, "FOREMAN_LISTEN"],
      [{ FOREMAN_LISTEN: "host:99999" }, "FOREMAN_LISTEN"],
      [{ FOREMAN_OLLAMA_URL: "ftp://x" }, "FOREMAN_OLLAMA_URL"],
      [{ FOREMAN_OLLAMA_URL: "not a url" }, "FOREMAN_OLLAMA_URL"],
      [{ FOREMAN_POLL_INTERVAL: "30" }, "FOREMAN_POLL_INTERVAL"],
      [{ FOREMAN_MAX_ATTEMPTS: "0" }, "FOREMAN_MAX_ATTEMPTS"],
      [{ FOREMAN_MAX_ATTEMPTS: "two" }, "FOREMAN_MAX_ATTEMPTS"],
      [{ FOREMAN_JOB_TTL: "1d" }, "FOREMAN_JOB_TTL"],
      [{ FOREMAN_LOG_LEVEL: "loud" }, "FOREMAN_LOG_LEVEL"],
      [{ FOREMAN_LOG_FORMAT: "xml" }, "FOREMAN_LOG_FORMAT"],
      [{ FOREMAN_METRICS_PUBLIC: "yes" }, "FOREMAN_METRICS_PUBLIC"],
      [{ FOREMAN_SCHEDULE: "random" }, "FOREMAN_SCHEDULE"],
      [{ FOREMAN_DURABILITY: "extra" }, "FOREMAN_DURABILITY"],
      [{ FOREMAN_WEBHOOK_SECRET: "plain" }, "FOREMAN_WEBHOOK_SECRET"],
      [{ FOREMAN_MAX_QUEUE: "-1" }, "FOREMAN_MAX_QUEUE"],
      [{ FOREMAN_MAX_CONNECTIONS: "0" }, "FOREMAN_MAX_CONNECTIONS"],
      [{ FOREMAN_LISTEN: "bad host!:8080" }, "FOREMAN_LISTEN"],
      [{ FOREMAN_POLL_INTERVAL: "0s" }, "FOREMAN_POLL_INTERVAL"],
      [{ FOREMAN_JOB_TIMEOUT: "1000h" }, "FOREMAN_JOB_TIMEOUT"],
      [{ FOREMAN_SHUTDOWN_GRACE: "1000h" }, "FOREMAN_SHUTDOWN_GRACE"],
      [{ FOREMAN_WEBHOOK_BACKOFF: "5s,soon" }, "FOREMAN_WEBHOOK_BACKOFF"],
      ...["http://proxy.example", "proxy.example:8080", "bad host", "*example.com", "a.*.example"].map(
        (entry): [Record<string, string>, string] => [{ FOREMAN_ALLOWED_HOSTS: `ok.example, ${entry}` }, "FOREMAN_ALLOWED_HOSTS"],
      ),
      ...[
        "10.0.0.0/abc",
        "127.0.0.1/-1",
        "10.0.0.0/33",
        "::1/129",
        "::1/200",
        "10.0.0.0/",
        "10.0.0.0/8/8",
        "10.0.0.256",
        "300.1.1.1/8",
        "1.2.3",
        "fd00::g/8",
        "hooks.example.com/8",
        "hooks.example.com:8080",
        "http://hooks.example.com",
        "bad host",
      ].map((entry): [Record<string, string>, string] => [
        { FOREMAN_WEBHOOK_ALLOW: `hooks.example.com, ${entry}` },
        "FOREMAN_WEBHOOK_ALLOW",
      ]),
    ];
    for (const [env, name] of cases) {
      let error: unknown;
      try {
        loadConfig(env);
      } catch (caught) {
        error = caught;
      }
      expect(error).toBeInstanceOf(ConfigError);
      expect((error as Error).message.startsWith(`${name}:`)).toBe(true);
      expect((error as Error).message).not.toContain("\n");
    }
  });

  test("the webhook allow list is parsed once: names, addresses and networks of either family", () => {
    const { webhookAllow } = loadConfig({
      FOREMAN_WEBHOOK_ALLOW: "Hooks.Example.com., 10.1.2.3/8, [::1], fd00::/8, 0.0.0.0/0, ::/0",
    });
    expect(webhookAllow).toEqual([
      { kind: "host", name: "hooks.example.com" },
      { kind: "network", width: 32, network: 0x0a000000n, prefix: 8 },
      { kind: "network", width: 128, network: 1n, prefix: 128 },
      { kind: "network", width: 128, network: 0xfdn << 120n, prefix: 8 },
      { kind: "network", width: 32, network: 0n, prefix: 0 },
      { kind: "network", width: 128, network: 0n, prefix: 0 },
    ]);
    expect(loadConfig({ FOREMAN_WEBHOOK_ALLOW: "*, public" }).webhookAllow).toEqual([{ kind: "any" }, { kind: "public" }]);
    // Unset: public addresses only.
    expect(loadConfig({}).webhookAllow).toEqual([{ kind: "public" }]);
  });

  test("an allow list that is set but names nothing is an error, not anywhere", () => {
    for (const value of [",", " , ", "", "  ", "hooks.example.com,", "a.example.com,,b.example.com"]) {
      expect([value, () => loadConfig({ FOREMAN_WEBHOOK_ALLOW: value })]).toEqual([value, expect.any(Function)]);
      expect(() => loadConfig({ FOREMAN_WEBHOOK_ALLOW: value })).toThrow(
        new ConfigError(
          'FOREMAN_WEBHOOK_ALLOW: is set but has an empty entry; list hosts, CIDRs, "public" or "*", or leave it unset (public addresses only)',
        ),
      );
    }
  });

  test("a bad allow-list entry is named, with what is allowed", () => {
    expect(() => loadConfig({ FOREMAN_WEBHOOK_ALLOW: "127.0.0.1/-1" })).toThrow(
      'FOREMAN_WEBHOOK_ALLOW: "127.0.0.1/-1": the prefix length must be 0 to 32 for an IPv4 network',
    );
    expect(() => loadConfig({ FOREMAN_WEBHOOK_ALLOW: "::1/200" })).toThrow("must be 0 to 128 for an IPv6 network");
    expect(() => loadConfig({ FOREMAN_WEBHOOK_ALLOW: "10.0.0.0/abc" })).toThrow("must be 0 to 32");
    expect(() => loadConfig({ FOREMAN_WEBHOOK_ALLOW: "10.0.0.256" })).toThrow(
      'FOREMAN_WEBHOOK_ALLOW: "10.0.0.256" is not a host name, an IP address, a CIDR, public or *',
    );
  });

  test("allowed hosts: names, *.names, addresses and *; none by default", () => {
    expect(loadConfig({}).allowedHosts).toEqual([]);
    expect(loadConfig({ FOREMAN_ALLOWED_HOSTS: "foreman.example.com, *.lan, 10.0.0.5, [::1], *" }).allowedHosts).toEqual([
      "foreman.example.com",
      "*.lan",
      "10.0.0.5",
      "[::1]",
      "*",
    ]);
    expect(() => loadConfig({ FOREMAN_ALLOWED_HOSTS: "proxy.example:8080" })).toThrow(
      'FOREMAN_ALLOWED_HOSTS: "proxy.example:8080" is not a host name, *.name, an IP address or *',
    );
  });

  test("durations have bounds where a timer uses them", () => {
    expect(loadConfig({ FOREMAN_POLL_INTERVAL: "100ms" }).pollIntervalMs).toBe(100);
    expect(loadConfig({ FOREMAN_JOB_TIMEOUT: "596h" }).jobTimeoutMs).toBe(596 * 3_600_000);
    expect(loadConfig({ FOREMAN_JOB_TIMEOUT: "0" }).jobTimeoutMs).toBe(0);
  });

  test("listen accepts IPv6 and an empty host", () => {
    expect(loadConfig({ FOREMAN_LISTEN: "[::1]:9000" }).listen).toEqual({ hostname: "::1", port: 9000 });
    expect(loadConfig({ FOREMAN_LISTEN: ":9000" }).listen).toEqual({ hostname: "0.0.0.0", port: 9000 });
  });
});

describe("unknownSettings", () => {
  test("names every FOREMAN_* variable nothing reads, with the closest known name", () => {
    const unknown = unknownSettings({
      FOREMAN_SHEDULE: "fifo",
      FOREMAN_NO_SUCH_THING: "1",
      FOREMAN_SCHEDULE: "fifo",
      FOREMAN_URL: "http://127.0.0.1:1",
      PATH: "/usr/bin",
    });
    expect(unknown).toEqual([
      { name: "FOREMAN_SHEDULE", didYouMean: "FOREMAN_SCHEDULE" },
      { name: "FOREMAN_NO_SUCH_THING", didYouMean: undefined },
    ]);
  });

  test("every setting loadConfig reads is known, even when it is unset", () => {
    expect(unknownSettings({ FOREMAN_TOKEN: "x", FOREMAN_WEBHOOK_BACKOFF: "1s", FOREMAN_ORIGINS: "*" })).toEqual([]);
  });
});

describe("batch settings", () => {
  test("defaults: 200 MiB files, 10 GiB for all files, batch lines at priority -1, OpenAI's 24h window", () => {
    expect(loadConfig({})).toMatchObject({
      maxFileBytes: 200 * 1024 * 1024,
      maxFilesBytes: 10 * 1024 ** 3,
      batchPriority: -1,
      batchWindowMs: 86_400_000,
    });
    expect(loadConfig({ FOREMAN_MAX_FILES_BYTES: "5000" }).maxFilesBytes).toBe(5000);
    expect(loadConfig({ FOREMAN_BATCH_PRIORITY: "-5", FOREMAN_BATCH_WINDOW: "2s" })).toMatchObject({
      batchPriority: -5,
      batchWindowMs: 2000,
    });
  });

  test("bad values name their variable and what is allowed", () => {
    expect(() => loadConfig({ FOREMAN_BATCH_PRIORITY: "low" })).toThrow(
      new ConfigError('FOREMAN_BATCH_PRIORITY: "low" must be an integer from -1000 to 1000'),
    );
    expect(() => loadConfig({ FOREMAN_BATCH_PRIORITY: "2000" })).toThrow(/from -1000 to 1000/);
    expect(() => loadConfig({ FOREMAN_MAX_FILE: "0" })).toThrow(/FOREMAN_MAX_FILE/);
    expect(() => loadConfig({ FOREMAN_MAX_FILES_BYTES: "10G" })).toThrow(
      new ConfigError('FOREMAN_MAX_FILES_BYTES: "10G" must be an integer of at least 1'),
    );
    expect(() => loadConfig({ FOREMAN_BATCH_WINDOW: "0" })).toThrow(/FOREMAN_BATCH_WINDOW/);
  });
});
