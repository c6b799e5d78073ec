import { Elysia } from "elysia";
import type { JobService } from "../job-service";
import type { OllamaClient } from "../ollama/client";
import { ChatRequest, GenerateRequest } from "../ollama/types";
import { queuedGeneration } from "./generation";
import { relayRequest } from "./relay";

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
  const relay = (method: string, path: string, request: Request) => relayRequest(ollama, "ollama", method, path, request);

  const doc = (summary: string, description: string) => ({ detail: { summary, description } });
  const queued =
    "Queued and run one at a time; streams NDJSON unless `stream` is false. Header X-Foreman-Priority (integer) orders it; the answer carries X-Foreman-Job-Id.";
  const app = new Elysia({ tags: ["ollama"] })
    .get(
      "/",
      () => new Response("Ollama is running", { headers: TEXT_PLAIN }),
      doc("Probe", "Answers `Ollama is running`, as Ollama does."),
    )
    .head("/", () => new Response(null, { headers: TEXT_PLAIN }), { detail: { hide: true } })
    .post("/api/chat", queuedGeneration(jobs, "chat"), { parse: "none", body: ChatRequest, ...doc("Chat (queued)", queued) })
    .post("/api/generate", queuedGeneration(jobs, "generate"), {
      parse: "none",
      body: GenerateRequest,
      ...doc("Generate (queued)", queued),
    })
    .post("/api/embed", ({ request }) => relay("POST", "/api/embed", request), {
      parse: "none",
      ...doc("Embed", "Sent straight to Ollama, concurrently, never queued."),
    })
    .post("/api/embeddings", ({ request }) => relay("POST", "/api/embeddings", request), {
      parse: "none",
      ...doc("Embeddings (legacy)", "Sent straight to Ollama, never queued."),
    })
    .post("/api/show", ({ request }) => relay("POST", "/api/show", request), {
      parse: "none",
      ...doc("Show a model", "Relayed to Ollama."),
    })
    .get("/api/version", ({ request }) => relay("GET", "/api/version", request), doc("Ollama's version", "Relayed to Ollama."))
    .get(
      "/api/tags",
      () => new Response(JSON.stringify({ models: jobs.inventory.snapshot.models }), { headers: JSON_UTF8 }),
      doc("Models", "From the inventory cache (polled every FOREMAN_POLL_INTERVAL; the last known list while Ollama is away)."),
    )
    .head("/api/tags", () => new Response(null, { headers: JSON_UTF8 }), { detail: { hide: true } })
    .get(
      "/api/ps",
      () => new Response(JSON.stringify({ models: jobs.inventory.snapshot.running }), { headers: JSON_UTF8 }),
      doc("Loaded models", "From the inventory cache, refreshed after every job so a model change shows at once."),
    );

  for (const [method, path] of MANAGEMENT_ROUTES) {
    app.route(
      method,
      path,
      ({ request }: { request: Request }) =>
        // A pull or create reports progress for minutes: the list is refreshed when its answer ends.
        relayRequest(ollama, "ollama", method, path, request, {
          onFinished: (response) => response.ok && void jobs.inventory.refresh(),
        }),
      {
        parse: "none",
        detail: {
          summary: `${method} ${path}`,
          description: "Relayed to Ollama as it streams; the model list is refreshed after.",
        },
      },
    );
  }
  // `ollama create` uploads model files here: streamed through, never held in memory (they are gigabytes).
  const blob =
    (method: "HEAD" | "POST") =>
    ({ request, params }: { request: Request; params: { digest: string } }) =>
      relayRequest(ollama, "ollama", method, `/api/blobs/${encodeURIComponent(params.digest)}`, request, { streamBody: true });
  app.head("/api/blobs/:digest", blob("HEAD"), { detail: { hide: true } }).post("/api/blobs/:digest", blob("POST"), {
    parse: "none",
    ...doc("Upload a blob", "Relayed to Ollama, body streamed as it arrives (the upload path of `ollama create`)."),
  });
  return app;
}
