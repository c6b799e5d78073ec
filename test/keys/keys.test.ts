// API keys: stored as hashes and shown once, resolved to a principal per request (FOREMAN_TOKEN an admin,
// an open foreman open), a revoke seen within the one-second cache, and managed by `foreman keys` on the
// database and by the admin API alike.
import { Database } from "bun:sqlite";
import { afterEach, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { runKeysCommand } from "../../src/cli/keys-command";
import { KeyStore } from "../../src/keys/key-store";
import { KEY_CACHE_MS, OPEN_ADMIN, PrincipalResolver, modelAllowed, keyPrincipal } from "../../src/keys/principal";
import { openDatabase } from "../../src/queue/db";
import { tempDir } from "../harness";
import { type InProcessStack, startInProcess } from "../in-process";

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function freshKeys(): { keys: KeyStore; db: Database; path: string } {
  const dir = tempDir();
  const path = join(dir.path, "foreman.db");
  const db = openDatabase(path);
  cleanups.push(
    () => dir.cleanup(),
    () => db.close(),
  );
  return { keys: new KeyStore(db), db, path };
}

const bearer = (secret: string) => new Headers({ authorization: `Bearer ${secret}` });

describe("the keys table", () => {
  test("a secret is shown once and only its SHA-256 is kept; names are unique", () => {
    const { keys, path } = freshKeys();
    const { key, secret } = keys.create("alice", "client", { models: ["llama3.2*"], maxJobs: 2, dailyTokens: 100 });
    expect(secret).toMatch(/^fmn_[A-Za-z0-9_-]{43}$/);
    expect(key).toMatchObject({ name: "alice", role: "client", models: ["llama3.2*"], maxJobs: 2, dailyTokens: 100 });
    expect(key.hint).toBe(secret.slice(-4));
    // Nothing in the file holds the secret, whole or base64url-decoded.
    const raw = new Database(path, { readonly: true });
    const row = raw
      .query<{ dump: string }, []>("SELECT group_concat(quote(secret_hash) || name || hint) AS dump FROM keys")
      .get()!;
    raw.close();
    expect(row.dump).not.toContain(secret.slice(4, 20));
    expect(() => keys.create("alice", "admin")).toThrow('a key named "alice" exists already');
    expect(() => keys.create("bad name", "client")).toThrow("a key name is");
    expect(() => keys.create("bob", "client", { maxJobs: 0 })).toThrow("max_jobs must be an integer from 1");
  });

  test("rotate gives a new secret and the old one stops resolving; revoke ends it; a revoked key cannot rotate", () => {
    const { keys } = freshKeys();
    const { secret: first } = keys.create("ci", "client");
    const resolver = () => new PrincipalResolver(undefined, keys);
    expect(resolver().resolve(bearer(first))?.name).toBe("ci");
    const { secret: second, key } = keys.rotate("ci");
    expect(second).not.toBe(first);
    expect(key.rotatedAt).not.toBeNull();
    expect(resolver().resolve(bearer(first))).toBeNull();
    expect(resolver().resolve(bearer(second))?.name).toBe("ci");
    keys.revoke("ci");
    expect(resolver().resolve(bearer(second))).toBeNull();
    expect(() => keys.rotate("ci")).toThrow("revoked");
    expect(() => keys.revoke("ci")).toThrow("revoked already");
    expect(() => keys.get("nobody")).toThrow('no key named "nobody"');
  });
});

describe("resolving a request", () => {
  test("open without a token or keys; FOREMAN_TOKEN is an admin; a key by Bearer or x-api-key", () => {
    const { keys } = freshKeys();
    expect(new PrincipalResolver(undefined, keys).resolve(new Headers())).toBe(OPEN_ADMIN);
    const tokenOnly = new PrincipalResolver("secret", keys);
    expect(tokenOnly.resolve(bearer("secret"))).toBe(OPEN_ADMIN);
    expect(tokenOnly.resolve(new Headers({ "x-api-key": "secret" }))).toBe(OPEN_ADMIN);
    expect(tokenOnly.resolve(bearer("wrong"))).toBeNull();
    expect(tokenOnly.resolve(new Headers())).toBeNull();

    const { secret } = keys.create("bob", "client");
    // The first key closes a foreman that had no token (once the one-second cache has passed).
    let now = 0;
    const open = new PrincipalResolver(undefined, keys, () => now);
    now = KEY_CACHE_MS;
    expect(open.resolve(new Headers())).toBeNull();
    expect(open.resolve(bearer(secret))).toMatchObject({ name: "bob", role: "client" });
    expect(open.resolve(new Headers({ "x-api-key": secret }))).toMatchObject({ name: "bob" });
    // FOREMAN_TOKEN still works beside keys.
    expect(new PrincipalResolver("secret", keys).resolve(bearer("secret"))).toBe(OPEN_ADMIN);
    // Revoking every key does not open foreman again.
    keys.revoke("bob");
    expect(new PrincipalResolver(undefined, keys).resolve(new Headers())).toBeNull();
  });

  test("a revoked key is refused once the one-second cache has passed, not later", () => {
    const { keys } = freshKeys();
    const { secret } = keys.create("carol", "client");
    let now = 1_000_000;
    const resolver = new PrincipalResolver(undefined, keys, () => now);
    expect(resolver.resolve(bearer(secret))?.name).toBe("carol");
    keys.revoke("carol");
    now += KEY_CACHE_MS - 1;
    expect(resolver.resolve(bearer(secret))?.name).toBe("carol");
    now += 1;
    expect(resolver.resolve(bearer(secret))).toBeNull();
  });

  test("model globs match the name as sent or as Ollama resolves it", () => {
    const { keys } = freshKeys();
    const scoped = keyPrincipal(keys.create("m", "client", { models: ["llama3.2", "qwen*", "hf.co/org/*"] }).key);
    expect(modelAllowed(scoped, "llama3.2")).toBe(true);
    expect(modelAllowed(scoped, "llama3.2:latest")).toBe(true);
    expect(modelAllowed(scoped, "llama3.2:1b")).toBe(false);
    expect(modelAllowed(scoped, "qwen3:8b")).toBe(true);
    expect(modelAllowed(scoped, "hf.co/org/model:q4")).toBe(true);
    expect(modelAllowed(scoped, "mistral")).toBe(false);
    expect(modelAllowed(OPEN_ADMIN, "anything")).toBe(true);
  });
});

describe("foreman keys", () => {
  const cli = async (env: Record<string, string>, ...args: string[]) => {
    let stdout = "";
    let stderr = "";
    const code = await runKeysCommand(args, { stdout: (t) => void (stdout += t), stderr: (t) => void (stderr += t) }, env);
    return { code, stdout, stderr };
  };

  test("create, list, show, rotate and revoke on the database; misuse exits 2", async () => {
    const dir = tempDir();
    cleanups.push(() => dir.cleanup());
    const env = { FOREMAN_DB: join(dir.path, "foreman.db") };
    const created = await cli(env, "create", "alice", "--models", "llama3.2*,qwen*", "--max-jobs", "3", "--daily-tokens", "5000");
    expect(created.code).toBe(0);
    const secret = created.stdout.trim();
    expect(secret).toMatch(/^fmn_/);
    expect(created.stderr).toContain("shown this once");

    const listed = await cli(env, "list");
    expect(listed.stdout).toContain("alice");
    expect(listed.stdout).toContain(`…${secret.slice(-4)}`);
    expect(listed.stdout).not.toContain(secret);
    const shown = JSON.parse((await cli(env, "show", "alice", "--json")).stdout);
    expect(shown).toMatchObject({
      name: "alice",
      role: "client",
      models: ["llama3.2*", "qwen*"],
      max_jobs: 3,
      daily_tokens: 5000,
    });
    expect(JSON.stringify(shown)).not.toContain(secret);

    const rotated = await cli(env, "rotate", "alice");
    expect(rotated.code).toBe(0);
    expect(rotated.stdout.trim()).not.toBe(secret);
    expect((await cli(env, "revoke", "alice")).stdout).toContain('key "alice" revoked');
    expect(JSON.parse((await cli(env, "show", "alice", "--json")).stdout).revoked_at).not.toBeNull();

    expect((await cli(env, "show", "nobody")).code).toBe(1);
    expect((await cli(env, "create", "x", "--role", "root")).code).toBe(2);
    expect((await cli(env, "create", "x", "--apis", "ollama,grpc")).code).toBe(2);
    expect((await cli(env, "frobnicate")).code).toBe(2);
  });
});

describe("the admin API", () => {
  let stack: InProcessStack;
  const start = async (env: Record<string, string> = {}) => {
    stack = await startInProcess({ env });
    cleanups.push(() => stack.stop());
  };

  test("FOREMAN_TOKEN manages keys; a client key may not; a key made here works at once", async () => {
    await start({ FOREMAN_TOKEN: "admin-token" });
    const admin = { authorization: "Bearer admin-token" };
    const made = await stack.request("POST", "/admin/keys", { name: "dave", role: "client", max_jobs: 2 }, admin);
    expect(made.status).toBe(201);
    const { secret, ...view } = (await made.json()) as { secret: string; name: string };
    expect(view).toMatchObject({ name: "dave", role: "client", max_jobs: 2, revoked_at: null });

    const client = { authorization: `Bearer ${secret}` };
    expect((await stack.request("GET", "/jobs", undefined, client)).status).toBe(200);
    const refused = await stack.request("GET", "/admin/keys", undefined, client);
    expect(refused.status).toBe(403);
    expect(await refused.json()).toEqual({ error: 'key "dave" is not an admin key' });
    // Model management is an admin's too.
    expect((await stack.request("DELETE", "/api/delete", { model: "llama3.2" }, client)).status).toBe(403);

    const list = (await (await stack.request("GET", "/admin/keys", undefined, admin)).json()) as { keys: { name: string }[] };
    expect(list.keys.map((k) => k.name)).toEqual(["dave"]);
    expect(JSON.stringify(list)).not.toContain(secret);
    expect((await stack.request("POST", "/admin/keys", { name: "dave", role: "client" }, admin)).status).toBe(409);
    expect((await stack.request("POST", "/admin/keys", { name: "eve", role: "root" }, admin)).status).toBe(400);
    expect((await stack.request("GET", "/admin/keys/nobody", undefined, admin)).status).toBe(404);

    const rotated = (await (await stack.request("POST", "/admin/keys/dave/rotate", undefined, admin)).json()) as {
      secret: string;
    };
    expect(rotated.secret).not.toBe(secret);
    expect((await stack.request("POST", "/admin/keys/dave/revoke", undefined, admin)).status).toBe(200);
    expect((await stack.request("POST", "/admin/keys/dave/revoke", undefined, admin)).status).toBe(409);
  });

  test("an admin key manages keys like FOREMAN_TOKEN; the first key made on an open foreman closes it", async () => {
    await start();
    expect((await stack.request("GET", "/jobs")).status).toBe(200);
    const made = (await (await stack.request("POST", "/admin/keys", { name: "root", role: "admin" })).json()) as {
      secret: string;
    };
    await Bun.sleep(KEY_CACHE_MS + 50);
    const anonymous = await stack.request("GET", "/jobs");
    expect(anonymous.status).toBe(401);
    const admin = { "x-api-key": made.secret };
    expect((await stack.request("GET", "/admin/keys", undefined, admin)).status).toBe(200);
    expect((await stack.request("GET", "/healthz")).status).toBe(200);
  });
});
