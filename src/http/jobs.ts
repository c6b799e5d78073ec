import { Elysia } from "elysia";
import { degradedList } from "../dashboard/snapshot";
import { BadRequestError, ConflictError, NotFoundError } from "../errors";
import type { JobService } from "../job-service";
import type { JobRow } from "../queue/store";
import { MAX_CLIENT_BACKLOG_BYTES } from "../job-response";
import { FRAMING_CONTENT_TYPES, framingFor, splitRecords } from "../adapters/framing";
import type { WebhookDispatcher } from "../webhook/dispatcher";
import { type JobListInclude, JobView, toJobSummary } from "../queue/job-view";
import { JobModel } from "./job-model";
import { keepOpen } from "./long-lived";
import { modelKeySummary } from "./queue-summary";
import { ownerFilter, principalOf, sees } from "../keys/principal";
import { allOf } from "../queue/maybe-promise";

const SSE_HEARTBEAT_MS = 15_000;
/**
 * The most request and result bytes (as stored) one page of GET /jobs?include= carries; parsed and
 * rendered, a page costs a few times that. 500 answers of megabytes made pages of hundreds of MB.
 */
const LIST_BODY_BUDGET_BYTES = 8 * 1024 * 1024;
/** What the `overflow` event of a job's SSE stream says. */
const OVERFLOW_MESSAGE = `this reader fell more than ${MAX_CLIENT_BACKLOG_BYTES / 1024 / 1024} MiB behind: the chunks from here on are skipped; the job's stream artifact holds them all`;
const SSE_HEADERS = { "content-type": FRAMING_CONTENT_TYPES.sse, "cache-control": "no-cache" };

/**
 * The job API: submit batch work without holding a connection, watch it, cancel it, fetch what it
 * produced. Jobs made by /api/chat and /api/generate are listed here too.
 */
