// The OpenAPI description of OpenAI's Files and Batch APIs as foreman serves them (src/http/files.ts,
// src/http/batches.ts): these routes read their own body (parse: "none"), so their request bodies and
// answers are written here, as api-docs.ts does for the generation routes. Documentation only.
import { type TSchema, Type } from "@sinclair/typebox";
import { t } from "elysia";
import { COMPLETION_WINDOW } from "../batch/service";
import type { BatchStatus } from "../batch/store";
import { BATCH_ENDPOINTS } from "../batch/validate";
import { OpenAIError, type RouteDocSpec } from "./api-docs";

const JSON_TYPE = "application/json";

// TypeBox's integer, not Elysia's t.Integer: that one also admits a numeric string (it coerces query
// values), which no answer here holds.
const Int = Type.Integer();
const Count = Type.Integer({ minimum: 0 });
const Seconds = Type.Integer({ description: "Unix time, seconds" });
const SecondsOrNull = t.Union([Seconds, t.Null()]);
const oneOf = (values: readonly string[]) => t.Union(values.map((value) => t.Literal(value)));

/** Every batch status (a Record, so a status added to BatchStatus fails to compile until it is listed here). */
const BATCH_STATUSES: Record<BatchStatus, true> = {
  validating: true,
  failed: true,
  in_progress: true,
  finalizing: true,
  completed: true,
  expired: true,
  cancelling: true,
  cancelled: true,
};

/** A file as src/batch/files.ts fileObject builds it. */
const FileObject = t.Object(
  {
    id: t.String({ description: "`file-<ULID>`" }),
    object: t.Literal("file"),
    bytes: Count,
    created_at: Seconds,
    filename: t.String(),
    purpose: t.String({ description: "batch (uploaded) or batch_output (a batch's output or error file)" }),
    status: t.Literal("processed"),
    expires_at: t.Null({ description: "Files do not expire; delete them when done" }),
    status_details: t.Null(),
  },
  { additionalProperties: false },
);

/** A page of a list, as src/http/files.ts listPage builds it. */
const ListOf = (item: TSchema) =>
  t.Object(
    {
      object: t.Literal("list"),
      data: t.Array(item),
      first_id: t.Union([t.String(), t.Null()]),
      last_id: t.Union([t.String(), t.Null()], { description: "Pass as `after` for the next page" }),
      has_more: t.Boolean(),
    },
    { additionalProperties: false },
  );

const DeletedFile = t.Object(
  { id: t.String(), object: t.Literal("file"), deleted: t.Literal(true) },
  { additionalProperties: false },
);

/** A batch as src/batch/view.ts batchObject builds it, field for field. */
const BatchObject = t.Object(
  {
    id: t.String({ description: "`batch_<ULID>`" }),
    object: t.Literal("batch"),
    endpoint: oneOf(Object.keys(BATCH_ENDPOINTS)),
    errors: t.Union(
      [
        t.Object(
          {
            object: t.Literal("list"),
            data: t.Array(
              t.Object(
                { code: t.String(), message: t.String(), param: t.Union([t.String(), t.Null()]), line: t.Union([Int, t.Null()]) },
                { additionalProperties: false },
              ),
            ),
          },
          { additionalProperties: false },
        ),
        t.Null(),
      ],
      { description: "Why the input file was refused (status failed); null otherwise" },
    ),
    input_file_id: t.String(),
    completion_window: t.Literal(COMPLETION_WINDOW),
    status: oneOf(Object.keys(BATCH_STATUSES)),
    output_file_id: t.Union([t.String(), t.Null()], { description: "Set once a line has succeeded; readable as it grows" }),
    error_file_id: t.Union([t.String(), t.Null()], { description: "Set once a line has failed or been canceled" }),
    created_at: Seconds,
    in_progress_at: SecondsOrNull,
    expires_at: Seconds,
    finalizing_at: SecondsOrNull,
    completed_at: SecondsOrNull,
    failed_at: SecondsOrNull,
    expired_at: SecondsOrNull,
    cancelling_at: SecondsOrNull,
    cancelled_at: SecondsOrNull,
    request_counts: t.Object({ total: Count, completed: Count, failed: Count }, { additionalProperties: false }),
    metadata: t.Union([t.Record(t.String(), t.String()), t.Null()]),
  },
  { additionalProperties: false },
);

