import type { SQL } from "bun";
import { monotonicFactory } from "ulid";
import {
  type KeyLimits,
  type KeyLookup,
  type KeyRegistry,
  type KeyRole,
  type KeyRow,
  KeyError,
  type StoredKey,
  checkNewKey,
  newSecret,
  parseKey,
  secretHash,
  storedLimits,
} from "../../keys/key-store";
import { type DayUsage, utcDay } from "../../keys/usage";

const ulid = monotonicFactory();

/** SQLite's KEY_COLUMNS (src/keys/key-store.ts) on PostgreSQL: the same names, bigint times as numbers. */
const KEY_COLUMNS = `id, name, role, hint, models, apis, max_priority AS "maxPriority", max_jobs AS "maxJobs",
  daily_tokens::float8 AS "dailyTokens", weight, created_at::float8 AS "createdAt", rotated_at::float8 AS "rotatedAt",
  revoked_at::float8 AS "revokedAt"`;

/** How often a node reads the keys again: a key made, revoked or rotated on another node takes effect within it. */
export const KEY_REFRESH_MS = 1000;

/**
 * The `keys` table on PostgreSQL, shared by every node: what KeyStore does on SQLite (same checks, same
 * errors, same rows), each call a Promise. Deciding a request's principal happens before its body is read and
 * cannot wait on the database: that reads this node's copy of every key ({@link KeyLookup}: count, byHash),
 * read again every {@link KEY_REFRESH_MS} and after each change made here. Keys are few (a team's members and
 * programs), so the copy is the whole table.
 */
export class PgKeyStore implements KeyRegistry, KeyLookup {
  readonly #sql: SQL;
  #byHash = new Map<string, { key: KeyRow; storedHash: Uint8Array }>();
  #byId = new Map<string, KeyRow>();
  #count = 0;
  #timer: ReturnType<typeof setInterval> | undefined;
  /** A refresh failed (the database away): the copy stays as it was, and this says so once until one succeeds. */
  onRefreshError: (error: unknown) => void = () => {};

  constructor(sql: SQL) {
    this.#sql = sql;
  }

  /** Reads the keys, then again every {@link KEY_REFRESH_MS} until stop(). */
  async start(): Promise<void> {
    await this.refresh();
    let failing = false;
    this.#timer = setInterval(() => {
      this.refresh().then(
        () => (failing = false),
        (error) => {
          if (!failing) this.onRefreshError(error);
          failing = true;
        },
      );
    }, KEY_REFRESH_MS);
  }

  stop(): void {
    clearInterval(this.#timer);
  }

  /** Reads every key into this node's copy. */
  async refresh(): Promise<void> {
    const rows: Array<StoredKey & { secretHash: Uint8Array }> = await this.#sql.unsafe(
      `SELECT ${KEY_COLUMNS}, secret_hash AS "secretHash" FROM keys`,
    );
    const byHash = new Map<string, { key: KeyRow; storedHash: Uint8Array }>();
    const byId = new Map<string, KeyRow>();
    for (const { secretHash: storedHash, ...stored } of rows) {
      const key = parseKey(stored);
      byHash.set(Buffer.from(storedHash).toString("base64"), { key, storedHash: new Uint8Array(storedHash) });
      byId.set(key.id, key);
    }
    this.#byHash = byHash;
    this.#byId = byId;
    this.#count = rows.length;
  }

  count(): number {
    return this.#count;
  }

  byHash(hash: Buffer): { key: KeyRow; storedHash: Uint8Array } | null {
    return this.#byHash.get(hash.toString("base64")) ?? null;
  }

  /** A key by id from this node's copy (a job's key's name, for views and log lines). */
  cached(id: string): KeyRow | null {
    return this.#byId.get(id) ?? null;
  }

  async create(name: string, role: KeyRole, limits: KeyLimits = {}, now = Date.now()): Promise<{ key: KeyRow; secret: string }> {
    checkNewKey(name, role, limits);
    const secret = newSecret();
    const stored = storedLimits(limits);
    const [row] = await this.#sql.unsafe(
      `INSERT INTO keys (id, name, role, secret_hash, hint, models, apis, max_priority, max_jobs, daily_tokens, weight, created_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
       ON CONFLICT (name) DO NOTHING RETURNING ${KEY_COLUMNS}`,
      [
        `key_${ulid(now)}`,
        name,
        role,
        secretHash(secret),
        secret.slice(-4),
        stored.models,
        stored.apis,
        stored.maxPriority,
        stored.maxJobs,
        stored.dailyTokens,
        stored.weight,
        now,
      ],
    );
    if (!row) throw new KeyError(`a key named "${name}" exists already`, 409);
    await this.refresh();
    return { key: parseKey(row), secret };
  }

  async find(nameOrId: string): Promise<KeyRow | null> {
    // By name first, as SQLite's: a name that looks like another key's id still names its own key.
    const [row] = await this.#sql.unsafe(
      `SELECT ${KEY_COLUMNS} FROM keys WHERE name = $1 UNION ALL (SELECT ${KEY_COLUMNS} FROM keys WHERE id = $1) LIMIT 1`,
      [nameOrId],
    );
    return row ? parseKey(row) : null;
  }

  async get(nameOrId: string): Promise<KeyRow> {
    const key = await this.find(nameOrId);
    if (!key) throw new KeyError(`no key named "${nameOrId}"`, 404);
    return key;
  }

  async list(): Promise<KeyRow[]> {
    const rows: StoredKey[] = await this.#sql.unsafe(`SELECT ${KEY_COLUMNS} FROM keys ORDER BY name COLLATE "C"`);
    return rows.map(parseKey);
  }

  async revoke(nameOrId: string, now = Date.now()): Promise<KeyRow> {
    const key = await this.get(nameOrId);
    const [row] = await this.#sql.unsafe(
      `UPDATE keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL RETURNING ${KEY_COLUMNS}`,
      [now, key.id],
    );
    if (!row) throw new KeyError(`key "${key.name}" is revoked already`, 409);
    await this.refresh();
    return parseKey(row);
  }

  async rotate(nameOrId: string, now = Date.now()): Promise<{ key: KeyRow; secret: string }> {
    const key = await this.get(nameOrId);
    const secret = newSecret();
    const [row] = await this.#sql.unsafe(
      `UPDATE keys SET secret_hash = $1, hint = $2, rotated_at = $3 WHERE id = $4 AND revoked_at IS NULL RETURNING ${KEY_COLUMNS}`,
      [secretHash(secret), secret.slice(-4), now, key.id],
    );
    if (!row) throw new KeyError(`key "${key.name}" is revoked: create a new one`, 409);
    await this.refresh();
    return { key: parseKey(row), secret };
  }

  /** The key's usage on the UTC day of `now` (KeyUsage.today on SQLite). */
  async today(keyId: string, now = Date.now()): Promise<DayUsage> {
    const [row] = await this.#sql`SELECT prompt_tokens::float8 AS "promptTokens", output_tokens::float8 AS "outputTokens",
      jobs, gpu_ms::float8 AS "gpuMs" FROM key_usage WHERE key_id = ${keyId} AND day = ${utcDay(now)}`;
    return row ?? { promptTokens: 0, outputTokens: 0, jobs: 0, gpuMs: 0 };
  }

  /** The key's queued and running jobs (KeyUsage.activeJobs on SQLite). */
  async activeJobs(keyId: string): Promise<number> {
    const [row] = await this.#sql`SELECT count(*)::float8 AS n FROM jobs
      WHERE key_id = ${keyId} AND state IN ('queued', 'loading', 'working')`;
    return row.n;
  }
}
