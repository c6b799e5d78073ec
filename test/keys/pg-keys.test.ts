// API keys on PostgreSQL (PgKeyStore) against SQLite's KeyStore: the same calls give the same keys, the same
// refusals (status and text) and the same usage; a node's copy in memory (what a request's principal is
// decided on) follows the table. A real throwaway cluster.
import { afterAll, beforeAll, expect, test } from "bun:test";
import type { SQL } from "bun";
import { ApiError } from "../../src/errors";
import { type KeyRegistry, type KeyRow, KeyStore, secretHash } from "../../src/keys/key-store";
import { PrincipalResolver } from "../../src/keys/principal";
import { KeyUsage } from "../../src/keys/usage";
import { openDatabase } from "../../src/queue/db";
import { openPg } from "../../src/queue/pg/db";
import { PgKeyStore } from "../../src/queue/pg/keys";
import { type PgCluster, startPgCluster } from "../pg-cluster";

let cluster: PgCluster;
let sql: SQL;

beforeAll(async () => {
  cluster = await startPgCluster();
  sql = await openPg(cluster.url, { poolSize: 2 });
});
afterAll(async () => {
  await sql.close();
  await cluster.stop();
});

/** A call's outcome, comparable across engines: the key without its id (random), or the refusal. */
async function outcome(call: () => unknown): Promise<unknown> {
  try {
    const value = (await call()) as KeyRow | KeyRow[] | { key: KeyRow; secret: string } | null;
    const plain = (key: KeyRow) => ({ ...key, id: key.id.startsWith("key_"), hint: key.hint.length === 4 });
    if (value === null) return null;
    if (Array.isArray(value)) return value.map(plain);
    if ("secret" in value) return { key: plain(value.key), secret: value.secret.startsWith("fmn_") };
    return plain(value);
  } catch (error) {
    if (error instanceof ApiError) return { status: error.status, message: error.message };
    throw error;
  }
}

test("the same calls give the same keys and the same refusals on both engines", async () => {
  const lite = new KeyStore(openDatabase(":memory:"));
  const pg = new PgKeyStore(sql);
  const now = 1_780_000_000_000;
  const calls: Array<(keys: KeyRegistry) => unknown> = [
    (keys) => keys.create("alice", "client", { models: ["llama3.2*"], maxJobs: 4, dailyTokens: 1000, weight: 2 }, now),
    (keys) => keys.create("Bob", "admin", {}, now + 1),
    (keys) => keys.create("zed.ci-1", "client", { apis: ["ollama", "jobs"], maxPriority: 5 }, now + 2),
    (keys) => keys.create("alice", "client", {}, now + 3),
    (keys) => keys.create("-bad", "client", {}, now),
    (keys) => keys.create("ok", "client", { weight: 1000 }, now),
    (keys) => keys.create("ok", "client", { apis: ["nope" as "ollama"] }, now),
    (keys) => keys.list(),
    (keys) => keys.find("alice"),
    (keys) => keys.find("nobody"),
    (keys) => keys.get("nobody"),
    (keys) => keys.revoke("Bob", now + 10),
    (keys) => keys.revoke("Bob", now + 11),
    (keys) => keys.rotate("Bob", now + 12),
    (keys) => keys.rotate("alice", now + 13),
    (keys) => keys.list(),
  ];
  for (const [i, call] of calls.entries()) {
    const [fromLite, fromPg] = [await outcome(() => call(lite)), await outcome(() => call(pg))];
    expect(fromPg, `call ${i}`).toEqual(fromLite);
  }
  // Found by id as by name.
  const alice = (await pg.get("alice"))!;
  expect(await pg.find(alice.id)).toEqual(alice);
});

test("a node's copy of the keys is what principals are decided on: a key made, rotated or revoked on another node counts after a refresh", async () => {
  await sql`DELETE FROM keys`;
  const here = new PgKeyStore(sql);
  const elsewhere = new PgKeyStore(sql);
  await here.refresh();
  const principals = new PrincipalResolver(undefined, here, Date.now, 0);
  const headers = (secret: string) => new Headers({ authorization: `Bearer ${secret}` });
  // No key yet: foreman is open.
  expect(principals.resolve(new Headers())?.role).toBe("admin");
  const { key, secret } = await elsewhere.create("carol", "client");
  expect(principals.resolve(headers(secret))?.role).toBe("admin"); // still open: this node has not read it yet
  await here.refresh();
  expect(here.count()).toBe(1);
  expect(principals.resolve(new Headers())).toBeNull();
  expect(principals.resolve(headers(secret))?.key?.id).toBe(key.id);
  expect(here.byHash(secretHash(secret))?.key.name).toBe("carol");
  expect(here.cached(key.id)?.name).toBe("carol");
  const rotated = await elsewhere.rotate("carol");
  await here.refresh();
  expect(principals.resolve(headers(secret))).toBeNull();
  expect(principals.resolve(headers(rotated.secret))?.key?.name).toBe("carol");
  await elsewhere.revoke("carol");
  await here.refresh();
  expect(principals.resolve(headers(rotated.secret))).toBeNull();
  // Revoking the last key does not open foreman.
  expect(principals.resolve(new Headers())).toBeNull();
});

test("a key's usage reads the same as SQLite's: nothing today, its active jobs counted", async () => {
  const db = openDatabase(":memory:");
  const liteUsage = new KeyUsage(db);
  const pg = new PgKeyStore(sql);
  const { key } = await pg.create("dave", "client");
  expect(await pg.today(key.id)).toEqual(liteUsage.today(key.id));
  expect(await pg.activeJobs(key.id)).toBe(0);
  await sql`INSERT INTO key_usage (key_id, day, prompt_tokens, output_tokens, jobs, gpu_ms)
    VALUES (${key.id}, ${new Date().toISOString().slice(0, 10)}, 12, 30, 2, 4500)`;
  expect(await pg.today(key.id)).toEqual({ promptTokens: 12, outputTokens: 30, jobs: 2, gpuMs: 4500 });
});
