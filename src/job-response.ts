import { adapterFor } from "./adapters";
import type { WireAdapter } from "./adapters/adapter";
import { errorResponse } from "./adapters/error-shapes";
import { type Framing, framingFor, lastRecord } from "./adapters/framing";
import type { JobService } from "./job-service";
import type { WatchEvent } from "./job-watch";
import type { JobRow } from "./queue/store";

const encoder = new TextEncoder();
/** Seconds a client told to come back (503) is asked to wait. */
const RETRY_AFTER_SECONDS = "5";

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
  clientSignal: AbortSignal,
): Promise<Response> {
  const adapter = adapterFor(job.type);
  const headers = { "x-foreman-job-id": job.id };
  const watch = service.watch(job.id);
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
    } else if (event.type === "ended") {
      settle();
      return endedResponse(adapter, event.job, headers);
    } else {
      const framing = framingFor(contentType);
      const final = adapter.isFinal(lastRecord(event.bytes, framing), framing);
      if (streaming && framing !== "whole") {
        if (final) settle();
        const body = relay(event.bytes, final, framing, adapter, watch, { settle, clientGone, isAnswered: () => answered });
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

/** The streamed answer: the first chunk, then each chunk the watcher yields, until the final record or the end. */
function relay(
  first: Uint8Array,
  firstIsFinal: boolean,
  framing: Framing,
  adapter: WireAdapter,
  watch: AsyncIterator<WatchEvent>,
  control: { settle: () => void; clientGone: () => void; isAnswered: () => boolean },
): ReadableStream<Uint8Array> {
  let last = lastRecord(first, framing);
  return new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(first);
      if (firstIsFinal) controller.close();
    },
    async pull(controller) {
      for (;;) {
        const next = control.isAnswered() ? undefined : await watch.next();
        if (!next || next.done) return controller.close();
        const event = next.value;
        if (event.type === "chunk") {
          controller.enqueue(event.bytes);
          last = lastRecord(event.bytes, framing);
          // The final record is the whole answer: end the response now rather than after the bookkeeping.
          if (adapter.isFinal(last, framing)) {
            control.settle();
            controller.close();
          }
          return;
        }
        if (event.type === "ended") {
          control.settle();
          // After the first record the status is sent: a failure becomes the API's last error record.
          if (event.job.state !== "done" && adapter.recordError(last, framing) === undefined) {
            controller.enqueue(encoder.encode(adapter.failureRecord(event.job.error ?? event.job.state, framing, last)));
          }
          return controller.close();
        }
      }
    },
    cancel: control.clientGone,
  });
}

/** The answer for a job that ended before any record reached its client: its result, or its error with its status. */
function endedResponse(adapter: WireAdapter, job: JobRow, headers: Record<string, string>): Response {
  if (job.state === "done") {
    return new Response(job.result ?? "{}", { headers: { "content-type": "application/json; charset=utf-8", ...headers } });
  }
  const status = job.errorStatus ?? 500;
  const retry: Record<string, string> = status === 503 ? { "retry-after": RETRY_AFTER_SECONDS } : {};
  return errorResponse(adapter.api, status, job.error ?? job.state, { ...headers, ...retry });
}
