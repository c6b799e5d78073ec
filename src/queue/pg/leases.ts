import type { SQL } from "bun";

/**
 * One row of target_leases as {@link TargetLeases.holders} reads it: who holds a target, under which
 * token, and how long the database's clock gives the lease (≤ 0: expired, anyone may take it).
 */
export interface LeaseHolder {
  target: string;
  node: string;
  token: number;
  expiresInMs: number;
}

/**
 * The target_leases table's three writes. Every time is the database's clock (clock_timestamp(), not
 * now(): a statement that waited for a lock compares against the instant it runs), so nodes whose
 * clocks differ agree on when a lease ends. The token grows by one on every takeover; PgJobStore's
 * fenced writes compare it, so a node still holding an old token changes nothing once another took over.
 */
export class TargetLeases {
  readonly #sql: SQL;

  constructor(sql: SQL) {
    this.#sql = sql;
  }

  /**
   * Takes `target` for `ttlMs` if nobody holds it: a new row starts at token 1, an expired (or released)
   * one is taken over with its token plus one. Returns the token, or null when another lease is live.
   * A live lease of this same node is not taken again either: its token may still be in use.
   */
  async acquire(target: string, node: string, ttlMs: number): Promise<number | null> {
    const rows = await this.#sql`
      INSERT INTO target_leases (target, node, token, expires_at)
      VALUES (${target}, ${node}, 1, clock_timestamp() + ${ttlMs}::float8 * interval '1 millisecond')
      ON CONFLICT (target) DO UPDATE
        SET node = excluded.node, token = target_leases.token + 1,
            expires_at = clock_timestamp() + ${ttlMs}::float8 * interval '1 millisecond'
        WHERE target_leases.expires_at <= clock_timestamp()
      RETURNING token::float8 AS token`;
    return rows.length > 0 ? (rows[0].token as number) : null;
  }

  /** Extends the lease to `ttlMs` from the database's now, only while `node` holds it with `token`, unexpired. */
  async renew(target: string, node: string, token: number, ttlMs: number): Promise<boolean> {
    const rows = await this.#sql`
      UPDATE target_leases SET expires_at = clock_timestamp() + ${ttlMs}::float8 * interval '1 millisecond'
      WHERE target = ${target} AND node = ${node} AND token = ${token}::bigint AND expires_at > clock_timestamp()
      RETURNING 1 AS ok`;
    return rows.length > 0;
  }

  /**
   * Ends the lease now (expires_at = the database's now) so another node can take the target at once,
   * instead of after the lease time. Does nothing if the lease is no longer `node`'s with `token`.
   */
  async release(target: string, node: string, token: number): Promise<boolean> {
    const rows = await this.#sql`
      UPDATE target_leases SET expires_at = clock_timestamp()
      WHERE target = ${target} AND node = ${node} AND token = ${token}::bigint AND expires_at > clock_timestamp()
      RETURNING 1 AS ok`;
    return rows.length > 0;
  }

  /** Every lease row, live or expired, by target. */
  async holders(): Promise<LeaseHolder[]> {
    return (await this.#sql`
      SELECT target, node, token::float8 AS token,
        (extract(epoch from expires_at - clock_timestamp()) * 1000)::float8 AS "expiresInMs"
      FROM target_leases ORDER BY target`) as LeaseHolder[];
  }
}

export interface LeaseKeeperOptions {
  sql: SQL;
  /** This node's name in target_leases (unique per process: a restarted node is another holder). */
  node: string;
  /** The targets this node can run. */
  targets: readonly string[];
  /** The lease time: how long a dead node's targets stay idle before another node takes them over. */
  ttlMs: number;
  /** How often the targets this node does not hold are tried. */
  pollMs: number;
  /** The node holds `target` under `token`: it may dispatch there, fencing its writes with the token. */
  onAcquired(target: string, token: number): void;
  /** The node must stop dispatching to `target` now (its lease was taken, ended, or could not be confirmed in time). */
  onLost(target: string): void;
  /** A failed database call (the keeper retries on its own); by default ignored. */
  onError?(error: unknown, target: string): void;
}

interface Held {
  token: number;
  /** performance.now() past which the node must not rely on the lease (see LeaseKeeper). */
  deadline: number;
  deadlineTimer: ReturnType<typeof setTimeout>;
  renewTimer: ReturnType<typeof setTimeout> | null;
}

/**
 * Keeps this node's leases on its targets: tries the free ones every pollMs, renews the held ones every
 * ttl/3, and tells the node (onAcquired, onLost) when it may and may not dispatch to each.
 *
 * The node must stop BEFORE anyone else could take over, so the keeper never waits for the database to
 * say a lease is lost. Each acquire or renew that succeeds sets a local deadline of performance.now()
 * read before the statement was sent + ttl − ttl/5: the database's expiry was set at a later instant,
 * so it ends after the deadline, and the fifth is the margin for a timer firing late and clocks running
 * at slightly different rates. When the deadline passes without a confirmed renew (the database slow,
 * unreachable, or a renew blocked on a lock), onLost runs from a local timer. A renew confirmed after its
 * lease was given up is not used: the lease is released and taken again under a new token.
 *
 * Targets spread first come, first served: whichever node tries a free target first holds it until it
 * stops or dies, so one node may hold every target while another holds none. That is correct (each
 * target has one runner) if not balanced; both nodes keep trying, so a survivor takes over a dead node's
 * targets one lease time after its last renew.
 */
export class LeaseKeeper {
  readonly #options: LeaseKeeperOptions;
  readonly #leases: TargetLeases;
  readonly #held = new Map<string, Held>();
  /** Targets with an acquire or renew statement in flight: at most one per target. */
  readonly #busy = new Set<string>();
  #pollTimer: ReturnType<typeof setInterval> | null = null;
  #stopped = true;

  constructor(options: LeaseKeeperOptions) {
    if (!(options.ttlMs > 0) || !(options.pollMs > 0)) throw new Error("LeaseKeeper: ttlMs and pollMs must be positive");
    this.#options = options;
    this.#leases = new TargetLeases(options.sql);
  }

  /** Starts trying the targets (the first try at once). */
  start(): void {
    if (!this.#stopped) return;
    this.#stopped = false;
    this.#tryFree();
    this.#pollTimer = setInterval(() => this.#tryFree(), this.#options.pollMs);
  }

  /**
   * Stops keeping leases: every held target is lost (onLost runs first, so the node stops dispatching),
   * then released so another node takes it without waiting for the lease time.
   */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    if (this.#pollTimer) clearInterval(this.#pollTimer);
    this.#pollTimer = null;
    const released = [...this.#held].map(([target, held]) => {
      this.#drop(target);
      this.#options.onLost(target);
      return this.#release(target, held.token);
    });
    await Promise.all(released);
  }

  /** Whether the node may dispatch to `target` now: it holds the lease and its local deadline has not passed. */
  valid(target: string): boolean {
    const held = this.#held.get(target);
    return held !== undefined && performance.now() < held.deadline;
  }

  /** The token of `target`'s lease while {@link valid}, for PgJobStore's fence; otherwise null. */
  token(target: string): number | null {
    return this.valid(target) ? this.#held.get(target)!.token : null;
  }

  get #margin(): number {
    return this.#options.ttlMs / 5;
  }

  #tryFree(): void {
    for (const target of this.#options.targets) {
      if (this.#stopped || this.#held.has(target) || this.#busy.has(target)) continue;
      this.#busy.add(target);
      const sentAt = performance.now();
      this.#leases
        .acquire(target, this.#options.node, this.#options.ttlMs)
        .then((token) => {
          if (token === null) return;
          // Stopped meanwhile, or the answer came too late to leave any time: give the lease back unused.
          if (this.#stopped || performance.now() >= this.#deadlineFrom(sentAt)) return this.#release(target, token);
          this.#hold(target, token, sentAt);
          this.#options.onAcquired(target, token);
        })
        .catch((error) => this.#options.onError?.(error, target))
        .finally(() => this.#busy.delete(target));
    }
  }

  #deadlineFrom(sentAt: number): number {
    return sentAt + this.#options.ttlMs - this.#margin;
  }

  /** Records the lease confirmed by a statement sent at `sentAt`, its deadline timer and its next renew. */
  #hold(target: string, token: number, sentAt: number): void {
    const previous = this.#held.get(target);
    if (previous) clearTimeout(previous.deadlineTimer);
    const deadline = this.#deadlineFrom(sentAt);
    const deadlineTimer = setTimeout(() => this.#expire(target, token), Math.max(0, deadline - performance.now()));
    const held: Held = { token, deadline, deadlineTimer, renewTimer: null };
    this.#held.set(target, held);
    this.#scheduleRenew(target, held, Math.max(0, sentAt + this.#options.ttlMs / 3 - performance.now()));
  }

  #scheduleRenew(target: string, held: Held, delayMs: number): void {
    if (held.renewTimer) clearTimeout(held.renewTimer);
    held.renewTimer = setTimeout(() => this.#renew(target, held), delayMs);
  }

  #renew(target: string, held: Held): void {
    held.renewTimer = null;
    if (this.#stopped || this.#held.get(target) !== held) return;
    this.#busy.add(target);
    const sentAt = performance.now();
    this.#leases
      .renew(target, this.#options.node, held.token, this.#options.ttlMs)
      .then((renewed) => {
        if (this.#held.get(target) !== held) {
          // Given up while the renew was in flight (deadline or stop): the row may be ours still; free it.
          if (renewed) return this.#release(target, held.token);
          return;
        }
        if (!renewed) {
          this.#drop(target);
          this.#options.onLost(target);
          return;
        }
        this.#hold(target, held.token, sentAt);
      })
      .catch((error) => {
        this.#options.onError?.(error, target);
        // Try again soon; the deadline timer ends the lease if no renew gets through in time.
        if (this.#held.get(target) === held) this.#scheduleRenew(target, held, Math.min(this.#options.pollMs, this.#margin));
      })
      .finally(() => this.#busy.delete(target));
  }

  /** The local deadline passed without a confirmed renew: stop dispatching without asking the database. */
  #expire(target: string, token: number): void {
    const held = this.#held.get(target);
    if (!held || held.token !== token) return;
    this.#drop(target);
    this.#options.onLost(target);
  }

  #drop(target: string): void {
    const held = this.#held.get(target);
    if (!held) return;
    clearTimeout(held.deadlineTimer);
    if (held.renewTimer) clearTimeout(held.renewTimer);
    this.#held.delete(target);
  }

  async #release(target: string, token: number): Promise<void> {
    await this.#leases.release(target, this.#options.node, token).catch((error) => this.#options.onError?.(error, target));
  }
}
