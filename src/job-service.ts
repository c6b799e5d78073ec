import type { Config } from "./config";
import { BadRequestError, NotFoundError, errorResponse } from "./errors";
import type { Logger } from "./log";
import type { ModelInventory } from "./ollama/inventory";
import { modelKey } from "./ollama/model-key";
import { lastLine } from "./ollama/ndjson";
import { type ChatRequest, GENERATION_REQUEST, type GenerateRequest, assertShape } from "./ollama/types";
import { type JobView, type WebhookView, toJobView } from "./queue/job-view";
import type { JobRow, JobSource, JobStore, JobType } from "./queue/store";
import type { JobEvent, WorkerBridge } from "./worker/bridge";

/** Priorities accepted from clients: integers in this range (inclusive). */
export const PRIORITY_RANGE = { min: -1000, max: 1000 } as const;

/** Everything about a new job that the caller decides. */
export interface SubmitOptions {
  source: JobSource;
  priority?: number;
  idempotencyKey?: string;
  webhook?: { url: string; secret?: string };
}

/**
 * The jobs as the HTTP thread sees them: validates and queues generation requests, cancels, renders
 * jobs for the API and waits on them for the synchronous Ollama routes.
 */
export class JobService {
  constructor(
    readonly store: JobStore,
    readonly bridge: WorkerBridge,
    readonly inventory: ModelInventory,
    readonly config: Config,
    readonly log: Logger,
  ) {}

  /**
   * Validates an Ollama chat or generate body as Ollama would (400 on a wrong field, 404 on an unknown
   * model), then queues it. Returns the job and whether it is new (false: idempotency key repeated).
   */
  async submit(type: JobType, body: unknown, options: SubmitOptions): Promise<{ job: JobRow; created: boolean }> {
    assertShape(GENERATION_REQUEST[type], body);
    const request = body as ChatRequest | GenerateRequest;
    const model = request.model ?? "";
    // Ollama's own answers: chat checks for a model first (400); generate looks it up and misses (404).
    if (!model && type === "chat") throw new BadRequestError("model is required");
    if (!model || !(await this.inventory.knows(model))) throw new NotFoundError(`model '${model}' not found`);
    const result = this.store.enqueue(
      {
        type,
        model,
        modelKey: modelKey(model, request.options),
        request: JSON.stringify(request),
        source: options.source,
        priority: options.priority,
        maxAttempts: this.config.maxAttempts,
        idempotencyKey: options.idempotencyKey,
        webhook: options.webhook,
      },
      this.config.maxQueue,
    );
    if (result.created) this.bridge.wake();
    return result;
  }

  /** Cancels a queued or running job; null when there is no such job that can still be canceled. */
  cancel(id: string): JobRow | null {
    const job = this.store.cancelJob(id);
    if (!job) return null;
    this.bridge.cancel(id);
    this.bridge.emit(id, { type: "ended", state: "canceled", status: 499, error: "request canceled" });
    this.onJobEnded();
    return job;
  }

  /** Set at shutdown: connections we close ourselves must not cancel the jobs behind them. */
  shuttingDown = false;

  /** Called whenever a job ends, from any thread's doing (webhook delivery hooks in here). */
  onJobEnded: () => void = () => {};

  /** The API shape of a job, with its queue position (looked up unless given) and webhook delivery state. */
  view(job: JobRow, queuePosition: number | null = this.store.queuePosition(job)): JobView {
    return toJobView(job, { queuePosition, webhook: this.webhookView(job) });
  }

  webhookView(job: JobRow): WebhookView | null {
    if (!job.webhookUrl) return null;
    const delivery = this.store.webhookDelivery(job.id);
    return {
      url: job.webhookUrl,
      state: delivery?.state ?? "pending",
      attempts: delivery?.attempts ?? 0,
      last_status: delivery?.lastStatus ?? null,
      last_error: delivery?.lastError ?? null,
    };
  }

