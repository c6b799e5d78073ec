import { SQL } from "bun";

/** The channel a job's end is announced on. */
export const JOB_END_CHANNEL = "foreman_job_end";
/**
 * The channel that says a job became runnable (queued, or put back): its payload is empty, so the
 * notifications of one transaction, and of several waiting to be delivered, fold into one, and a node
 * re-reads the queue in its claim rather than trusting what a payload would say.
 */
export const JOB_QUEUED_CHANNEL = "foreman_job_queued";

/**
 * The channel that says a job was claimed (an attempt starts): its id as payload. A node whose client waits on
 * it connects to the running node's relay (src/nodes/relay-sink.ts) for its records.
 */
export const JOB_STARTED_CHANNEL = "foreman_job_started";

type Channel = typeof JOB_END_CHANNEL | typeof JOB_QUEUED_CHANNEL | typeof JOB_STARTED_CHANNEL;

/**
 * PostgreSQL refuses a NOTIFY payload of 8000 bytes or more; a chunk stays below with room to spare.
 * Only ids travel, never results: a waiter reads the job itself, so a payload never outgrows the limit
 * by a job's size, and a notification that is lost costs a re-check, not data.
 */
const MAX_PAYLOAD_BYTES = 7_900;

/** Splits `ids` into comma-joined payloads under the payload limit. */
export function jobEndPayloads(ids: readonly string[]): string[] {
  const payloads: string[] = [];
  let current = "";
  for (const id of ids) {
    if (id.length === 0 || id.includes(",")) throw new Error(`job id ${JSON.stringify(id)} cannot travel in a job-end payload`);
    if (Buffer.byteLength(id) > MAX_PAYLOAD_BYTES) throw new Error("job id longer than a NOTIFY payload");
    const next = current === "" ? id : `${current},${id}`;
    if (Buffer.byteLength(next) > MAX_PAYLOAD_BYTES) {
      payloads.push(current);
      current = id;
    } else current = next;
  }
  if (current !== "") payloads.push(current);
  return payloads;
}

/**
 * Announces that the jobs `ids` ended, inside the transaction that ends them: PostgreSQL delivers the
 * notification on commit and drops it on rollback, so no node wakes for an end that did not happen.
 */
export async function notifyJobEnded(tx: SQL, ids: readonly string[]): Promise<void> {
  for (const payload of jobEndPayloads(ids)) await tx`SELECT pg_notify(${JOB_END_CHANNEL}, ${payload})`;
}

/**
 * `statement` (an INSERT or UPDATE of jobs, RETURNING their `id` among its columns) as one statement that
 * also notifies `channel` for each row it returned: the row's id as payload (a job's end), or an empty one
 * (jobs runnable). No row, no notification: the call is correlated with the row, so it cannot run without
 * one. Identical notifications of one transaction fold into one; all are delivered on commit only. Saves
 * the round trip of a separate pg_notify. `ctes`: WITH entries the statement uses, without the WITH.
 */
export function notifyingRows(channel: Channel, statement: string, ctes = ""): string {
  const payload = channel === JOB_QUEUED_CHANNEL ? "''" : "r.id";
  return `WITH ${ctes ? `${ctes}, ` : ""}r AS (${statement})
    SELECT r.* FROM r, LATERAL (SELECT pg_notify('${channel}', ${payload}) WHERE r.id IS NOT NULL) notified`;
}

export interface JobEndListenerOptions {
  /** A client to listen through (its dedicated LISTEN connection), or a URL to open one for the listener alone. */
  sql?: SQL;
  url?: string;
  /** Jobs that ended on some node (this one included). */
  onEnded(ids: string[]): void;
  /**
   * The subscription is (again) in place: notifications sent while it was down are lost, so the caller
   * re-checks every job it waits for. Runs on the first subscribe too (covering ends before it).
   */
  onResync(): void;
  /** The safety net's period: onPoll runs this often whatever the channel does (off without onPoll). */
  pollMs?: number;
  onPoll?(): void;
}

/**
 * Wakes this node's waiters when a job ends on any node: LISTEN on {@link JOB_END_CHANNEL} through Bun.SQL's
 * sql.listen, which keeps one dedicated connection, reconnects it with backoff and re-subscribes, running
 * onResync each time (tested by terminating its backend in test/queue/pg-notify.test.ts). A slow poll
 * (onPoll) covers whatever the channel misses without anyone noticing, a half-open connection say.
 */
