import { Type } from "@sinclair/typebox";
import { t } from "elysia";
import { JobTypeSchema } from "../adapters";
import { JobSourceSchema, JobStateSchema } from "./job-states";
import type { JobRow } from "./store";

// Integers are TypeBox's own: Elysia's t.Integer is a numeric string or an integer (made to coerce query
// strings), and in an answer's schema the document showed `"attempts": "0"`.

const Timestamp = t.Union([t.String({ format: "date-time" }), t.Null()]);
const NullableCount = t.Union([Type.Integer(), t.Null()], { description: "As the API's usage reports it; null if it did not" });

/** The delivery state of a job's webhook as the API shows it; the secret is never shown. */
export const WebhookView = t.Object({
  url: t.String(),
  state: t.Union([t.Literal("pending"), t.Literal("delivered"), t.Literal("failed")]),
  attempts: Type.Integer(),
  last_status: t.Union([Type.Integer(), t.Null()]),
  last_error: t.Union([t.String(), t.Null()]),
});
export type WebhookView = typeof WebhookView.static;

/** A job as GET /jobs/{id}, the job list, SSE `end` events and webhooks carry it. */
export const JobView = t.Object(
  {
    id: t.String({ description: "ULID; also the X-Foreman-Job-Id header of /api/chat and /api/generate" }),
    type: JobTypeSchema,
    model: t.String(),
    source: JobSourceSchema,
    state: JobStateSchema,
    priority: Type.Integer(),
    attempts: Type.Integer(),
    max_attempts: Type.Integer(),
    created_at: t.String({ format: "date-time" }),
    started_at: Timestamp,
    finished_at: Timestamp,
    error: t.Union([t.String(), t.Null()]),
    queue_position: t.Union([Type.Integer({ minimum: 1 }), t.Null()], {
      description:
        "While queued: its place in the order the scheduler will run the queue as it stands (priority, then the loaded model's jobs, then the schedule's choice of model; 1 runs next). It can change as jobs arrive or wait past FOREMAN_MAX_WAIT. Null otherwise.",
    }),
    estimated_start_at: t.Union([t.String({ format: "date-time" }), t.Null()], {
      description:
        "While queued: when it is expected to start, from the running job's remainder and each model's learned load and " +
        "per-job run time, group by group in the scheduler's order (see GET /queue). Approximate: within its model's " +
        "group its rank is interpolated from its age; later arrivals of higher priority and starvation-guard promotions " +
        "are not foreseen. Null once started",
    }),
    result: t.Union([t.Record(t.String(), t.Unknown()), t.Null()], {
      description: "When done: Ollama's non-streaming answer, full text assembled",
    }),
    webhook: t.Union([WebhookView, t.Null()]),
    wait_ms: Type.Integer({ description: "How long it waited to start (its last start, after retries); while queued, so far" }),
    run_ms: t.Union([Type.Integer(), t.Null()], { description: "How long its last attempt ran; while running, so far" }),
    swapped: t.Union([t.Boolean(), t.Null()], {
      description: "Whether its model had to be loaded when it started (a model swap); null before it started",
    }),
    prompt_tokens: NullableCount,
    output_tokens: NullableCount,
    tokens_per_s: t.Union([t.Number(), t.Null()], {
      description: "Tokens generated per second: Ollama's eval_count over eval_duration where reported, else over run_ms",
    }),
    tokens_estimated: t.Union([t.Boolean(), t.Null()], {
      description:
        "True when output_tokens and tokens_per_s are foreman's estimate: an OpenAI stream not asked for " +
        "stream_options.include_usage carries no usage, so its output records are counted (Ollama sends one per " +
        "token) and timed from the first to the last; prompt_tokens then stays null. False when the API reported " +
        "them; null until done",
    }),
    load_ms: t.Union([t.Number(), t.Null()], { description: "Ollama's load_duration in ms (native APIs only)" }),
    key: t.Union([t.String(), t.Null()], {
      description: "The name of the API key that asked for it; null for FOREMAN_TOKEN, an open foreman, or jobs older than keys",
    }),
    target: t.Union([t.String(), t.Null()], {
      description:
        "The Ollama target (its FOREMAN_OLLAMA_URL name; one plain URL: its host:port) that runs or last ran an attempt; null before any",
    }),
  },
  { additionalProperties: false },
);
export type JobView = typeof JobView.static;

/** What a list page may carry beside each job's summary: `?include=request,result`. */
export const JOB_LIST_INCLUDES = ["request", "result"] as const;
export type JobListInclude = (typeof JOB_LIST_INCLUDES)[number];

/**
 * A job as the job list carries it: the view without its result, so a page stays small however big the
 * answers are; `request` and `result` only when the list asked for them.
 */
