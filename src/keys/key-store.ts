import type { Database } from "bun:sqlite";
import { createHash, randomBytes } from "node:crypto";
import { monotonicFactory } from "ulid";
import { ApiError } from "../errors";
import type { MaybePromise } from "../queue/maybe-promise";

const ulid = monotonicFactory();

/** What a key is: an admin sees and manages everything, a client only its own work. */
export const KEY_ROLES = ["admin", "client"] as const;
export type KeyRole = (typeof KEY_ROLES)[number];

/** The APIs a key may be limited to. */
export const KEY_APIS = ["ollama", "openai", "anthropic", "jobs", "batches"] as const;
export type KeyApi = (typeof KEY_APIS)[number];

/** One row of `keys`, camelCase, its lists parsed; the secret's hash never leaves this module. */
export interface KeyRow {
  id: string;
  name: string;
  role: KeyRole;
  /** The secret's last 4 characters. */
  hint: string;
  /** Globs (`*`, `?`) of the models it may use; null: every model. */
  models: string[] | null;
  apis: KeyApi[] | null;
  maxPriority: number | null;
  maxJobs: number | null;
  dailyTokens: number | null;
  /** Its fair-share weight: twice the weight, twice the GPU time before its counter is level with others' (default 1). */
  weight: number;
  createdAt: number;
  rotatedAt: number | null;
  revokedAt: number | null;
}

/** What a new key may set beside its name and role. */
export interface KeyLimits {
  models?: string[] | null;
  apis?: KeyApi[] | null;
  maxPriority?: number | null;
  maxJobs?: number | null;
  dailyTokens?: number | null;
  weight?: number | null;
}

/**
 * What the admin API and `foreman keys` do with keys, on either engine: SQLite's {@link KeyStore} answers at
 * once, PostgreSQL's (src/queue/pg/keys.ts) with Promises.
 */
export interface KeyRegistry {
  create(name: string, role: KeyRole, limits?: KeyLimits, now?: number): MaybePromise<{ key: KeyRow; secret: string }>;
  find(nameOrId: string): MaybePromise<KeyRow | null>;
  get(nameOrId: string): MaybePromise<KeyRow>;
  list(): MaybePromise<KeyRow[]>;
  revoke(nameOrId: string, now?: number): MaybePromise<KeyRow>;
  rotate(nameOrId: string, now?: number): MaybePromise<{ key: KeyRow; secret: string }>;
}

/** What deciding a request's principal reads, at once (before any body is read): see PrincipalResolver. */
export interface KeyLookup {
  /** How many keys were ever made (revoked ones count). */
  count(): number;
  /** The key whose secret hashes to `hash`, revoked ones included, with its stored hash; null when none has it. */
  byHash(hash: Buffer): { key: KeyRow; storedHash: Uint8Array } | null;
}

/** A bad key request (unknown name, duplicate name, bad value): the message says which; the API answers `status`. */
export class KeyError extends ApiError {
  override name = "KeyError";
  constructor(message: string, status: 400 | 404 | 409 = 400) {
    super(status, message);
  }
}

/** A key row as stored: its lists as JSON text. */
export type StoredKey = Omit<KeyRow, "models" | "apis"> & { models: string | null; apis: string | null };

const KEY_COLUMNS = `id, name, role, hint, models, apis, max_priority AS maxPriority, max_jobs AS maxJobs,
  daily_tokens AS dailyTokens, weight, created_at AS createdAt, rotated_at AS rotatedAt, revoked_at AS revokedAt`;

/** Where secrets start: tells a foreman key apart in a config file or a leak scanner's rules. */
export const SECRET_PREFIX = "fmn_";

/** A new secret: 32 random bytes (256 bits), base64url. */
export function newSecret(): string {
  return `${SECRET_PREFIX}${randomBytes(32).toString("base64url")}`;
}

/** The stored form of a secret (and of what a client presents, to look it up). */
export function secretHash(secret: string): Buffer {
  return createHash("sha256").update(secret).digest();
}

