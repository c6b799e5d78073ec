import { isTerminal, type JobState } from "./queue/job-states";
import type { MaybePromise } from "./queue/maybe-promise";
import type { JobRow } from "./queue/store";
import type { JobEvent, JobLink } from "./worker/job-events";

/** What a watcher of one job sees: its state now and on each change, its streamed records, then its end. */
export type WatchEvent =
  | { type: "state"; state: JobState; contentType?: string }
  | { type: "chunk"; bytes: Uint8Array }
  /**
   * The reader fell more than `maxBacklogBytes` behind, or the node relaying the records kept no more (a gap):
   * the records from here on were not kept; the end still comes.
   */
  | { type: "overflow" }
  | { type: "ended"; job: JobRow };

/**
 * Watches one job: subscribes before reading its row (so an end in between is not missed), yields its
 * current state, then each event as it comes, and stops after the end, with the ended row (the row
 * decides the outcome; the message only wakes). `return()` unsubscribes at once, even while waiting.
 *
 * What the reader has not taken yet is kept for it, up to `maxBacklogBytes` of records (always at least
 * one): past that, the watch keeps nothing more but the end, and says `overflow` where the gap begins.
 * A reader that can catch up from elsewhere (the stored stream) so never costs more memory than that.
 */
export function watchJob(
  link: Pick<JobLink, "subscribe">,
  readJob: (id: string) => MaybePromise<JobRow | null>,
  jobId: string,
  /** Reads the row for its state only (without its bodies, see JobStore.getJobHead); default readJob. */
  readHead: (id: string) => MaybePromise<JobRow | null> = readJob,
  maxBacklogBytes = Infinity,
): AsyncIterableIterator<WatchEvent> {
  const pending: Array<Exclude<JobEvent, { type: "gap" }> | { type: "overflow" }> = [];
  let backlogBytes = 0;
  let overflowed = false;
  let wakeReader: (() => void) | undefined;
  let started = false;
  let finished = false;
  const unsubscribe = link.subscribe(jobId, (event) => {
    if (overflowed && event.type !== "ended") return;
    if (event.type === "gap") {
      overflowed = true;
      pending.push({ type: "overflow" });
      wakeReader?.();
      return;
    }
    if (event.type === "chunk") {
      if (backlogBytes > 0 && backlogBytes + event.bytes.byteLength > maxBacklogBytes) {
        overflowed = true;
        pending.push({ type: "overflow" });
        wakeReader?.();
        return;
      }
      backlogBytes += event.bytes.byteLength;
    }
    pending.push(event);
    wakeReader?.();
  });
  const finish = (): IteratorResult<WatchEvent> => {
    if (!finished) {
      finished = true;
      unsubscribe();
      wakeReader?.();
    }
    return { done: true, value: undefined };
  };
  const ended = async (): Promise<IteratorResult<WatchEvent>> => {
    const job = await readJob(jobId);
    if (!job) return finish();
    finished = true; // the next call ends the iteration
    unsubscribe();
    return { done: false, value: { type: "ended", job } };
  };

  return {
    [Symbol.asyncIterator]() {
      return this;
    },
    async next(): Promise<IteratorResult<WatchEvent>> {
      if (finished) return finish();
      if (!started) {
        started = true;
        const job = await readHead(jobId);
        if (!job) return finish();
        if (isTerminal(job.state)) return ended();
        return { done: false, value: { type: "state", state: job.state } };
      }
      while (pending.length === 0) {
        await new Promise<void>((resolve) => (wakeReader = resolve));
        wakeReader = undefined;
        if (finished) return finish();
      }
      const event = pending.shift()!;
      if (event.type === "ended") return ended();
      if (event.type === "chunk") backlogBytes -= event.bytes.byteLength;
      return { done: false, value: event };
    },
    async return(): Promise<IteratorResult<WatchEvent>> {
      return finish();
    },
  };
}