/** Error answers in OpenAI's shape (src/adapters/error-shapes.ts), each with what it means on this route. */
const errors = (meanings: Record<number, string>) =>
  Object.fromEntries(
    Object.entries(meanings).map(([status, description]) => [status, { description, content: { [JSON_TYPE]: OpenAIError } }]),
  );
const ok = (description: string, schema: TSchema) => ({ 200: { description, content: { [JSON_TYPE]: schema } } });
const LIMIT = (max: number, fallback: number) =>
  Type.Integer({ minimum: 1, maximum: max, default: fallback, description: `Page size, 1-${max} (default ${fallback})` });
const AFTER = t.String({ description: "The `last_id` of the previous page" });

/** The documentation of the Files API routes, by route (summaries and descriptions stay with the routes). */
export const FileDocs = {
  upload: {
    body: t.Object(
      {
        file: t.String({ format: "binary", description: "The JSON Lines file: one request per line" }),
        purpose: t.UnionEnum(["batch"]),
      },
      { additionalProperties: false },
    ),
    bodyType: "multipart/form-data",
    responses: {
      ...ok("The stored file", FileObject),
      ...errors({
        400: 'Not multipart/form-data, no "file" part or more than one, or a missing or wrong `purpose`',
        413: "The file is larger than FOREMAN_MAX_FILE",
      }),
    },
  },
  list: {
    query: {
      purpose: t.String({ description: "Only files of this purpose (batch, batch_output)" }),
      after: AFTER,
      limit: LIMIT(10_000, 10_000),
      order: t.UnionEnum(["desc", "asc"], { description: "By creation: newest first (desc, the default) or oldest first" }),
    },
    responses: { ...ok("A page of files", ListOf(FileObject)), ...errors({ 400: "`limit` or `order` out of range" }) },
  },
  get: { responses: { ...ok("The file", FileObject), ...errors({ 404: "No such file" }) } },
  content: {
    responses: {
      200: {
        description: "The file's bytes, streamed",
        content: {
          "application/octet-stream": t.String({
            format: "binary",
            description: "As uploaded, or as a batch wrote it: JSON Lines, one result or error per line",
          }),
        },
      },
      ...errors({ 404: "No such file" }),
    },
  },
  delete: { responses: { ...ok("The file and its bytes are gone", DeletedFile), ...errors({ 404: "No such file" }) } },
} satisfies Record<string, RouteDocSpec>;

/** The documentation of the Batch API routes, by route; POST /v1/batches's body schema is the route's own. */
export const BatchDocs = {
  create: {
    // Safe from "Try it out": no such file, so the answer is a 404 and nothing is queued.
    example: { input_file_id: "file-abc123", endpoint: "/v1/chat/completions", completion_window: COMPLETION_WINDOW },
    responses: {
      ...ok("The batch, status validating", BatchObject),
      ...errors({
        400: "A field is missing or not allowed, the file's purpose is not batch, or the webhook URL is refused",
        404: "No such input file",
        413: "The request body is larger than FOREMAN_MAX_BODY",
      }),
    },
  },
  list: {
    query: { after: AFTER, limit: LIMIT(100, 20) },
    responses: { ...ok("A page of batches, newest first", ListOf(BatchObject)), ...errors({ 400: "`limit` out of range" }) },
  },
  get: { responses: { ...ok("The batch", BatchObject), ...errors({ 404: "No such batch" }) } },
  cancel: {
    responses: {
      ...ok("The batch, cancelling (or cancelled at once while validating)", BatchObject),
      ...errors({ 404: "No such batch", 409: "The batch has already ended (completed, failed)" }),
    },
  },
} satisfies Record<string, Omit<RouteDocSpec, "body">>;
