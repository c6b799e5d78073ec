import { adapterFor } from "./adapters";
import type { WireAdapter } from "./adapters/adapter";
import { errorResponse } from "./adapters/error-shapes";
import { type Framing, framingFor, lastRecord, recordsOf } from "./adapters/framing";
import type { JobService } from "./job-service";
import type { WatchEvent } from "./job-watch";
import type { JobRow } from "./queue/store";
import { type MaybePromise, isPromise } from "./queue/maybe-promise";

const encoder = new TextEncoder();
/** Seconds a client told to come back (503) is asked to wait. */
const RETRY_AFTER_SECONDS = "5";
/**
 * The most a streaming client may fall behind, in bytes of records kept for it. A slower reader is
 * relayed the rest from the stored stream once its job has ended (the GPU never waits for a client):
 * this bounds what each client costs, however many pause on answers of megabytes.
 */
export const MAX_CLIENT_BACKLOG_BYTES = 4 * 1024 * 1024;
/** How much of the stored stream a lagging client is relayed per read. */
const STORED_SLICE_BYTES = 1024 * 1024;

/** The client waiting on its job: its hang-up, and how its connection's idle timeout comes back. */
export interface WaitingClient {
  signal: AbortSignal;
  /**
   * A streamed answer will call the returned function just before its last write (src/http/long-lived.ts
   * restoresAtEnd), so the connection stays alive for the client's next request.
   */
  restoresAtEnd?: () => () => void;
}

/**
 * Answers a client that waits on its queued job exactly as Ollama would answer that API: records
 * relayed as the worker passes them on (headers go out with the first, so an earlier failure still
 * gets its real status), or one body when the client did not ask for a stream. A client that goes
 * away cancels its job. One renderer over {@link JobService.watch}, whatever the API: the adapter
 * says what is final and how a late failure is told.
 */
export async function respondToClient(
  service: JobService,
  job: JobRow,
  streaming: boolean,
  client: WaitingClient,
): Promise<Response> {
  const clientSignal = client.signal;
  const adapter = adapterFor(job.type);
  const headers = { "x-foreman-job-id": job.id };
  const watch = service.watch(job.id, MAX_CLIENT_BACKLOG_BYTES);
  service.clients.add(job.id);
  let answered = false;
  /** The answer is complete: stop watching, and a disconnect now cancels nothing. */
  const settle = () => {
    answered = true;
    service.clients.delete(job.id);
    clientSignal.removeEventListener("abort", clientGone);
    void watch.return?.();
  };
  function clientGone() {
    // At shutdown a connection may close under the client before foreman answers it: it stays listed,
    // so releaseWaitingClients still ends its job (which would otherwise run after a restart for nobody).
    if (service.shuttingDown) return;
    if (!answered) service.hungUp(job.id);
    settle();
  }
  clientSignal.addEventListener("abort", clientGone, { once: true });
  if (clientSignal.aborted) clientGone();

  let contentType = "application/json";
  for (let next = await watch.next(); !next.done; next = await watch.next()) {
    const event = next.value;
    if (event.type === "state") {
      contentType = event.contentType ?? contentType;
    } else if (event.type === "overflow") {
      // Not relaying yet (one body waits for its end): the end's row has the answer.
      continue;
    } else if (event.type === "ended") {
      settle();
      // Whole, even when it is the stored stream: the connection's idle timeout can come back now.
      if (streaming) restoreNow(client);
      return await endedResponse(service, adapter, event.job, streaming, headers);
    } else {
      const framing = framingFor(contentType);
      const final = adapter.isFinal(lastRecord(event.bytes, framing), framing);
      if (streaming && framing !== "whole") {
        if (final) settle();
        const stored = (offset: number, length: number) => storedStream(service, job.id, framing, offset, length);
        const body = relay(event.bytes, final, framing, adapter, watch, stored, {
          settle,
          clientGone,
          isAnswered: () => answered,
          beforeClose: client.restoresAtEnd?.() ?? (() => {}),
        });
        return new Response(body, { headers: { "content-type": contentType, ...headers } });
      }
      // One body, complete as it arrives: answer now, not after the bookkeeping.
      if (final) {
        settle();
        return new Response(event.bytes as Uint8Array<ArrayBuffer>, { headers: { "content-type": contentType, ...headers } });
      }
    }
  }
  // The watch stopped without an end: the client went away (or the job vanished); nobody reads this.
  settle();
  return errorResponse(adapter.api, 499, "request canceled", headers);
}

