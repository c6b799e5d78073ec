import type { Logger } from "../log";
import { isTerminal } from "../queue/job-states";
import type { JobRow } from "../queue/store";
import type { JobEventHub } from "../worker/job-events";
import { FRAME, FrameReader } from "./frames";
import { RELAY_KEEP_ALIVE_MS, RELAY_PATH_PREFIX } from "./relay-source";

/** A relay silent this long (no record, no keep-alive) is taken for broken: its node froze, or the path between. */
const STALL_MS = RELAY_KEEP_ALIVE_MS * 3;
/** Tries to reach the running node for one start (it may answer 404 for a moment: its worker's message trails the claim). */
const CONNECT_TRIES = 3;
const RETRY_DELAY_MS = 200;

/** Why a job whose records were partly relayed is canceled when the relay breaks: its client cannot be given the rest. */
export const RELAY_LOST = {
  error: "the foreman node running this job stopped relaying its answer midway; the answer cannot be resumed, ask again",
  status: 502,
};

/** What the relay reads of the queue. */
export interface RelayQueue {
  runningAt(id: string): Promise<{ node: string; url: string | null } | null>;
  getJobHead(id: string): Promise<JobRow | null>;
  cancelJobs(ids: readonly string[], reason: { error: string; status: number }): Promise<JobRow[]>;
}

/**
 * The waiting node's half of the relay: when a job that someone here watches (a streaming client, an SSE
 * watch) starts on another node, connects to that node's relay (src/nodes/relay-source.ts) with the nodes'
 * shared secret and tells this node's hub each state, record and gap as it comes, then the end. The job's end
 * is the relay's to tell while it streams ({@link handlesEnd}): its notification may outrun the last records.
 *
 * A relay that breaks before any record came costs nothing (the end wakes the client, who gets the stored
 * stream). One that breaks midway, the job still running, cannot be resumed for the client (a new attempt
 * would answer anew), so the job is canceled ({@link RELAY_LOST}) and the client told so; one whose job has
 * ended gets a gap, and the rest from the stored stream.
 */
export class RelaySink {
  readonly #hub: JobEventHub;
  readonly #queue: RelayQueue;
  readonly #self: string;
  readonly #log: Logger;
  /** Relays connecting or streaming, by job. */
  readonly #following = new Map<string, AbortController>();
  /** Relays streaming: their jobs' ends are told by the relay. */
  readonly #streaming = new Set<string>();
  #authorization = "";
  /** A job this node canceled because its relay broke: its end is to be reported (log line, waiters). */
  onCanceled: (jobId: string) => void = () => {};

  constructor(hub: JobEventHub, queue: RelayQueue, self: string, log: Logger) {
    this.#hub = hub;
    this.#queue = queue;
    this.#self = self;
    this.#log = log;
  }

  set secret(secret: string) {
    this.#authorization = `Bearer ${secret}`;
  }

  /** Whether the job's end is the relay's to tell (it streams); the end's notification is then not told. */
  handlesEnd(jobId: string): boolean {
    return this.#streaming.has(jobId);
  }