export const JobSummary = t.Composite(
  [
    t.Omit(JobView, ["result"]),
    t.Object({
      request: t.Optional(t.Record(t.String(), t.Unknown(), { description: "With ?include=request: the request body" })),
      result: t.Optional(
        t.Union([t.Record(t.String(), t.Unknown()), t.Null()], { description: "With ?include=result: as in the job view" }),
      ),
    }),
  ],
  { additionalProperties: false },
);
export type JobSummary = typeof JobSummary.static;

/**
 * A full view cut down to a list summary, with the parts the list asked for. Build the view from a row
 * listed without its result unless `include` has it: the result is then neither read nor parsed.
 */
export function toJobSummary(view: JobView, job: JobRow, include: ReadonlySet<JobListInclude>): JobSummary {
  const { result, ...summary } = view;
  return {
    ...summary,
    ...(include.has("request") ? { request: JSON.parse(job.request) as Record<string, unknown> } : {}),
    ...(include.has("result") ? { result } : {}),
  };
}

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

/** Turns a row into its API shape; `now` measures the wait and run of a job still queued or running. */
export function toJobView(
  job: JobRow,
  extras: { queuePosition: number | null; webhook: WebhookView | null; estimatedStartAt?: number | null; key?: string | null },
  now = Date.now(),
): JobView {
  return {
    id: job.id,
    type: job.type,
    model: job.model,
    source: job.source,
    state: job.state,
    priority: job.priority,
    attempts: job.attempts,
    max_attempts: job.maxAttempts,
    created_at: new Date(job.createdAt).toISOString(),
    started_at: iso(job.startedAt),
    finished_at: iso(job.finishedAt),
    error: job.error,
    queue_position: extras.queuePosition,
    estimated_start_at: job.state === "queued" ? iso(extras.estimatedStartAt ?? null) : null,
    result: job.result === null ? null : (JSON.parse(job.result) as Record<string, unknown>),
    webhook: extras.webhook,
    ...jobStats(job, now),
    load_ms: job.loadMs,
    key: extras.key ?? null,
    target: job.target,
  };
}

/** What running a job cost, as the job view and the job-end log line show it. */
export function jobStats(
  job: Pick<
    JobRow,
    | "state"
    | "createdAt"
    | "startedAt"
    | "finishedAt"
    | "swapped"
    | "promptTokens"
    | "outputTokens"
    | "evalMs"
    | "tokensEstimated"
  >,
  now = Date.now(),
) {
  const { waitMs, runMs } = jobTimes(job, now);
  return {
    wait_ms: waitMs,
    run_ms: runMs,
    swapped: job.swapped === null ? null : job.swapped === 1,
    prompt_tokens: job.promptTokens,
    output_tokens: job.outputTokens,
    tokens_per_s: tokensPerSecond(job, runMs),
    tokens_estimated: job.tokensEstimated === null ? null : job.tokensEstimated === 1,
  };
}

/**
 * A job's wait (created → last start, or → now while queued) and its last attempt's run (start → end,
 * or → now while running), in ms. A job canceled before it started waited until it ended.
 */
export function jobTimes(
  job: Pick<JobRow, "state" | "createdAt" | "startedAt" | "finishedAt">,
  now = Date.now(),
): { waitMs: number; runMs: number | null } {
  const started = job.state !== "queued" && job.startedAt !== null;
  const waitEnd = started ? job.startedAt! : (job.finishedAt ?? now);
  const runMs = started ? (job.finishedAt ?? now) - job.startedAt! : null;
  return { waitMs: Math.max(0, waitEnd - job.createdAt), runMs: runMs === null ? null : Math.max(0, runMs) };
}

/** Output tokens per second: over Ollama's eval time where it reported one, else over the run time. */
export function tokensPerSecond(job: Pick<JobRow, "outputTokens" | "evalMs">, runMs: number | null): number | null {
  const ms = job.evalMs && job.evalMs > 0 ? job.evalMs : runMs;
  if (job.outputTokens === null || !ms) return null;
  return Math.round((job.outputTokens / ms) * 1000 * 10) / 10;
}

/**
 * The Standard Webhooks body for an ended job: `{type, timestamp, data}`. Built from the row alone
 * (the timestamp is when the job ended), so every attempt sends the same bytes.
 */
export function webhookPayload(job: JobRow, key: string | null = null): string {
  const data = toJobView(job, {
    queuePosition: null,
    webhook: { url: job.webhookUrl ?? "", state: "pending", attempts: 0, last_status: null, last_error: null },
    key,
  });
  return JSON.stringify({ type: `job.${job.state}`, timestamp: new Date(job.finishedAt ?? job.createdAt).toISOString(), data });
}
