import { timingSafeEqual } from "node:crypto";
import { normalizeModel } from "../ollama/model-key";
import { type KeyApi, type KeyRow, type KeyLookup, secretHash } from "./key-store";

/**
 * Who is asking, resolved once per request before its body is read: a key (admin or client, with its
 * scopes and limits), the legacy FOREMAN_TOKEN (an admin without a key row), or anybody where foreman
 * is open (neither a token nor keys: an admin, as every caller was before keys).
 */
export interface Principal {
  /** The key's id, recorded on what it makes; null for FOREMAN_TOKEN and an open foreman. */
  readonly keyId: string | null;
  /** The key's name (logs, metrics, views); null without a key. */
  readonly name: string | null;
  readonly role: "admin" | "client";
  /** The key's scopes and limits; null without a key. */
  readonly key: KeyRow | null;
}

/** An open foreman's caller, and FOREMAN_TOKEN's: sees and may do everything, owns nothing by key. */
export const OPEN_ADMIN: Principal = Object.freeze({ keyId: null, name: null, role: "admin", key: null });

/**
 * A caller of a public route (health, docs, the dashboard's page) who showed no valid key: owns nothing
 * and sees nothing (its key id matches no row).
 */
export const NOBODY: Principal = Object.freeze({ keyId: "", name: null, role: "client", key: null });

/** The principal of a key row. */
export function keyPrincipal(key: KeyRow): Principal {
  return Object.freeze({ keyId: key.id, name: key.name, role: key.role, key });
}

/** Whether `principal` may see a row owned by `ownerKeyId` (null: made without a key): admins see all. */
export function sees(principal: Principal, ownerKeyId: string | null): boolean {
  return principal.role === "admin" || (ownerKeyId !== null && ownerKeyId === principal.keyId);
}

/** The key id a list is filtered on: undefined (every row) for an admin, the key's own id for a client. */
export function ownerFilter(principal: Principal): string | undefined {
  return principal.role === "admin" ? undefined : (principal.keyId ?? "");
}

const principals = new WeakMap<Request, Principal>();

/** Records the principal a request was resolved to (the transport and the app's onRequest do). */
export function setPrincipal(request: Request, principal: Principal): void {
  principals.set(request, principal);
}

/** The principal a request was resolved to; NOBODY if it was never resolved (deny by default). */
export function principalOf(request: Request): Principal {
  return principals.get(request) ?? NOBODY;
}

/** Whether the request was resolved already (the transport did it; onRequest need not again). */
export function hasPrincipal(request: Request): boolean {
  return principals.has(request);
}

/**
 * The secret the client presented: `Authorization: Bearer <secret>`, or, without that header,
 * `x-api-key: <secret>` (how the Anthropic SDKs send their API key). "" when none.
 */
export function presentedSecret(headers: Headers): string {
  const authorization = headers.get("authorization");
  return authorization === null
    ? (headers.get("x-api-key")?.trim() ?? "")
    : (/^Bearer\s+(.+)$/i.exec(authorization)?.[1]?.trim() ?? "");
}

/** Which API a path belongs to, for a key's `apis` scope; null for routes every key may use (/queue, /ui/events…). */
export function keyApiForPath(path: string): KeyApi | null {
  if (path === "/jobs" || path.startsWith("/jobs/")) return "jobs";
  if (/^\/v1\/(batches|files)(\/|$)/.test(path)) return "batches";
  if (path === "/v1/messages" || path.startsWith("/v1/messages/")) return "anthropic";
  if (path.startsWith("/v1/")) return "openai";
  if (path === "/" || path.startsWith("/api/")) return "ollama";
  return null;
}

/** A model glob as a regular expression: `*` any run of characters (slashes too), `?` one, the rest literal. */
function globPattern(glob: string): RegExp {
  const body = glob
    .replace(/[.+^${}()|[\]\\]/g, "\\$&")
    .replace(/\*/g, ".*")
    .replace(/\?/g, ".");
  return new RegExp(`^${body}$`);
}