/** A streaming client answered in one body: its connection's idle timeout now, not after the answer. */
function restoreNow(client: WaitingClient): void {
  try {
    client.restoresAtEnd?.()();
  } catch {
    // The connection is gone: nothing to keep alive.
  }
}

/** The job's whole stored stream (SSE or NDJSON), or null when it streamed none (a one-body answer). */
async function storedWhole(service: JobService, jobId: string) {
  try {
    const { artifacts } = service.store;
    return (await artifacts.get(jobId, "stream.sse")) ?? (await artifacts.get(jobId, "stream.ndjson"));
  } catch {
    return null; // a database error: the result is the answer
  }
}

/** How a job ended, as the end of a relayed stream tells it. */
type Outcome = Pick<JobRow, "state" | "error">;

/** `length` bytes of the job's stored stream (what the worker relayed, exactly) from `offset`; null when none is stored. */
function storedStream(
  service: JobService,
  jobId: string,
  framing: Framing,
  offset: number,
  length: number,
): MaybePromise<Uint8Array | null> {
  // A database error: the client gets the end without the rest.
  const failed = () => null;
  try {
    const slice = service.store.artifacts.slice(jobId, framing === "sse" ? "stream.sse" : "stream.ndjson", offset, length);
    return isPromise(slice) ? slice.catch(failed) : slice;
  } catch {
    return failed();
  }
}

/**
 * The streamed answer: the first chunk, then each chunk the watcher yields, until the final record or
 * the end. Each record is its own write, flushed as it comes, as Ollama writes them: a chunk may hold
 * several records (the worker read them together, or their messages came in one turn of this thread),
 * and a default ReadableStream would send everything enqueued in one turn as one HTTP chunk, which a
 * client that parses each read as one record (Genkit) cannot read. A direct stream writes each record
 * as its own chunk of the chunked body; the records of one turn still leave in one system call.
 *
 * Pulled: a chunk is taken from the watcher only once the client has taken the writes before it (a
 * write that meets backpressure is awaited). A client that falls {@link MAX_CLIENT_BACKLOG_BYTES} behind
 * (the watcher says `overflow`) is relayed the rest, byte for byte, from the stored stream once the
 * job has ended, a slice per write.
 */
