import { Type } from "@sinclair/typebox";
import { Elysia, t } from "elysia";
import { KEY_APIS, KEY_ROLES, type KeyRegistry, type KeyRow, MAX_WEIGHT, MIN_WEIGHT } from "../keys/key-store";
import { type MaybePromise, after, allOf } from "../queue/maybe-promise";
import { literalUnion } from "../schema/literal-union";
import type { KeyUsageReader } from "../keys/usage";
import { OllamaError } from "../ollama/types";

const Nullable = <T extends Parameters<typeof t.Union>[0][number]>(schema: T) => t.Union([schema, t.Null()]);
const Api = literalUnion(KEY_APIS);
const Role = literalUnion(KEY_ROLES);

/** What a new key may be limited to; absent: no limit. */
const limits = {
  models: t.Optional(
    t.Array(t.String({ minLength: 1 }), { description: "Globs of the models it may use (`*`, `?`); absent: all" }),
  ),
  apis: t.Optional(t.Array(Api, { description: "The APIs it may use; absent: all" })),
  max_priority: t.Optional(
    Type.Integer({ minimum: -1000, maximum: 1000, description: "Priorities asked above it are lowered to it" }),
  ),
  max_jobs: t.Optional(Type.Integer({ minimum: 1, description: "Its queued plus running jobs at most (429 past it)" })),
  daily_tokens: t.Optional(
    Type.Integer({ minimum: 1, description: "Prompt plus output tokens per UTC day (429 past it, until midnight UTC)" }),
  ),
  weight: t.Optional(
    t.Number({
      minimum: MIN_WEIGHT,
      maximum: MAX_WEIGHT,
      description: "Fair-share weight (default 1): a key of weight 2 gets twice the GPU time of a key of weight 1 when both wait",
    }),
  ),
};

export namespace AdminKeyModel {
  export const create = t.Object(
    {
      name: t.String({ description: "1 to 64 letters, digits, `.`, `_` or `-`; unique", examples: ["alice"] }),
      role: literalUnion(KEY_ROLES, { description: "admin sees and manages everything" }),
      ...limits,
    },
    {
      additionalProperties: false,
      examples: [{ name: "alice", role: "client", models: ["llama3.2*"], max_jobs: 4, daily_tokens: 100000 }],
    },
  );
  export type create = typeof create.static;

  export const key = t.Object({
    id: t.String(),
    name: t.String(),
    role: Role,
    hint: t.String({ description: "The secret's last 4 characters" }),
    models: Nullable(t.Array(t.String())),
    apis: Nullable(t.Array(Api)),
    max_priority: Nullable(Type.Integer()),
    max_jobs: Nullable(Type.Integer()),
    daily_tokens: Nullable(Type.Integer()),
    weight: t.Number({ description: "Fair-share weight" }),
    created_at: t.String({ format: "date-time" }),
    rotated_at: Nullable(t.String({ format: "date-time" })),
    revoked_at: Nullable(t.String({ format: "date-time" })),
    today: t.Object(
      {
        prompt_tokens: Type.Integer(),
        output_tokens: Type.Integer(),
        jobs: Type.Integer({ description: "Jobs done today" }),
        active_jobs: Type.Integer({ description: "Queued and running now" }),
        gpu_seconds: t.Number({
          description: "What its jobs that ended today held the GPU (start to end, the load too when one caused the swap), s",
        }),
      },
      { description: "Usage this UTC day" },
    ),
  });
  export type key = typeof key.static;

  export const withSecret = t.Composite([
    key,
    t.Object({ secret: t.String({ description: "Shown this once: only its hash is kept" }) }),
  ]);
  export const list = t.Object({ keys: t.Array(key) });
  export const nameParams = t.Object({ name: t.String() });
}

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

/** A key as the admin API and `foreman keys --json` show it (never its secret nor its hash). */
export function keyView(key: KeyRow, usage: KeyUsageReader, now = Date.now()): MaybePromise<AdminKeyModel.key> {
  return after(usage.today(key.id, now), (today) =>
    after(usage.activeJobs(key.id), (activeJobs) => view(key, today, activeJobs)),
  );
}

