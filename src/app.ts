import { Elysia } from "elysia";
import type { Config } from "./config";
import { apiForPath, errorResponse } from "./adapters/error-shapes";
import { ApiError } from "./errors";
import { bearerTokenMatches } from "./http/auth";
import { DOCS_PATHS, docs } from "./http/docs";
import { jobRoutes } from "./http/jobs";
import { ollamaRoutes } from "./http/ollama";
import { systemRoutes } from "./http/system";
import type { JobService } from "./job-service";
import type { OllamaClient } from "./ollama/client";
import type { WebhookDispatcher } from "./webhook/dispatcher";

/** What the app is built from; server.ts wires the real ones, tests their own. */
export interface AppDependencies {
  config: Config;
  jobs: JobService;
  ollama: OllamaClient;
  webhooks: Pick<WebhookDispatcher, "rejectUrl">;
}

/** Routes open without the token: the health probe, and the documentation (it holds no data). */
const PUBLIC_PATHS = new Set(["/healthz", ...DOCS_PATHS]);

/** Builds the whole HTTP API without listening: server.ts serves it, tests call `app.handle()`. */
export function createApp({ config, jobs, ollama, webhooks }: AppDependencies) {
  // normalize "typebox": Elysia's default (exact-mirror) reshapes a wrong-typed value into the schema's
  // shape before validating it, e.g. "request": "hi" into {"0":"h","1":"i"}, so bad input would pass.
  return new Elysia({ normalize: "typebox" })
    .use(docs())
    .onRequest(({ request }) => {
      if (!config.token) return;
      const path = new URL(request.url).pathname;
      if (PUBLIC_PATHS.has(path)) return;
      if (!bearerTokenMatches(request.headers.get("authorization"), config.token)) {
        return errorResponse(apiForPath(path), 401, "unauthorized", { "www-authenticate": "Bearer" });
      }
    })
    .onError(({ code, error, path }) => {
      // Each API's routes answer errors in that API's shape.
      const api = apiForPath(path);
      if (error instanceof ApiError) return errorResponse(api, error.status, error.message, error.headers);
      switch (code) {
        case "NOT_FOUND":
          return errorResponse(api, 404, "not found");
        case "VALIDATION":
          return errorResponse(api, 400, validationMessage(error));
        case "PARSE":
          return errorResponse(api, 400, "invalid JSON in request body");
        default: {
          jobs.log.error("unhandled error", { code, error });
          return errorResponse(api, 500, error instanceof Error ? error.message : "internal error");
        }
      }
    })
    .use(systemRoutes(jobs.inventory))
    .use(jobRoutes(jobs, webhooks))
    .use(ollamaRoutes(jobs, ollama));
}

function validationMessage(error: {
  type?: string;
  customError?: unknown;
  valueError?: { path: string; message: string; schema?: { description?: string } };
}): string {
  if (typeof error.customError === "string") return error.customError;
  const where = error.type === "query" ? "query parameter" : error.type === "params" ? "path parameter" : "field";
  const detail = error.valueError;
  if (!detail) return `invalid ${error.type ?? "request"}`;
  const name = detail.path.replace(/^\//, "").replaceAll("/", ".");
  const message = detail.message.charAt(0).toLowerCase() + detail.message.slice(1);
  const hint = detail.schema?.description ? ` (${detail.schema.description})` : "";
  return name ? `invalid ${where} "${name}": ${message}${hint}` : `invalid request body: ${message}`;
}
