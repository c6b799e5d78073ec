import { Elysia } from "elysia";
import { errorResponse } from "../adapters/error-shapes";
import type { JobService } from "../job-service";
import type { ModelEntry } from "../ollama/inventory";
import type { OllamaClient } from "../ollama/client";
import { normalizeModel } from "../ollama/model-key";
import { OpenAIDocs } from "./api-docs";
import { queuedGeneration } from "./generation";
import { relayByModel } from "./relay";
import { modelAllowed, principalOf } from "../keys/principal";

const JSON_UTF8 = { "content-type": "application/json; charset=utf-8" };

/** A model as OpenAI's list shows it (R:openai/openai.go:450-472): created is its modified time, owner its namespace. */
function openaiModel(entry: ModelEntry, id = entry.name) {
  const modified = typeof entry.modified_at === "string" ? Date.parse(entry.modified_at) : NaN;
  const slash = entry.name.lastIndexOf("/");
  return {
    id,
    object: "model",
    created: Number.isNaN(modified) ? 0 : Math.floor(modified / 1000),
    owned_by: slash === -1 ? "library" : entry.name.slice(0, slash).split("/").pop()!,
  };
}

/**
 * The APIs Ollama serves beside its own, for clients built on OpenAI's or Anthropic's SDKs: generation
 * goes through the queue exactly like /api/chat (one adapter per format), embeddings straight to
 * Ollama, model lists from the inventory cache.
 */
export function openaiRoutes(jobs: JobService, ollama: OllamaClient) {
  const queued =
    "Queued and run one at a time like /api/chat, in this API's own format (streamed as Server-Sent Events when " +
    "`stream` is true). X-Foreman-Priority orders it; the answer carries X-Foreman-Job-Id.";
  const retrieveModel = (name: string | null | undefined, request: Request): Response => {
    // Elysia gives null for a name that is not valid percent-encoding (e.g. /v1/models/%ff).
    if (typeof name !== "string") return errorResponse("openai", 400, "the model name in the path is not valid percent-encoding");
    const wanted = normalizeModel(name);
    const principal = principalOf(request);
    const entry = jobs.inventory.snapshot.models.find(
      (m) => normalizeModel(m.name) === wanted && modelAllowed(principal, m.name),
    );
    if (!entry) return errorResponse("openai", 404, `model '${name}' not found`);
    return new Response(JSON.stringify(openaiModel(entry, name)), { headers: JSON_UTF8 });
  };
  return (
    new Elysia({ tags: ["openai"] })
      .post("/v1/chat/completions", queuedGeneration(jobs, "openai.chat"), {
        parse: "none",
        ...OpenAIDocs.chat("Chat completions (OpenAI, queued)", queued),
      })
      .post("/v1/completions", queuedGeneration(jobs, "openai.completion"), {
        parse: "none",
        ...OpenAIDocs.completion("Completions (OpenAI legacy, queued)", queued),
      })
      .post("/v1/responses", queuedGeneration(jobs, "openai.responses"), {
        parse: "none",
        ...OpenAIDocs.responses("Responses (OpenAI, stateless, queued)", queued),
      })
      .post("/v1/messages", queuedGeneration(jobs, "anthropic.messages"), {
        parse: "none",
        tags: ["anthropic"],
        ...OpenAIDocs.messages("Messages (Anthropic, queued)", queued),
      })
      .post("/v1/embeddings", relayByModel(jobs.inventory, "openai", "/v1/embeddings"), {
        parse: "none",
        ...OpenAIDocs.embeddings,
      })
      .get(
        "/v1/models",
        // Ollama sends `data: null` for an empty list (its slice is never allocated); clients cope with [] better.
        ({ request }) => {
          const principal = principalOf(request);
          const models = jobs.inventory.snapshot.models.filter((entry) => modelAllowed(principal, entry.name));
          return { object: "list", data: models.map((entry) => openaiModel(entry)) };
        },
        OpenAIDocs.models,
      )
      // The documented route takes a one-segment name, so Swagger UI can fill it in; a name with a namespace
      // (/v1/models/library/llama3.2:latest) has slashes, and the wildcard, hidden from the document, takes it.
      .get("/v1/models/:model", ({ params, request }) => retrieveModel(params.model, request), OpenAIDocs.model)
      .get("/v1/models/*", ({ params, request }) => retrieveModel(params["*"], request), { detail: { hide: true } })
  );
}