export function jobRoutes(jobs: JobService, webhooks: Pick<WebhookDispatcher, "rejectUrl">) {
  const { store } = jobs;
  // Another key's job is answered exactly as one that does not exist.
  const findJob = async (id: string, request: Request) => {
    const job = await store.getJob(id);
    if (!job || !sees(principalOf(request), job.keyId)) throw new NotFoundError("job not found");
    return job;
  };
  const findHead = async (id: string, request: Request) => {
    const job = await store.getJobHead(id);
    if (!job || !sees(principalOf(request), job.keyId)) throw new NotFoundError("job not found");
    return job;
  };

  return new Elysia({ tags: ["jobs"] })
    .post(
      "/jobs",
      async ({ body, set, request }) => {
        if (body.webhook) {
          const rejected = webhooks.rejectUrl(body.webhook.url);
          if (rejected) throw new BadRequestError(rejected);
        }
        const { job, created } = await jobs.submit(body.type, body.request, {
          source: "jobs",
          priority: body.priority,
          idempotencyKey: body.idempotency_key,
          webhook: body.webhook,
          principal: principalOf(request),
        });
        set.status = created ? 202 : 200;
        // As a generation route's answer carries it: the request log line names the job this way.
        set.headers["x-foreman-job-id"] = job.id;
        return jobs.view(job);
      },
      {
        // JSON whatever the content type, as Ollama reads its bodies.
        parse: "json",
        body: JobModel.submit,
        response: { 200: JobView, 202: JobView, 400: JobModel.error, 404: JobModel.error, 503: JobModel.error },
        detail: {
          summary: "Submit a job",
          description:
            "Queues an Ollama chat or generate request and answers at once (202) with the job. The request is checked as " +
            "Ollama would check it (400, or 404 for an unknown model). A repeated idempotency_key returns the existing job " +
            "(200). When the queue is full: 503 with Retry-After, Ollama's own body.",
        },
      },
    )
    .get(
      "/jobs",
      async ({ query, request }) => {
        const limit = query.limit ?? 50;
        const include = new Set(query.include?.split(",").filter(Boolean) as JobListInclude[] | undefined);
        const filter = {
          state: query.state,
          model: query.model,
          type: query.type,
          cursor: query.cursor,
          keyId: ownerFilter(principalOf(request)),
          limit,
        };
        const withBodies = { request: include.has("request"), result: include.has("result") };
        let page: JobRow[];
        let more: boolean;
        if (withBodies.request || withBodies.result) {
          ({ rows: page, more } = await store.listJobPage({ ...filter, withBodies }, LIST_BODY_BUDGET_BYTES));
        } else {
          const rows = await store.listJobs({ ...filter, limit: limit + 1, withBodies });
          page = rows.slice(0, limit);
          more = rows.length > limit;
        }
        // One plan for the page: the estimates of all its queued jobs cost O(model keys) together.
        const plan = page.some((job) => job.state === "queued") ? await jobs.queuePlan() : undefined;
        const views = await allOf(page.map((job) => jobs.view(job, plan)));
        return {
          jobs: page.map((job, i) => toJobSummary(views[i]!, job, include)),
          next_cursor: more ? page[page.length - 1]!.id : null,
        };
      },
      {
        query: JobModel.listQuery,
        response: { 200: JobModel.jobList, 400: JobModel.error },
        detail: {
          summary: "List jobs",
          description:
            "Newest first, filtered by state, model and type; `limit` per page (default 50, at most 500); follow `next_cursor`. " +
            "Each job is a summary: no request nor result unless `include` asks for them (`include=request,result`). " +
            `A page with bodies holds at most ${LIST_BODY_BUDGET_BYTES / 1024 / 1024} MiB of them: it ends early, before the job ` +
            "that would pass that, and `next_cursor` goes on from there (a page's first job comes whatever its size).",
        },
      },
    )
    .get("/jobs/:id", async ({ params, request }) => jobs.view(await findJob(params.id, request)), {
      params: JobModel.idParams,
      response: { 200: JobView, 404: JobModel.error },
      detail: {
        summary: "Get a job",
        description:
          "State, attempts, timestamps, queue position while queued, the result once done, and the webhook's delivery state.",
      },
    })
    .delete(
      "/jobs/:id",
      async ({ params, request }) => {
        await findHead(params.id, request);
        const canceled = await jobs.cancel(params.id);
        if (canceled) return jobs.view(canceled);
        const job = await findHead(params.id, request);
        throw new ConflictError(`job already ended: ${job.state}`);
      },
      {
        params: JobModel.idParams,
        response: { 200: JobView, 404: JobModel.error, 409: JobModel.error },
        detail: {
          summary: "Cancel a job",
          description:
            "Cancels a queued or running job (a running one has its Ollama call aborted, freeing the GPU) and returns it. 409 when it already ended.",
        },
      },
    )
    .get(
      "/jobs/:id/events",
      async ({ params, request }) => {
        await findHead(params.id, request);
        // HEAD (answered for every GET route) sends no body: a watch opened for it would never be read nor closed.
        if (request.method === "HEAD") return new Response(null, { headers: SSE_HEADERS });
        keepOpen(request); // A watch lasts as long as the job: silent while it waits in the queue.
        return jobEvents(jobs, params.id);
      },
      {
        params: JobModel.idParams,
        detail: {
          summary: "Watch a job (Server-Sent Events)",
          description:
            "`state` events on each transition (the first gives the current state, the last the final one), `chunk` events with each streamed NDJSON " +
            "line while it runs, then one `end` event carrying the job, after which the stream closes. An ended job sends `end` at once. " +
            "A reader more than 4 MiB behind gets one `overflow` event where its gap begins, no more chunks, then `end`: " +
            "the job's stream artifact (GET /jobs/{id}/artifacts/stream.ndjson) holds every record.",
          responses: {
            200: { description: "text/event-stream", content: { "text/event-stream": { schema: { type: "string" } } } },
          },
        },
      },
    )
    .get(
      "/jobs/:id/artifacts",
      async ({ params, request }) => {
        await findHead(params.id, request);
        return {
          artifacts: (await store.artifacts.list(params.id)).map((a) => ({
            name: a.name,
            content_type: a.contentType,
            size: a.size,
            created_at: new Date(a.createdAt).toISOString(),
          })),
        };
      },
      {
        params: JobModel.idParams,
        response: { 200: JobModel.artifactList, 404: JobModel.error },
        detail: {
          summary: "List a job's artifacts",
          description:
            "Every finished job has result.json; a job that streamed also keeps stream.ndjson, the exact lines relayed.",
        },
      },
    )
    .get(
      "/jobs/:id/artifacts/:name",
      async ({ params, request }) => {
        await findHead(params.id, request);
        const artifact = await store.artifacts.get(params.id, params.name);
        if (!artifact) throw new NotFoundError("artifact not found");
        return new Response(artifact.data as Uint8Array<ArrayBuffer>, { headers: { "content-type": artifact.contentType } });
      },
      {
        params: JobModel.artifactParams,
        detail: {
          summary: "Download an artifact",
          description: "The artifact's bytes with its content type.",
          responses: {
            200: {
              description: "The bytes (result.json is JSON, stream.ndjson NDJSON, stream.sse Server-Sent Events)",
              content: { "application/octet-stream": { schema: { type: "string", format: "binary" } } },
            },
            404: {
              description: "No such job or artifact",
              content: { "application/json": { schema: { type: "object", properties: { error: { type: "string" } } } } },
            },
          },
        },
      },
    )
    .get(
      "/queue",
      async ({ request }) => {
        const principal = principalOf(request);
        const [depth, byModel, running, plan, costs, runningAll] = await Promise.all([
          store.queuedCount(),
          store.queuedCountByModel(),
          store.runningJob(),
          jobs.queuePlan(),
          store.costs.all(),
          jobs.inventory.several ? store.runningJobs() : [],
        ]);
        // Another key's running job is shown as the aggregate shows it: its model and state, not its id.
        const runningView = (job: JobRow) => {
          const own = sees(principal, job.keyId);
          return {
            id: own ? job.id : null,
            key: own && job.keyId !== null ? jobs.keyName(job.keyId) : null,
            model: job.model,
            state: job.state,
            started_at: job.startedAt === null ? null : new Date(job.startedAt).toISOString(),
          };
        };
        const reasons = degradedList(jobs.inventory.snapshot.degraded, jobs.storage.degraded).map((reason) => reason.message);
        return {
          depth,
          by_model: Object.fromEntries(byModel.map((row) => [row.model, row.n])),
          // The oldest running job (one target: the one); with several, each target's lane lists all of its own.
          running: running && runningView(running),
          by_model_key: modelKeySummary(plan, costs),
          resident: jobs.inventory.snapshot.running.map((m) => m.name),
          degraded: reasons.length > 0,
          reasons,
          ...(jobs.inventory.several ? { targets: targetSummary(jobs, runningAll, runningView) } : {}),
        };
      },
      {
        response: { 200: JobModel.queue },
        detail: {
          tags: ["queue"],
          summary: "Queue summary",
          description:
            "Depth in total and per model, each model key's learned costs and estimated start, the running job, resident models, whether foreman is degraded and why.",
        },
      },
    );
}