  /**
   * Answers a synchronous /api/chat or /api/generate call exactly as Ollama would: NDJSON lines
   * flushed as the worker relays them (headers go out with the first line, so an earlier failure
   * still gets its real status), or one JSON body when the client asked for `"stream": false`.
   * A client that goes away cancels its job.
   */
  respond(job: JobRow, streaming: boolean, clientSignal: AbortSignal): Promise<Response> {
    const jobId = job.id;
    const headers = { "x-foreman-job-id": jobId };
    return new Promise<Response>((resolve) => {
      let stream: ReadableStreamDefaultController<Uint8Array> | undefined;
      let singleObject = false;
      let latest = "";
      let ended = false;
      const encoder = new TextEncoder();

      const clientGone = () => {
        if (!ended && !this.shuttingDown) this.cancel(jobId);
      };
      /** The answer is complete: stop listening (and a disconnect now cancels nothing). */
      const finish = () => {
        ended = true;
        unsubscribe();
        clientSignal.removeEventListener("abort", clientGone);
      };
      const unsubscribe = this.bridge.subscribe(jobId, (event: JobEvent) => {
        switch (event.type) {
          case "state":
            // Ollama answers a load/unload request with one JSON object even when streaming.
            if (event.contentType) singleObject = !event.contentType.includes("ndjson");
            return;
          case "chunk":
            latest = lastLine(event.bytes);
            if (!streaming || singleObject) {
              // Ollama's one-object answer is complete as it arrives: answer now, not after the bookkeeping.
              if (event.bytes.indexOf(10) >= event.bytes.length - 1 && isFinalLine(latest)) {
                finish();
                resolve(new Response(latest, { headers: { "content-type": "application/json; charset=utf-8", ...headers } }));
              }
              return;
            }
            if (!stream) {
              const body = new ReadableStream<Uint8Array>({
                start: (controller) => void (stream = controller),
                cancel: clientGone,
              });
              resolve(new Response(body, { headers: { "content-type": "application/x-ndjson", ...headers } }));
            }
            stream!.enqueue(event.bytes);
            // The final chunk is the whole answer: end the response now rather than after the bookkeeping.
            if (isFinalLine(latest)) {
              finish();
              stream!.close();
            }
            return;
          case "ended":
            finish();
            if (stream) {
              // After the first line the status is sent: a failure becomes a last {"error"} line.
              try {
                if (event.state !== "done" && !latest.startsWith('{"error"')) {
                  stream.enqueue(encoder.encode(`${JSON.stringify({ error: event.error ?? event.state })}\n`));
                }
                stream.close();
              } catch {
                // The client already went away (that is what canceled the job): nothing left to tell it.
              }
            } else if (event.state === "done") {
              const result = this.store.getJob(jobId)?.result ?? "{}";
              resolve(new Response(result, { headers: { "content-type": "application/json; charset=utf-8", ...headers } }));
            } else {
              resolve(errorResponse(event.status ?? 500, event.error ?? event.state, headers));
            }
        }
      });
      clientSignal.addEventListener("abort", clientGone, { once: true });
      if (clientSignal.aborted) clientGone();
    });
  }
}

/** Reads `X-Foreman-Priority`: absent is 0; anything but an integer in range is a 400. */
export function parsePriorityHeader(value: string | null): number {
  const text = value?.trim() ?? "";
  if (text === "") return 0;
  const n = Number(text);
  if (!/^[-+]?\d+$/.test(text) || n < PRIORITY_RANGE.min || n > PRIORITY_RANGE.max) {
    throw new BadRequestError(`X-Foreman-Priority must be an integer from ${PRIORITY_RANGE.min} to ${PRIORITY_RANGE.max}`);
  }
  return n;
}

/** True for Ollama's last line of a successful stream (`"done": true`). */
function isFinalLine(line: string): boolean {
  if (!line.includes('"done":true')) return false;
  try {
    return (JSON.parse(line) as { done?: unknown }).done === true;
  } catch {
    return false;
  }
}