function view(key: KeyRow, today: Awaited<ReturnType<KeyUsageReader["today"]>>, activeJobs: number): AdminKeyModel.key {
  return {
    id: key.id,
    name: key.name,
    role: key.role,
    hint: key.hint,
    models: key.models,
    apis: key.apis,
    max_priority: key.maxPriority,
    max_jobs: key.maxJobs,
    daily_tokens: key.dailyTokens,
    weight: key.weight,
    created_at: iso(key.createdAt)!,
    rotated_at: iso(key.rotatedAt),
    revoked_at: iso(key.revokedAt),
    today: {
      prompt_tokens: today.promptTokens,
      output_tokens: today.outputTokens,
      jobs: today.jobs,
      active_jobs: activeJobs,
      gpu_seconds: today.gpuMs / 1000,
    },
  };
}

/**
 * Key management over HTTP, for admins alone (the authorizer refuses client keys): what `foreman keys`
 * does on the database, for an operator away from the machine. A secret is in the answer that made it, once.
 */
export function adminKeyRoutes(keys: KeyRegistry, usage: KeyUsageReader) {
  const withSecret = ({ key, secret }: { key: KeyRow; secret: string }) =>
    after(keyView(key, usage), (view) => ({ ...view, secret }));
  return new Elysia({ tags: ["admin"] })
    .post(
      "/admin/keys",
      ({ body, set }) => {
        const made = keys.create(body.name, body.role, {
          models: body.models,
          apis: body.apis,
          maxPriority: body.max_priority,
          maxJobs: body.max_jobs,
          dailyTokens: body.daily_tokens,
          weight: body.weight,
        });
        return after(made, (made) => {
          set.status = 201;
          return withSecret(made);
        });
      },
      {
        parse: "json",
        body: AdminKeyModel.create,
        response: { 201: AdminKeyModel.withSecret, 400: OllamaError, 403: OllamaError, 409: OllamaError },
        detail: {
          summary: "Create a key",
          description:
            "Makes an API key and answers with its secret, shown this once (foreman keeps only its SHA-256). A client key " +
            "sees only its own jobs, batches and files, within its models, APIs and limits; an admin key sees everything.",
        },
      },
    )
    .get(
      "/admin/keys",
      () => after(keys.list(), (rows) => after(allOf(rows.map((key) => keyView(key, usage))), (views) => ({ keys: views }))),
      {
        response: { 200: AdminKeyModel.list, 403: OllamaError },
        detail: { summary: "List keys", description: "Every key, revoked ones too, with today's usage. No secrets." },
      },
    )
    .get("/admin/keys/:name", ({ params }) => after(keys.get(params.name), (key) => keyView(key, usage)), {
      params: AdminKeyModel.nameParams,
      response: { 200: AdminKeyModel.key, 403: OllamaError, 404: OllamaError },
      detail: { summary: "Show a key", description: "By name or id, with today's usage." },
    })
    .post("/admin/keys/:name/revoke", ({ params }) => after(keys.revoke(params.name), (key) => keyView(key, usage)), {
      parse: "none",
      params: AdminKeyModel.nameParams,
      response: { 200: AdminKeyModel.key, 403: OllamaError, 404: OllamaError, 409: OllamaError },
      detail: {
        summary: "Revoke a key",
        description: "Its secret stops working within a second. What it made stays its (and stays listed for admins).",
      },
    })
    .post("/admin/keys/:name/rotate", ({ params }) => after(keys.rotate(params.name), withSecret), {
      parse: "none",
      params: AdminKeyModel.nameParams,
      response: { 200: AdminKeyModel.withSecret, 403: OllamaError, 404: OllamaError, 409: OllamaError },
      detail: {
        summary: "Rotate a key",
        description:
          "A new secret (shown once) replaces the old, which stops working within a second; name, limits and work stay.",
      },
    });
}