/**
 * The SSE stream of one job, a renderer over {@link JobService.watch}: `state` events, a `chunk` event
 * per streamed record (an SSE record's lines each become a `data:` line), then `end` with the job.
 */
function jobEvents(jobs: JobService, jobId: string): Response {
  const decoder = new TextDecoder();
  const watch = jobs.watch(jobId, MAX_CLIENT_BACKLOG_BYTES);
  let heartbeat: Timer | undefined;
  let contentType: string = FRAMING_CONTENT_TYPES.ndjson;
  let live = false;
  const sse = (event: string, data: string) => new TextEncoder().encode(`event: ${event}\n${data.replace(/^/gm, "data: ")}\n\n`);
  const stop = () => {
    clearInterval(heartbeat);
    void watch.return?.();
  };
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      heartbeat = setInterval(() => {
        try {
          controller.enqueue(new TextEncoder().encode(": keep-alive\n\n"));
        } catch {
          stop(); // The client is gone.
        }
      }, SSE_HEARTBEAT_MS);
    },
    async pull(controller) {
      const next = await watch.next();
      if (next.done) {
        stop();
        return controller.close();
      }
      const event = next.value;
      if (event.type === "state") {
        live = true;
        contentType = event.contentType ?? contentType;
        controller.enqueue(sse("state", JSON.stringify({ state: event.state })));
      } else if (event.type === "chunk") {
        const framing = framingFor(contentType);
        for (const record of splitRecords(decoder.decode(event.bytes), framing)) controller.enqueue(sse("chunk", record));
      } else if (event.type === "overflow") {
        // A reader this far behind is not kept records for: it is told where its gap begins, and the records are in the job's stream artifact.
        controller.enqueue(sse("overflow", JSON.stringify({ message: OVERFLOW_MESSAGE })));
      } else {
        // A watch that saw the job live tells its final state; one of an ended job just sends `end`.
        if (live) controller.enqueue(sse("state", JSON.stringify({ state: event.job.state })));
        controller.enqueue(sse("end", JSON.stringify(await jobs.view(event.job))));
        stop();
        controller.close();
      }
    },
    cancel: stop,
  });
  return new Response(body, { headers: SSE_HEADERS });
}

/** GET /queue's `targets`: each Ollama target, whether it answers, what it holds and what runs on it. */
function targetSummary<View>(jobs: JobService, running: readonly JobRow[], view: (job: JobRow) => View) {
  return jobs.inventory.targets.map(({ target, inventory }) => ({
    name: target.name,
    slots: target.slots,
    reachable: !inventory.snapshot.degraded,
    resident: inventory.snapshot.degraded ? [] : inventory.snapshot.running.map((m) => m.name),
    // Every job in flight there (its slots), each shown as the top-level `running` is.
    running: running.filter((j) => j.target === target.name).map(view),
  }));
}
