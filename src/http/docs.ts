import { openapi } from "@elysiajs/openapi";
import { Elysia } from "elysia";
// Embedded in the compiled binary, so the Swagger page works on a machine with no internet.
import swaggerBundle from "swagger-ui-dist/swagger-ui-bundle.js" with { type: "file" };
import swaggerCss from "swagger-ui-dist/swagger-ui.css" with { type: "file" };
import pkg from "../../package.json";

const ASSETS = "/swagger/assets";

/** Paths of the documentation itself: public, as they hold no data (see README). */
export const DOCS_PATHS = [
  "/swagger",
  "/swagger/",
  "/swagger/json",
  `${ASSETS}/swagger-ui-bundle.js`,
  `${ASSETS}/swagger-ui.css`,
];

/** Swagger UI at /swagger and the OpenAPI document at /swagger/json, with Swagger UI's assets served locally. */
export function docs() {
  return new Elysia()
    .use(
      openapi({
        path: "/swagger",
        specPath: "/swagger/json",
        provider: "swagger-ui",
        swagger: {
          cdn: `${ASSETS}/swagger-ui-bundle.js`,
          theme: `${ASSETS}/swagger-ui.css`,
          autoDarkMode: false,
          // Absolute, as the assets are: the plugin's default ("swagger/json", relative) resolved to
          // /swagger/swagger/json from /swagger/, and the page loaded no document. The plugin spreads these
          // options over its own, url included, though its type omits it.
          ...({ url: "/swagger/json" } as object),
        },
        exclude: { paths: DOCS_PATHS },
        documentation: {
          info: {
            title: "foreman",
            version: pkg.version,
            description:
              "One Ollama GPU, many clients. Ollama's own API (`/api/*`) and the OpenAI and Anthropic APIs it serves (`/v1/*`), " +
              "queued one generation at a time, plus the job API " +
              "for batch work. With FOREMAN_TOKEN set, every call needs `Authorization: Bearer <token>`.",
          },
          tags: [
            { name: "jobs", description: "Asynchronous jobs: submit, watch, cancel, fetch results" },
            { name: "queue", description: "What is waiting and what runs" },
            { name: "ollama", description: "Ollama's API, for unmodified Ollama clients" },
            { name: "openai", description: "The OpenAI-compatible API Ollama serves (/v1), for OpenAI SDK clients" },
            { name: "anthropic", description: "The Anthropic Messages API Ollama serves (/v1/messages)" },
            { name: "files", description: "OpenAI's Files API, for batch input and output files" },
            { name: "batches", description: "OpenAI's Batch API: a file of requests queued below interactive traffic" },
            { name: "system", description: "Health and metrics" },
          ],
          components: { securitySchemes: { bearer: { type: "http", scheme: "bearer" } } },
          security: [{ bearer: [] }],
        },
      }),
    )
    .get(`${ASSETS}/swagger-ui-bundle.js`, () => assetResponse(swaggerBundle, "text/javascript; charset=utf-8"), {
      detail: { hide: true },
    })
    .get(`${ASSETS}/swagger-ui.css`, () => assetResponse(swaggerCss, "text/css; charset=utf-8"), { detail: { hide: true } });
}

function assetResponse(path: string, contentType: string): Response {
  return new Response(Bun.file(path), { headers: { "content-type": contentType, "cache-control": "public, max-age=86400" } });
}
