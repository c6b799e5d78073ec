import { Type } from "@sinclair/typebox";
import { t } from "elysia";
import { PRIORITY_RANGE } from "../job-service";
import { OllamaError } from "../ollama/types";
import { JobStateSchema, JobView } from "../queue/job-view";

/** Schemas of the job API: the validators, the types and the OpenAPI document, written once. */
export namespace JobModel {
  export const type = t.Union([t.Literal("chat"), t.Literal("generate")], { description: "Which Ollama endpoint runs it" });
  export const state = JobStateSchema;

  export const submit = t.Object(
    {
      type,
      request: t.Record(t.String(), t.Unknown(), {
        description: "The Ollama request body, as /api/chat or /api/generate take it; `stream` is ignored",
        examples: [{ model: "llama3.2", messages: [{ role: "user", content: "Summarise this document: …" }] }],
      }),
      // TypeBox's own Integer: Elysia's t.Integer also takes numeric strings ("0"), which JSON has no need of.
      priority: t.Optional(
        Type.Integer({
          minimum: PRIORITY_RANGE.min,
          maximum: PRIORITY_RANGE.max,
          default: 0,
          description: "Higher runs first",
          error: `invalid field "priority": must be an integer from ${PRIORITY_RANGE.min} to ${PRIORITY_RANGE.max}`,
        }),
      ),
      webhook: t.Optional(
        t.Object({
          url: t.String({
            description: "http or https URL that receives the job when it ends",
            examples: ["https://example.com/hooks/foreman"],
          }),
          secret: t.Optional(
            t.String({
              pattern: "^whsec_[A-Za-z0-9+/]+={0,2}$",
              description: "Standard Webhooks secret, whsec_<base64>; default FOREMAN_WEBHOOK_SECRET",
            }),
          ),
        }),
      ),
      idempotency_key: t.Optional(
        t.String({ minLength: 1, maxLength: 255, description: "Submitting the same key again returns the first job (200)" }),
      ),
    },
    {
      examples: [
        {
          type: "chat",
          request: { model: "llama3.2", messages: [{ role: "user", content: "Why is the sky blue?" }] },
          priority: 0,
          webhook: { url: "https://example.com/hooks/foreman" },
          idempotency_key: "doc-42-summary",
        },
      ],
    },
  );
  export type submit = typeof submit.static;

  export const listQuery = t.Object({
    state: t.Optional(state),
    model: t.Optional(t.String({ minLength: 1 })),
    type: t.Optional(type),
    limit: t.Optional(
      t.Integer({
        minimum: 1,
        maximum: 500,
        description: "1 to 500, default 50",
        error: 'invalid query parameter "limit": must be an integer from 1 to 500',
      }),
    ),
    cursor: t.Optional(t.String({ pattern: "^[0-9A-HJKMNP-TV-Z]{26}$", description: "next_cursor of the previous page" })),
  });
  export type listQuery = typeof listQuery.static;

  export const jobList = t.Object({
    jobs: t.Array(JobView),
    next_cursor: t.Union([t.String(), t.Null()], { description: "Pass as cursor for the next page; null on the last" }),
  });

  export const idParams = t.Object({ id: t.String({ description: "Job id (ULID)" }) });
  export const artifactParams = t.Object({ id: t.String(), name: t.String({ examples: ["result.json"] }) });

  export const artifactList = t.Object({
    artifacts: t.Array(
      t.Object({ name: t.String(), content_type: t.String(), size: t.Integer(), created_at: t.String({ format: "date-time" }) }),
    ),
  });

  export const queue = t.Object({
    depth: t.Integer({ description: "Jobs queued in total" }),
    by_model: t.Record(t.String(), t.Integer(), { description: "Queued jobs per model" }),
    running: t.Union([
      t.Object({
        id: t.String(),
        model: t.String(),
        state: state,
        started_at: t.Union([t.String({ format: "date-time" }), t.Null()]),
      }),
      t.Null(),
    ]),
    resident: t.Array(t.String(), { description: "Models Ollama has loaded (/api/ps)" }),
    degraded: t.Boolean({ description: "True while Ollama is unreachable" }),
  });

  export const error = OllamaError;
}
