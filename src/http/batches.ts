import { Elysia } from "elysia";
import { checkBody } from "../adapters/check-body";
import { type BatchRequest, type BatchService, COMPLETION_WINDOW } from "../batch/service";
import { batchObject } from "../batch/view";
import { BATCH_ENDPOINTS } from "../batch/validate";
import { BadRequestError, NotFoundError } from "../errors";
import { parseJsonBody } from "../ollama/types";
import type { WebhookDispatcher } from "../webhook/dispatcher";
import { t } from "elysia";
import { routeDoc } from "./api-docs";
import { BatchDocs } from "./batch-docs";
import { limitParam, listPage } from "./files";
import { ownerFilter, principalOf, sees } from "../keys/principal";

/** Body of POST /v1/batches: OpenAI's fields, plus foreman's `webhook` extension (as POST /jobs has it). */
export const BatchCreateRequest = t.Object(
  {
    input_file_id: t.String({ description: "A file uploaded with purpose batch" }),
    endpoint: t.String({ description: `One of ${Object.keys(BATCH_ENDPOINTS).join(", ")}` }),
    completion_window: t.String({ description: `Only "${COMPLETION_WINDOW}"` }),
    metadata: t.Optional(t.Union([t.Record(t.String(), t.String()), t.Null()])),
    output_expires_after: t.Optional(t.Unknown()),
    webhook: t.Optional(
      t.Object({
        url: t.String({ description: "Receives batch.completed, batch.failed, batch.cancelled or batch.expired" }),
        secret: t.Optional(t.String({ pattern: "^whsec_[A-Za-z0-9+/]+={0,2}$" })),
      }),
    ),
  },
  { additionalProperties: false },
);

/**
 * OpenAI's Batch API: a batch's lines become queued jobs (below interactive priority) that drain by
 * model; progress and files are read from counters and rows, never by scanning the lines.
 */
export function batchRoutes(batches: BatchService, webhooks: Pick<WebhookDispatcher, "rejectUrl">) {
  // Another key's batch is answered exactly as one that does not exist.
  const find = (id: string, request: Request) => {
    const batch = batches.store.get(id);
    if (!batch || !sees(principalOf(request), batch.keyId)) throw new NotFoundError(`No batch found with id '${id}'.`);
    return batch;
  };
  return new Elysia({ tags: ["batches"] })
    .post(
      "/v1/batches",
      async ({ request }) => {
        const body = parseJsonBody(await request.text());
        checkBody(BatchCreateRequest, body);
        if (body.webhook) {
          const rejected = webhooks.rejectUrl(body.webhook.url);
          if (rejected) throw new BadRequestError(rejected);
        }
        return batchObject(batches.create(body as BatchRequest, principalOf(request)));
      },
      {
        parse: "none",
        ...routeDoc(
          "Create a batch (OpenAI)",
          "Validates the input file in the background (status validating), then queues each line as a job at FOREMAN_BATCH_PRIORITY. " +
            "`webhook` ({url, secret?}) is foreman's extension: it receives the batch when it ends.",
          { body: BatchCreateRequest, ...BatchDocs.create },
        ),
      },
    )
    .get(
      "/v1/batches",
      ({ query, request }) => {
        const limit = limitParam(query.limit, 20, 100);
        const keyId = ownerFilter(principalOf(request));
        return listPage(batches.store.list({ after: query.after, limit: limit + 1, keyId }).map(batchObject), limit);
      },
      routeDoc("List batches (OpenAI)", "Newest first, paged with `after` and `limit` (1-100, default 20).", BatchDocs.list),
    )
    .get(
      "/v1/batches/:id",
      ({ params, request }) => batchObject(find(params.id, request)),
      routeDoc("A batch (OpenAI)", "Its status, request counts and files.", BatchDocs.get),
    )
    .post("/v1/batches/:id/cancel", ({ params, request }) => batchObject(batches.cancel(params.id, principalOf(request))), {
      parse: "none",
      // No request body: OpenAI's cancel is a bare POST.
      ...routeDoc(
        "Cancel a batch (OpenAI)",
        "Lines not yet started are canceled; a running line finishes. The batch ends cancelled, what finished kept.",
        BatchDocs.cancel,
      ),
    });
}