/** A key's fair-share weight's bounds: a ratio of a thousand either way between two keys is plenty. */
export const MIN_WEIGHT = 0.01;
export const MAX_WEIGHT = 100;

/** A key name: letters, digits and `._-`, 1 to 64, so it is safe as a metrics label and on a command line. */
const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/**
 * The `keys` table, its one owner: create, list, revoke and rotate, over whichever connection is given
 * (the server's, or the CLI's own while the server runs: SQLite's WAL lets both write).
 */
export class KeyStore implements KeyRegistry, KeyLookup {
  readonly #db: Database;
  readonly #insertStmt;
  readonly #byNameStmt;
  readonly #byIdStmt;
  readonly #byHashStmt;
  readonly #listStmt;
  readonly #revokeStmt;
  readonly #rotateStmt;
  readonly #countStmt;

  constructor(db: Database) {
    this.#db = db;
    this.#insertStmt = db.query<StoredKey, Record<string, string | number | null | Buffer>>(
      `INSERT INTO keys (id, name, role, secret_hash, hint, models, apis, max_priority, max_jobs, daily_tokens, weight,
         created_at)
       VALUES ($id, $name, $role, $hash, $hint, $models, $apis, $maxPriority, $maxJobs, $dailyTokens, $weight, $now)
       RETURNING ${KEY_COLUMNS}`,
    );
    this.#byNameStmt = db.query<StoredKey, [string]>(`SELECT ${KEY_COLUMNS} FROM keys WHERE name = ?`);
    this.#byIdStmt = db.query<StoredKey, [string]>(`SELECT ${KEY_COLUMNS} FROM keys WHERE id = ?`);
    this.#byHashStmt = db.query<StoredKey & { secretHash: Uint8Array }, [Buffer]>(
      `SELECT ${KEY_COLUMNS}, secret_hash AS secretHash FROM keys WHERE secret_hash = ?`,
    );
    this.#listStmt = db.query<StoredKey, []>(`SELECT ${KEY_COLUMNS} FROM keys ORDER BY name`);
    this.#revokeStmt = db.query<StoredKey, [number, string]>(
      `UPDATE keys SET revoked_at = ?1 WHERE id = ?2 AND revoked_at IS NULL RETURNING ${KEY_COLUMNS}`,
    );
    this.#rotateStmt = db.query<StoredKey, [Buffer, string, number, string]>(
      `UPDATE keys SET secret_hash = ?1, hint = ?2, rotated_at = ?3 WHERE id = ?4 AND revoked_at IS NULL RETURNING ${KEY_COLUMNS}`,
    );
    this.#countStmt = db.query<{ n: number }, []>(`SELECT count(*) AS n FROM keys`);
  }

  /** Makes a key; its secret is returned this once and never again (only its hash is kept). */
  create(name: string, role: KeyRole, limits: KeyLimits = {}, now = Date.now()): { key: KeyRow; secret: string } {
    checkNewKey(name, role, limits);
    const secret = newSecret();
    return this.#db
      .transaction(() => {
        if (this.#byNameStmt.get(name)) throw new KeyError(`a key named "${name}" exists already`, 409);
        const row = this.#insertStmt.get({
          id: `key_${ulid(now)}`,
          name,
          role,
          hash: secretHash(secret),
          hint: secret.slice(-4),
          ...storedLimits(limits),
          now,
        })!;
        return { key: parseKey(row), secret };
      })
      .immediate();
  }

  /** A key by name or id (revoked ones too), or null. */
  find(nameOrId: string): KeyRow | null {
    const row = this.#byNameStmt.get(nameOrId) ?? this.#byIdStmt.get(nameOrId);
    return row ? parseKey(row) : null;
  }

  /** {@link find}, or a KeyError (404) naming what was asked. */
  get(nameOrId: string): KeyRow {
    const key = this.find(nameOrId);
    if (!key) throw new KeyError(`no key named "${nameOrId}"`, 404);
    return key;
  }

  /** Every key, revoked ones too, by name. */
  list(): KeyRow[] {
    return this.#listStmt.all().map(parseKey);
  }

  /**
   * The key whose secret hashes to `hash` (what a client presented), revoked ones included (the caller
   * refuses them), with its stored hash for the constant-time comparison; null when none has it.
   */
  byHash(hash: Buffer): { key: KeyRow; storedHash: Uint8Array } | null {
    const row = this.#byHashStmt.get(hash);
    if (!row) return null;
    const { secretHash: storedHash, ...stored } = row;
    return { key: parseKey(stored), storedHash };
  }

  /** Revokes a key: its secret stops working (within the server's one-second cache). Its rows stay its. */
  revoke(nameOrId: string, now = Date.now()): KeyRow {
    const key = this.get(nameOrId);
    const row = this.#revokeStmt.get(now, key.id);
    if (!row) throw new KeyError(`key "${key.name}" is revoked already`, 409);
    return parseKey(row);
  }

  /** A new secret for a key (the old one stops working); its name, limits and rows stay. */
  rotate(nameOrId: string, now = Date.now()): { key: KeyRow; secret: string } {
    const key = this.get(nameOrId);
    const secret = newSecret();
    const row = this.#rotateStmt.get(secretHash(secret), secret.slice(-4), now, key.id);
    if (!row) throw new KeyError(`key "${key.name}" is revoked: create a new one`, 409);
    return { key: parseKey(row), secret };
  }

  /** How many keys were ever made (revoked ones count: revoking the last key must not open foreman). */
  count(): number {
    return this.#countStmt.get()!.n;
  }
}