  /**
   * Jobs that started somewhere: those watched here, not running here and not relayed yet are followed.
   * `runsHere` spares the lookup for this node's own (its worker's message usually comes before the notification).
   */
  started(ids: Iterable<string>, runsHere: (id: string) => boolean = () => false): void {
    for (const id of ids) if (this.#hub.isWatched(id) && !this.#following.has(id) && !runsHere(id)) void this.follow(id);
  }

  /** After missed notifications: every watched job not followed yet is looked up (the running ones are followed). */
  resync(): void {
    this.started(this.#hub.watched());
  }

  /** Stops every relay (shutdown). */
  stop(): void {
    for (const controller of this.#following.values()) controller.abort();
  }

  /** Follows the job's records from the node it runs on, if that is another node. */
  async follow(jobId: string): Promise<void> {
    if (this.#following.has(jobId)) return;
    const controller = new AbortController();
    this.#following.set(jobId, controller);
    let relayed = 0;
    /** Whether a relay streamed (so the job's end may have been held back): then the end is checked for below. */
    let streamed = false;
    try {
      for (let tries = 0; tries < CONNECT_TRIES && relayed === 0 && this.#hub.isWatched(jobId); tries++) {
        if (tries > 0) await Bun.sleep(RETRY_DELAY_MS);
        const at = await this.#queue.runningAt(jobId);
        if (!at || at.node === this.#self || !at.url) break;
        const outcome = await this.#relay(jobId, at.url, controller);
        relayed = outcome.relayed;
        streamed ||= outcome.streamed;
        if (outcome.ended || !this.#hub.isWatched(jobId)) return;
      }
      if (streamed) await this.#broken(jobId, relayed);
    } catch (error) {
      this.#log.debug("relay failed", { job: jobId, error });
    } finally {
      this.#following.delete(jobId);
      this.#streaming.delete(jobId);
    }
  }

  /** One connection: tells the hub what it relays; whether it streamed, whether the end came, how many record bytes did. */
  async #relay(
    jobId: string,
    url: string,
    controller: AbortController,
  ): Promise<{ streamed: boolean; ended: boolean; relayed: number }> {
    let relayed = 0;
    let streamed = false;
    let stall: ReturnType<typeof setTimeout> | undefined;
    const armStall = () => {
      clearTimeout(stall);
      stall = setTimeout(() => controller.abort(new Error("relay stalled")), STALL_MS);
    };
    try {
      armStall();
      const response = await fetch(`${url}${RELAY_PATH_PREFIX}${encodeURIComponent(jobId)}`, {
        headers: { authorization: this.#authorization },
        signal: controller.signal,
        redirect: "manual",
      });
      if (response.status !== 200 || !response.body) {
        await response.body?.cancel().catch(() => {});
        if (response.status !== 404) this.#log.warn("node relay refused", { job: jobId, url, status: response.status });
        return { streamed, ended: false, relayed };
      }
      streamed = true;
      this.#streaming.add(jobId);
      const reader = new FrameReader();
      for await (const bytes of response.body) {
        armStall();
        for (const frame of reader.push(bytes)) {
          if (frame.type === FRAME.chunk) {
            relayed += frame.payload.byteLength;
            this.#hub.emit(jobId, { type: "chunk", bytes: frame.payload });
          } else if (frame.type === FRAME.state) {
            this.#hub.emit(jobId, { type: "state", state: "working", contentType: new TextDecoder().decode(frame.payload) });
          } else if (frame.type === FRAME.gap) {
            this.#hub.emit(jobId, { type: "gap" });
          } else if (frame.type === FRAME.end) {
            this.#streaming.delete(jobId);
            this.#hub.emit(jobId, { type: "ended" });
            return { streamed, ended: true, relayed };
          }
        }
        // Nobody here waits any more (the client hung up: its cancel reaches the running node through the queue).
        if (!this.#hub.isWatched(jobId)) {
          controller.abort();
          return { streamed, ended: true, relayed };
        }
      }
      return { streamed, ended: false, relayed };
    } catch (error) {
      if (!controller.signal.aborted) this.#log.debug("node relay broke", { job: jobId, url, error });
      else if (controller.signal.reason instanceof Error && controller.signal.reason.message === "relay stalled")
        this.#log.warn("node relay stalled", { job: jobId, url });
      return { streamed, ended: false, relayed };
    } finally {
      clearTimeout(stall);
      this.#streaming.delete(jobId);
    }
  }

  /** The relay stopped without the end: tell the end if there was one, else cancel what cannot be resumed. */
  async #broken(jobId: string, relayed: number): Promise<void> {
    if (!this.#hub.isWatched(jobId)) return;
    const head = await this.#queue.getJobHead(jobId);
    if (head && isTerminal(head.state)) {
      // Its end's notification came while the relay was telling it: the rest is in the stored stream.
      if (relayed > 0) this.#hub.emit(jobId, { type: "gap" });
      this.#hub.emit(jobId, { type: "ended" });
      return;
    }
    if (relayed === 0) return; // nothing told yet: the next start, or the end, wakes the client
    const canceled = await this.#queue.cancelJobs([jobId], RELAY_LOST);
    this.#log.warn("node relay broke midway: the job is canceled, its client told", { job: jobId });
    for (const job of canceled) this.onCanceled(job.id);
    if (canceled.length === 0) this.#hub.emit(jobId, { type: "ended" });
  }
}
