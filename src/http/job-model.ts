import { Type } from "@sinclair/typebox";
import { t } from "elysia";
import { PRIORITY_RANGE } from "../job-service";
import { OllamaError } from "../ollama/types";
import { JobTypeSchema } from "../adapters";
import { JobStateSchema } from "../queue/job-states";
import { JOB_LIST_INCLUDES, JobSummary, JobView } from "../queue/job-view";
import { describedPattern } from "./validation-message";

const WEBHOOK_SECRET = describedPattern(
  "^whsec_[A-Za-z0-9+/]+={0,2}$",
  'a Standard Webhooks secret: "whsec_" followed by base64',
);
const CURSOR = describedPattern("^[0-9A-HJKMNP-TV-Z]{26}$", "the next_cursor of a previous page (a 26-character ULID)");

const INCLUDE = describedPattern(
  `^(${JOB_LIST_INCLUDES.join("|")})(,(${JOB_LIST_INCLUDES.join("|")}))*$`,
  `a comma list of ${JOB_LIST_INCLUDES.join(", ")}`,
);

/** Schemas of the job API: the validators, the types and the OpenAPI document, written once. */
export namespace JobModel {
  export const type = JobTypeSchema;
  export const state = JobStateSchema;

  export const submit = t.Object(
    {
      type,
      request: t.Record(t.String(), t.Unknown(), {
        description: "The Ollama request body, as /api/chat or /api/generate take it; `stream` is ignored",
        examples: [{ model: "llama3.2", messages: [{ role: "user", content: "Summarise this document: …" }] }],
      }),
      // TypeBox's own Integer, not Elysia's t.Integer: that one also accepts a numeric string (a coercion meant
      // for query strings), so "priority": "5" passed and the OpenAPI document typed the field string-or-integer.
      priority: t.Optional(
        Type.Integer({
          minimum: PRIORITY_RANGE.min,
          maximum: PRIORITY_RANGE.max,
          default: 0,
          description: `Higher runs first; an integer from ${PRIORITY_RANGE.min} to ${PRIORITY_RANGE.max}, default 0`,
        }),
      ),
      webhook: t.Optional(
        t.Object({
          url: t.String({
            description: "http or https URL that receives the job when it ends, e.g. https://example.invalid/hook",
          }),
          secret: t.Optional(
            t.String({
              pattern: WEBHOOK_SECRET,
              description: "Standard Webhooks secret, `whsec_<base64>`; default FOREMAN_WEBHOOK_SECRET",
            }),
          ),
        }),
      ),
      idempotency_key: t.Optional(
        t.String({
          minLength: 1,
          maxLength: 255,
          description: "1 to 255 characters; submitting the same key again returns the first job (200)",
        }),
      ),
    },
    {
      // Safe to send from Swagger UI as it is: no webhook (it would call out), no fixed idempotency key
      // (a second try would silently return the first job).
      examples: [
        {
          type: "chat",
          request: { model: "llama3.2", messages: [{ role: "user", content: "Why is the sky blue?" }] },
          priority: 0,
        },
      ],
    },
  );
  export type submit = typeof submit.static;

  export const listQuery = t.Object({
    state: t.Optional(state),
    model: t.Optional(t.String({ minLength: 1 })),
    type: t.Optional(type),
    // Elysia's t.Integer here: a query string is text, and it turns "5" into 5.
    // (title: that conversion's range error carries no field name; validationMessage reads it from here.)
    limit: t.Optional(t.Integer({ title: "limit", minimum: 1, maximum: 500, description: "1 to 500, default 50" })),
    cursor: t.Optional(t.String({ pattern: CURSOR, description: "next_cursor of the previous page" })),
    include: t.Optional(
      t.String({
        pattern: INCLUDE,
        description: `Comma list of ${JOB_LIST_INCLUDES.join(", ")}: bodies each job carries beside its summary`,
      }),
    ),
  });
  export type listQuery = typeof listQuery.static;

  export const jobList = t.Object({
    jobs: t.Array(JobSummary),
    next_cursor: t.Union([t.String(), t.Null()], {
      description:
        "Pass as cursor for the next page; null on the last. A page with bodies may end before limit (its byte budget)",
    }),
  });

  export const idParams = t.Object({ id: t.String({ description: "Job id (ULID)" }) });
  export const artifactParams = t.Object({ id: t.String(), name: t.String({ examples: ["result.json"] }) });

  export const artifactList = t.Object({
    artifacts: t.Array(
      t.Object({
        name: t.String(),
        content_type: t.String(),
        size: Type.Integer(),
        created_at: t.String({ format: "date-time" }),
      }),
    ),
  });

  const NullableMs = (description: string) => t.Union([t.Number(), t.Null()], { description });

  export const modelKeySummary = t.Record(
    t.String(),
    t.Object({
      queued: Type.Integer({ description: "Jobs of this model key queued, every priority" }),
      expected_load_ms: NullableMs(
        "Learned time to load it when it is not resident (rolling average over recent swaps); null until one was measured",
      ),
      expected_run_ms: NullableMs(
        "Learned run time of one job with it loaded (rolling average over recent jobs); null until one was measured",
      ),
      learned_from: Type.Integer({ description: "Finished jobs its averages were learned from (persisted across restarts)" }),
      estimated_start_at: t.Union([t.String({ format: "date-time" }), t.Null()], {
        description:
          "When its next queued job is expected to start (after its load, if it needs one), playing the scheduler " +
          "forward group by group: the running job's remainder, then per priority the loaded model, then the other " +
          "models in the schedule's order, each costing its load plus queued × run time. Models not yet measured are " +
          "assumed typical (before any was: no load, 1 s a job). Ignores jobs still to arrive and starvation-guard promotions; null when none is queued",
      }),
    }),
    {
      description:
        "Per model key (model:tag plus the options that force a reload): learned costs, and for those with queued jobs an estimated start",
    },
  );
  export type modelKeySummary = typeof modelKeySummary.static;

  const runningJob = t.Object({
    id: t.Union([t.String(), t.Null()], { description: "Null when another API key's job runs (a client key sees its own)" }),
    key: t.Union([t.String(), t.Null()], {
      description: "The name of the API key that asked for it, where the caller may see it",
    }),
    model: t.String(),
    state: state,
    started_at: t.Union([t.String({ format: "date-time" }), t.Null()]),
  });

  export const queue = t.Object({
    depth: Type.Integer({ description: "Jobs queued in total" }),
    by_model: t.Record(t.String(), Type.Integer(), { description: "Queued jobs per model" }),
    running: t.Union([runningJob, t.Null()], {
      description: "The running job; with several targets the oldest of them (each target's lane lists all of its own)",
    }),
    by_model_key: modelKeySummary,
    resident: t.Array(t.String(), { description: "Models Ollama has loaded (/api/ps)" }),
    degraded: t.Boolean({ description: "True while Ollama is unreachable or the database cannot be written (a full disk)" }),
    reasons: t.Array(t.String(), { description: "Why it is degraded and what that means for the queue; empty while healthy" }),
    targets: t.Optional(
      t.Array(
        t.Object({
          name: t.String(),
          slots: Type.Integer({ description: "Generations of one model key it serves at once" }),
          reachable: t.Boolean({ description: "Whether it answered its last poll" }),
          resident: t.Array(t.String(), { description: "Models it has loaded (its /api/ps)" }),
          running: t.Array(runningJob, { description: "Every job running on it, oldest first" }),
        }),
        { description: "With several Ollama targets (FOREMAN_OLLAMA_URL): each one, what it holds and runs" },
      ),
    ),
  });

  export const error = OllamaError;
}