export class JobEndListener {
  readonly #listener: ChannelListener;

  constructor(options: JobEndListenerOptions) {
    const { onEnded, ...rest } = options;
    this.#listener = new ChannelListener(JOB_END_CHANNEL, {
      ...rest,
      onPayload: (payload) => {
        if (payload !== "") onEnded(payload.split(","));
      },
    });
  }

  /** Subscribes (resolves once the server acknowledged the LISTEN) and starts the safety poll. */
  start(): Promise<void> {
    return this.#listener.start();
  }

  stop(): Promise<void> {
    return this.#listener.stop();
  }
}

/**
 * Wakes this node's job loop when a job becomes runnable on any node's say ({@link JOB_QUEUED_CHANNEL}):
 * `onQueued` runs once per delivered notification, and on every (re)subscribe, since jobs queued while
 * it was down were announced to nobody. Its safety poll is the loop's periodic wake.
 */
export class JobQueuedListener {
  readonly #listener: ChannelListener;

  constructor(options: Omit<JobEndListenerOptions, "onEnded" | "onResync" | "onPoll"> & { onQueued(): void }) {
    const { onQueued, ...rest } = options;
    this.#listener = new ChannelListener(JOB_QUEUED_CHANNEL, {
      ...rest,
      onPayload: () => onQueued(),
      onResync: () => onQueued(),
      onPoll: () => onQueued(),
    });
  }

  start(): Promise<void> {
    return this.#listener.start();
  }

  stop(): Promise<void> {
    return this.#listener.stop();
  }
}

/**
 * Tells this node which jobs started on some node ({@link JOB_STARTED_CHANNEL}), and on every (re)subscribe
 * (starts announced while it was down are lost: the caller re-checks what it watches). No poll: a start missed
 * costs the live relay of one answer, which still arrives whole at its end.
 */
export class JobStartedListener {
  readonly #listener: ChannelListener;

  constructor(options: { sql: SQL; onStarted(ids: string[]): void; onResync(): void }) {
    const { onStarted, ...rest } = options;
    this.#listener = new ChannelListener(JOB_STARTED_CHANNEL, {
      ...rest,
      onPayload: (payload) => {
        if (payload !== "") onStarted(payload.split(","));
      },
    });
  }

  start(): Promise<void> {
    return this.#listener.start();
  }

  stop(): Promise<void> {
    return this.#listener.stop();
  }
}

/** One channel's LISTEN (the listeners above): its own or a given connection, a resync hook, a safety poll. */
class ChannelListener {
  readonly #channel: Channel;
  readonly #options: Omit<JobEndListenerOptions, "onEnded"> & { onPayload(payload: string): void };
  #sql: SQL | null = null;
  #owned = false;
  #subscription: SQL.ListenSubscription | null = null;
  #poll: ReturnType<typeof setInterval> | null = null;

  constructor(channel: Channel, options: Omit<JobEndListenerOptions, "onEnded"> & { onPayload(payload: string): void }) {
    if (!options.sql === !options.url) throw new Error("a listener takes sql or url, one of them");
    this.#channel = channel;
    this.#options = options;
  }

  /** Subscribes (resolves once the server acknowledged the LISTEN) and starts the safety poll. */
  async start(): Promise<void> {
    if (this.#subscription) return;
    const { sql, url, onPayload, onResync, pollMs, onPoll } = this.#options;
    this.#owned = !sql;
    this.#sql = sql ?? new SQL(url!, { max: 1 });
    try {
      this.#subscription = await this.#sql.listen(this.#channel, onPayload, () => onResync());
    } catch (error) {
      if (this.#owned) await this.#sql.close().catch(() => {});
      this.#sql = null;
      throw error;
    }
    if (onPoll && pollMs && pollMs > 0) this.#poll = setInterval(() => onPoll(), pollMs);
  }

  async stop(): Promise<void> {
    if (this.#poll) clearInterval(this.#poll);
    this.#poll = null;
    const subscription = this.#subscription;
    this.#subscription = null;
    if (subscription) await subscription.unlisten().catch(() => {});
    if (this.#owned && this.#sql) await this.#sql.close().catch(() => {});
    this.#sql = null;
  }
}