function relay(
  first: Uint8Array,
  firstIsFinal: boolean,
  framing: Framing,
  adapter: WireAdapter,
  watch: AsyncIterator<WatchEvent>,
  stored: (offset: number, length: number) => MaybePromise<Uint8Array | null>,
  control: { settle: () => void; clientGone: () => void; isAnswered: () => boolean; beforeClose: () => void },
): ReadableStream<Uint8Array> {
  let last = lastRecord(first, framing);
  let relayed = first.byteLength;
  let overflowed = false;
  let running = false;

  /** The last write: the connection's idle timeout is put back first, while Bun still can. */
  const close = (controller: ReadableStreamDirectController) => {
    try {
      control.beforeClose();
    } catch {
      // The connection is gone: nothing to keep alive.
    }
    controller.close();
  };
  /** Writes each record of `chunk` and flushes it, so that each leaves as its own HTTP chunk. */
  const send = async (controller: ReadableStreamDirectController, chunk: Uint8Array) => {
    for (const record of recordsOf(chunk, framing)) {
      const written = controller.write(record);
      if (written instanceof Promise) await written;
      const flushed = controller.flush();
      if (flushed instanceof Promise) await flushed;
    }
  };
  /** After the last record: a failure becomes the API's last error record (the status is long sent). */
  const end = async (controller: ReadableStreamDirectController, job: Outcome) => {
    if (job.state !== "done" && adapter.recordError(last, framing) === undefined) {
      await send(controller, encoder.encode(adapter.failureRecord(job.error ?? job.state, framing, last)));
    }
    close(controller);
  };
  /** The stored rest, a slice per write, then the end. */
  const resume = async (controller: ReadableStreamDirectController, job: Outcome) => {
    for (;;) {
      const slice = await stored(relayed, STORED_SLICE_BYTES);
      if (!slice || slice.byteLength === 0) return end(controller, job);
      const written = controller.write(slice);
      if (written instanceof Promise) await written;
      relayed += slice.byteLength;
      // A record may start in an earlier slice: the last one is read from the stored tail once, at its end.
      if (slice.byteLength < STORED_SLICE_BYTES)
        last = lastRecord((await stored(Math.max(0, relayed - STORED_SLICE_BYTES), STORED_SLICE_BYTES)) ?? slice, framing);
    }
  };
  const run = async (controller: ReadableStreamDirectController) => {
    await send(controller, first);
    if (firstIsFinal) return close(controller);
    for (;;) {
      const next = control.isAnswered() ? undefined : await watch.next();
      if (!next || next.done) return close(controller);
      const event = next.value;
      if (event.type === "chunk") {
        relayed += event.bytes.byteLength;
        last = lastRecord(event.bytes, framing);
        await send(controller, event.bytes);
        // The final record is the whole answer: end the response now rather than after the bookkeeping.
        if (adapter.isFinal(last, framing)) {
          control.settle();
          return close(controller);
        }
        continue;
      }
      if (event.type === "overflow") overflowed = true;
      if (event.type === "ended") {
        control.settle();
        if (!overflowed) return end(controller, event.job);
        // Only how it ended is kept (the row's result may be megabytes) while the client reads the rest.
        return resume(controller, { state: event.job.state, error: event.job.error });
      }
    }
  };

  const source: Bun.DirectUnderlyingSource<Uint8Array> = {
    type: "direct",
    async pull(controller) {
      // The server's sink pulls once; a reader in this process may pull again, and is handed what the
      // one running loop has written so far.
      if (running) return void controller.flush();
      running = true;
      try {
        await run(controller);
      } catch {
        // Written to a response that is gone (the client hung up): its cancel has run, or runs now.
        control.clientGone();
      }
    },
    cancel: control.clientGone,
  };
  // The DOM's ReadableStream type (tsconfig's lib) has no direct overload; Bun's constructor takes it.
  return new ReadableStream<Uint8Array>(source as unknown as UnderlyingDefaultSource<Uint8Array>);
}

/**
 * The answer for a job that ended before any record reached its client: its result, or its error with its
 * status. A streaming client is answered the stored stream, byte for byte as it would have been relayed:
 * the worker, on its own thread, can run a short job to its end before this thread has read the row (CI
 * saw the openai client handed the non-streaming body, which its stream parser reads as no events).
 */
async function endedResponse(
  service: JobService,
  adapter: WireAdapter,
  job: JobRow,
  streaming: boolean,
  headers: Record<string, string>,
): Promise<Response> {
  const stream = job.state === "done" && streaming ? await storedWhole(service, job.id) : null;
  if (stream)
    return new Response(stream.data as Uint8Array<ArrayBuffer>, { headers: { "content-type": stream.contentType, ...headers } });
  if (job.state === "done") {
    return new Response(job.result ?? "{}", { headers: { "content-type": "application/json; charset=utf-8", ...headers } });
  }
  const status = job.errorStatus ?? 500;
  const retry: Record<string, string> = status === 503 ? { "retry-after": RETRY_AFTER_SECONDS } : {};
  return errorResponse(adapter.api, status, job.error ?? job.state, { ...headers, ...retry });
}
