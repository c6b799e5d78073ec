import { timingSafeEqual } from "node:crypto";
import { MAX_CLIENT_BACKLOG_BYTES } from "../job-response";
import type { JobEventHub } from "../worker/job-events";
import { FRAME, type FrameType, encodeFrame } from "./frames";

/** Where a node serves the records of the jobs it runs to the other nodes: `/_foreman/relay/{job id}`. */
export const RELAY_PATH_PREFIX = "/_foreman/relay/";
/** How long a relay request for a job not (yet) started here waits for its start: a claim's message may be on its way. */
const START_WAIT_MS = 1000;
/** A frame at least this often, so neither side's idle timeout cuts a relay waiting on a model's load. */
export const RELAY_KEEP_ALIVE_MS = 4000;

const encoder = new TextEncoder();

/** What this node keeps of one running job's attempt, for a relay that connects after it began. */
interface Attempt {
  contentType?: string;
  chunks: Uint8Array[];
  bytes: number;
  /** More than a client's backlog was relayed: the start is no longer kept, and a late relay gets a gap. */
  gap: boolean;
}

/**
 * The running node's half of the relay: keeps each running job's records (its attempt so far, up to a
 * client's backlog, MAX_CLIENT_BACKLOG_BYTES) and serves them, then the rest as they come, then the end, to
 * another node whose client waits on the job (src/nodes/relay-sink.ts). Only for a caller that presents the
 * nodes' shared secret; checked by {@link authorized} before anything else is done for the request.
 */
export class RelaySource {
  readonly #hub: JobEventHub;
  readonly #attempts = new Map<string, Attempt>();
  #secret: Buffer | undefined;

  constructor(hub: JobEventHub) {
    this.#hub = hub;
    hub.subscribeAll((jobId, event) => {
      if (event.type === "state") {
        if (event.state === "loading") this.#attempts.set(jobId, { chunks: [], bytes: 0, gap: false });
        else if (event.state === "queued") this.#attempts.delete(jobId);
        else if (event.state === "working" && event.contentType !== undefined)
          this.#attempt(jobId).contentType = event.contentType;
      } else if (event.type === "chunk") {
        const attempt = this.#attempt(jobId);
        if (attempt.gap) return;
        if (attempt.bytes > 0 && attempt.bytes + event.bytes.byteLength > MAX_CLIENT_BACKLOG_BYTES) {
          attempt.gap = true;
          attempt.chunks = [];
          return;
        }
        attempt.chunks.push(event.bytes);
        attempt.bytes += event.bytes.byteLength;
      } else if (event.type === "ended") {
        this.#attempts.delete(jobId);
      }
    });
  }

  /** The shared secret (read from the queue at the node's start); until it is set every relay request is refused. */
  set secret(secret: string) {
    this.#secret = Buffer.from(`Bearer ${secret}`);
  }

  /** Whether the request presents the nodes' secret, compared in constant time. */
  authorized(request: Request): boolean {
    if (!this.#secret) return false;
    const presented = Buffer.from(request.headers.get("authorization") ?? "");
    return presented.byteLength === this.#secret.byteLength && timingSafeEqual(presented, this.#secret);
  }

  #attempt(jobId: string): Attempt {
    let attempt = this.#attempts.get(jobId);
    if (!attempt) this.#attempts.set(jobId, (attempt = { chunks: [], bytes: 0, gap: false }));
    return attempt;
  }

  /** Whether the job runs here (its attempt is kept): its records come from this node's worker, not a relay. */
  runsHere(jobId: string): boolean {
    return this.#attempts.has(jobId);
  }

  /** The jobs whose attempt is kept here. */
  jobs(): string[] {
    return [...this.#attempts.keys()];
  }

  /**
   * Jobs that ended, wherever that was decided: a job another node canceled has its call aborted here, and
   * this node's worker reports no end for it, so its records are let go of on the end's notification.
   */
  forget(ids: Iterable<string>): void {
    for (const id of ids) this.#attempts.delete(id);
  }

  /**
   * The relay of one job running here: its content type, the records so far, each new one as it comes, then
   * the end. Closed without an end when the attempt stops here without one (given back to the queue). 404
   * when the job does not run here. A reader that falls more than a client's backlog behind gets a gap and,
   * from then on, only the end: what this costs is bounded whatever the reader's pace.
   */
  async serve(jobId: string): Promise<Response> {
    if (!this.#attempts.has(jobId) && !(await this.#started(jobId)))
      return Response.json({ error: `job ${jobId} does not run on this node` }, { status: 404 });
    const attempt = this.#attempts.get(jobId)!;
    const pending: Uint8Array[] = [];
    let pendingBytes = 0;
    let overflowed = attempt.gap;
    let done = false;
    let wake: (() => void) | undefined;
    const push = (type: FrameType, payload?: Uint8Array) => {
      const frame = encodeFrame(type, payload);
      pending.push(frame);
      pendingBytes += frame.byteLength;
      wake?.();
    };
    if (attempt.contentType !== undefined) push(FRAME.state, encoder.encode(attempt.contentType));
    if (attempt.gap) push(FRAME.gap);
    else for (const chunk of attempt.chunks) push(FRAME.chunk, chunk);
    // In the same turn as the copy above: no record falls between what was kept and what comes.
    const unsubscribe = this.#hub.subscribe(jobId, (event) => {
      if (done) return;
      if (event.type === "chunk") {
        if (overflowed) return;
        if (pendingBytes > 0 && pendingBytes + event.bytes.byteLength > MAX_CLIENT_BACKLOG_BYTES) {
          overflowed = true;
          return push(FRAME.gap);
        }
        push(FRAME.chunk, event.bytes);
      } else if (event.type === "state") {
        if (event.state === "queued") finish();
        else if (event.contentType !== undefined) push(FRAME.state, encoder.encode(event.contentType));
      } else if (event.type === "ended") {
        push(FRAME.end);
        finish();
      }
    });
    let keepAlive: ReturnType<typeof setInterval> | undefined;
    function finish() {
      done = true;
      unsubscribe();
      clearInterval(keepAlive);
      wake?.();
    }
    const body = new ReadableStream<Uint8Array>(
      {
        start() {
          keepAlive = setInterval(() => {
            if (pending.length === 0) push(FRAME.keepAlive);
          }, RELAY_KEEP_ALIVE_MS);
        },
        async pull(controller) {
          while (pending.length === 0 && !done) await new Promise<void>((resolve) => (wake = resolve));
          wake = undefined;
          if (pending.length > 0) {
            const out = pending.length === 1 ? pending[0]! : Buffer.concat(pending);
            pending.length = 0;
            pendingBytes = 0;
            controller.enqueue(out);
          }
          if (done && pending.length === 0) controller.close();
        },
        cancel: finish,
      },
      { highWaterMark: 0 },
    );
    return new Response(body, { headers: { "content-type": "application/x-foreman-relay", "cache-control": "no-store" } });
  }

  /** Waits a moment for the job to start here (its claim's message may trail the other node's request). */
  #started(jobId: string): Promise<boolean> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        unsubscribe();
        resolve(false);
      }, START_WAIT_MS);
      const unsubscribe = this.#hub.subscribe(jobId, () => {
        clearTimeout(timer);
        unsubscribe();
        resolve(this.#attempts.has(jobId));
      });
    });
  }
}
