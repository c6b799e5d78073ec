import { Elysia } from "elysia";
import type { JobService } from "../job-service";
import type { OllamaClient } from "../ollama/client";
import { OllamaDocs, routeDoc } from "./api-docs";
import { queuedGeneration } from "./generation";
import { outsideScope, relayByModel, relayRequest } from "./relay";
import { namedTarget, relayToTargets } from "./targets-relay";
import { modelAllowed, principalOf } from "../keys/principal";
import type { ModelEntry } from "../ollama/inventory";

const TEXT_PLAIN = { "content-type": "text/plain; charset=utf-8" };
const JSON_UTF8 = { "content-type": "application/json; charset=utf-8" };

/** Model-management routes relayed to Ollama as they are; a change refreshes the inventory. */
const MANAGEMENT_ROUTES = [
  ["POST", "/api/pull"],
  ["POST", "/api/push"],
  ["POST", "/api/create"],
  ["POST", "/api/copy"],
  ["DELETE", "/api/delete"],
] as const;

/**
 * Ollama's own API, so clients change only their URL. Generation goes through the queue; embeddings
 * and model information go straight to Ollama; model lists come from the inventory cache.
 */
export function ollamaRoutes(jobs: JobService, ollama: OllamaClient) {
  const relay = (method: string, path: string, request: Request) =>
    relayRequest(ollama, "ollama", method, path, request, { refuse: outsideScope("ollama", request) });
  // A key limited to some models is shown only those.
  const allowed = (request: Request, models: readonly ModelEntry[]) => {
    const principal = principalOf(request);
    return principal.key?.models ? models.filter((m) => modelAllowed(principal, m.name)) : models;
  };

  const queued =
    "Queued and run one at a time; streams NDJSON unless `stream` is false. Header X-Foreman-Priority (integer) orders it; the answer carries X-Foreman-Job-Id.";
  const app = new Elysia({ tags: ["ollama"] })
    .get("/", () => new Response("Ollama is running", { headers: TEXT_PLAIN }), OllamaDocs.probe)
    .head("/", () => new Response(null, { headers: TEXT_PLAIN }), { detail: { hide: true } })
    // No `body` hook: the handler reads the body itself (the adapter checks it), and the document's request
    // body comes from OllamaDocs.
    .post("/api/chat", queuedGeneration(jobs, "chat"), { parse: "none", ...OllamaDocs.chat(queued) })
    .post("/api/generate", queuedGeneration(jobs, "generate"), { parse: "none", ...OllamaDocs.generate(queued) })
    .post("/api/embed", relayByModel(jobs.inventory, "ollama", "/api/embed"), { parse: "none", ...OllamaDocs.embed })
    .post("/api/embeddings", relayByModel(jobs.inventory, "ollama", "/api/embeddings"), {
      parse: "none",
      ...OllamaDocs.embeddings,
    })
    .post("/api/show", relayByModel(jobs.inventory, "ollama", "/api/show"), { parse: "none", ...OllamaDocs.show })
    .get("/api/version", ({ request }) => relay("GET", "/api/version", request), OllamaDocs.version)
    .get(
      "/api/tags",
      ({ request }) =>
        new Response(JSON.stringify({ models: allowed(request, jobs.inventory.snapshot.models) }), { headers: JSON_UTF8 }),
      OllamaDocs.tags,
    )
    .head("/api/tags", () => new Response(null, { headers: JSON_UTF8 }), { detail: { hide: true } })
    .get(
      "/api/ps",
      ({ request }) =>
        new Response(JSON.stringify({ models: allowed(request, jobs.inventory.snapshot.running) }), { headers: JSON_UTF8 }),
      OllamaDocs.ps,
    );

  for (const [method, path] of MANAGEMENT_ROUTES) {
    app.route(
      method,
      path,
      ({ request }: { request: Request }) =>
        jobs.inventory.several
          ? relayToTargets(jobs.inventory, method, path, request)
          : // A pull or create reports progress for minutes: the list is refreshed when its answer ends.
            relayRequest(ollama, "ollama", method, path, request, {
              onFinished: (response) => response.ok && void jobs.inventory.refresh(),
            }),
      {
        parse: "none",
        ...routeDoc(
          `${method} ${path}`,
          "Relayed to Ollama as it streams; the model list is refreshed after.",
          OllamaDocs.management[path],
        ),
      },
    );
  }
  // `ollama create` uploads model files here: streamed through, never held in memory (they are gigabytes).
  // Several targets: blobs and /api/create go to one (X-Foreman-Target, else the first; see targets-relay.ts).
  const blob =
    (method: "HEAD" | "POST") =>
    ({ request, params }: { request: Request; params: { digest: string } }) =>
      relayRequest(
        jobs.inventory.several ? namedTarget(jobs.inventory, request).client : ollama,
        "ollama",
        method,
        `/api/blobs/${encodeURIComponent(params.digest)}`,
        request,
        { streamBody: true },
      );
  app
    .head("/api/blobs/:digest", blob("HEAD"), { detail: { hide: true } })
    .post("/api/blobs/:digest", blob("POST"), { parse: "none", ...OllamaDocs.blob });
  return app;
}