/** A key's limits as stored: lists as JSON text, absent as null, the weight 1 unless given. */
export function storedLimits(limits: KeyLimits) {
  return {
    models: limits.models ? JSON.stringify(limits.models) : null,
    apis: limits.apis ? JSON.stringify(limits.apis) : null,
    maxPriority: limits.maxPriority ?? null,
    maxJobs: limits.maxJobs ?? null,
    dailyTokens: limits.dailyTokens ?? null,
    weight: limits.weight ?? 1,
  };
}

/** Refuses a new key's name, role or limits that are not allowed (KeyError, 400), saying what is. */
export function checkNewKey(name: string, role: KeyRole, limits: KeyLimits): void {
  if (!NAME.test(name)) throw new KeyError(`a key name is 1 to 64 letters, digits, ".", "_" or "-", not "${name}"`);
  if (!(KEY_ROLES as readonly string[]).includes(role)) throw new KeyError(`role must be admin or client, not "${role}"`);
  checkLimits(limits);
}

/** A stored row as a KeyRow: its lists parsed. */
export function parseKey(row: StoredKey): KeyRow {
  return {
    ...row,
    models: row.models === null ? null : (JSON.parse(row.models) as string[]),
    apis: row.apis === null ? null : (JSON.parse(row.apis) as KeyApi[]),
  };
}

function checkLimits(limits: KeyLimits): void {
  for (const glob of limits.models ?? []) {
    if (glob.trim() === "") throw new KeyError("a model glob may not be empty");
  }
  for (const api of limits.apis ?? []) {
    if (!(KEY_APIS as readonly string[]).includes(api)) throw new KeyError(`apis are ${KEY_APIS.join(", ")}, not "${api}"`);
  }
  const whole = (name: string, value: number | null | undefined, min: number, max = Number.MAX_SAFE_INTEGER) => {
    if (value === null || value === undefined) return;
    if (!Number.isInteger(value) || value < min || value > max)
      throw new KeyError(`${name} must be an integer from ${min} to ${max}, not ${value}`);
  };
  whole("max_priority", limits.maxPriority, -1000, 1000);
  whole("max_jobs", limits.maxJobs, 1);
  whole("daily_tokens", limits.dailyTokens, 1);
  const weight = limits.weight;
  if (weight !== null && weight !== undefined && !(Number.isFinite(weight) && weight >= MIN_WEIGHT && weight <= MAX_WEIGHT))
    throw new KeyError(`weight must be a number from ${MIN_WEIGHT} to ${MAX_WEIGHT}, not ${weight}`);
}