/**
 * Whether the key may use `model`: no list allows every model; else a glob matches the name as sent or
 * as Ollama resolves it (`llama3.2` is `llama3.2:latest`), so either spelling of a scope works.
 */
export function modelAllowed(principal: Principal, model: string): boolean {
  const globs = principal.key?.models;
  if (!globs) return true;
  const names = [model, normalizeModel(model)];
  return globs.some((glob) =>
    [globPattern(glob), globPattern(normalizeModel(glob))].some((pattern) => names.some((name) => pattern.test(name))),
  );
}

/** How long a resolved key is trusted before the database is read again: a revoke takes effect within it. */
export const KEY_CACHE_MS = 1000;
/** Keys cached at most; past it the cache starts over (keys are few, secrets tried are not cached). */
const KEY_CACHE_MAX = 1024;

/**
 * Resolves the secret a request presents to its principal: FOREMAN_TOKEN (compared in constant time), a
 * key (looked up by its SHA-256, compared again in constant time, refused when revoked), or, when foreman
 * has neither a token nor any key, the open admin. Valid keys are cached for {@link KEY_CACHE_MS}, and so is
 * whether any key exists: the CLI may create or revoke keys in another process while the server runs.
 */
export class PrincipalResolver {
  readonly #keys: KeyLookup | undefined;
  readonly #tokenHash: Buffer | undefined;
  readonly #cache = new Map<string, { principal: Principal; at: number }>();
  #anyKey: { value: boolean; at: number } | undefined;

  readonly #cacheMs: number;

  constructor(
    token: string | undefined,
    keys: KeyLookup | undefined,
    readonly clock: () => number = Date.now,
    /** How long a resolved key is trusted; 0 for a lookup that is a copy in memory already (PgKeyStore). */
    cacheMs = KEY_CACHE_MS,
  ) {
    this.#tokenHash = token ? secretHash(token) : undefined;
    this.#keys = keys;
    this.#cacheMs = cacheMs;
  }

  /** Whether requests need a secret at all: FOREMAN_TOKEN is set or a key was ever made. */
  closed(): boolean {
    return this.#tokenHash !== undefined || this.#hasKeys();
  }

  /** The principal of the request's headers, or null when it must be refused (401). */
  resolve(headers: Headers): Principal | null {
    if (!this.closed()) return OPEN_ADMIN;
    const presented = presentedSecret(headers);
    if (presented === "") return null;
    const hash = secretHash(presented);
    if (this.#tokenHash && timingSafeEqual(hash, this.#tokenHash)) return OPEN_ADMIN;
    return this.#keyFor(hash);
  }

  #hasKeys(): boolean {
    if (!this.#keys) return false;
    const now = this.clock();
    if (this.#anyKey && now - this.#anyKey.at < this.#cacheMs) return this.#anyKey.value;
    const value = this.#keys.count() > 0;
    this.#anyKey = { value, at: now };
    return value;
  }

  #keyFor(hash: Buffer): Principal | null {
    // A FOREMAN_TOKEN-only deployment reads no key table for a wrong token (whether any key exists is cached).
    if (!this.#keys || !this.#hasKeys()) return null;
    const now = this.clock();
    // The cache is keyed by the hash, never by the secret: the process holds no secret it was shown.
    const id = hash.toString("base64");
    const cached = this.#cache.get(id);
    if (cached && now - cached.at < this.#cacheMs) return cached.principal;
    this.#cache.delete(id);
    const found = this.#keys.byHash(hash);
    if (!found || found.key.revokedAt !== null) return null;
    // The lookup went by an index on the hash; this compares the whole digest in constant time all the same.
    if (found.storedHash.length !== hash.length || !timingSafeEqual(Buffer.from(found.storedHash), hash)) return null;
    const principal = keyPrincipal(found.key);
    if (this.#cache.size >= KEY_CACHE_MAX) this.#cache.clear();
    this.#cache.set(id, { principal, at: now });
    return principal;
  }
}
