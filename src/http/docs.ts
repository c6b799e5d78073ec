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

/**
 * Swagger UI's page, written here rather than by the plugin so it can link foreman's icon. Its URLs are
 * absolute: from /swagger/ a relative "swagger/json" resolved to /swagger/swagger/json, and the page loaded
 * no document.
 */
const PAGE = `<!doctype html>
<html lang="en">
  <head>
    <meta charset="utf-8" />
    <meta name="viewport" content="width=device-width, initial-scale=1" />
    <title>foreman API</title>
    <link rel="icon" href="/favicon.ico" type="image/svg+xml" />
    <link rel="stylesheet" href="${ASSETS}/swagger-ui.css" />
  </head>
  <body>
    <div id="swagger-ui"></div>
    <script src="${ASSETS}/swagger-ui-bundle.js"></script>
    <script>
      window.onload = () => {
        window.ui = SwaggerUIBundle({ url: "/swagger/json", dom_id: "#swagger-ui" });
      };
    </script>
  </body>
</html>
`;

/** Swagger UI at /swagger and the OpenAPI document at /swagger/json, with Swagger UI's assets served locally. */
export function docs() {
  return new Elysia()
    .use(
      openapi({
        specPath: "/swagger/json",
        // The page is PAGE below; the plugin serves the document only.
        provider: null,
        exclude: { paths: DOCS_PATHS },
        documentation: {
          info: {
            title: "foreman",
            version: pkg.version,
            description:
              "One Ollama GPU, many clients. Ollama's own API (`/api/*`) and the OpenAI and Anthropic APIs it serves (`/v1/*`), " +
              "queued one generation at a time, plus the job API " +
              "for batch work. With FOREMAN_TOKEN set or API keys made, every call needs `Authorization: Bearer <token or key>` " +
              "(or `x-api-key`); a client key sees only its own jobs, batches and files.",
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
            { name: "admin", description: "API keys (admin keys and FOREMAN_TOKEN only)" },
          ],
          components: { securitySchemes: { bearer: { type: "http", scheme: "bearer" } } },
          security: [{ bearer: [] }],
        },
      }),
    )
    .get("/swagger", () => new Response(PAGE, { headers: { "content-type": "text/html; charset=utf-8" } }), {
      detail: { hide: true },
    })
    .get(`${ASSETS}/swagger-ui-bundle.js`, () => assetResponse(swaggerBundle, "text/javascript; charset=utf-8"), {
      detail: { hide: true },
    })
    .get(`${ASSETS}/swagger-ui.css`, () => assetResponse(swaggerCss, "text/css; charset=utf-8"), { detail: { hide: true } });
}

function assetResponse(path: string, contentType: string): Response {
  return new Response(Bun.file(path), { headers: { "content-type": contentType, "cache-control": "public, max-age=86400" } });
}
