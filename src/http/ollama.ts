import { Elysia } from "elysia";
import { errorResponse } from "../errors";
import { type JobService, parsePriorityHeader } from "../job-service";
import { ConnectionError, type OllamaClient } from "../ollama/client";
import { parseJsonBody } from "../ollama/types";
import type { JobType } from "../queue/store";

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
  const relay = async (method: string, path: string, request: Request) => {
    const body = method === "GET" || method === "HEAD" ? undefined : await request.text();
    try {
      return await ollama.passthrough(method, path, body, request.signal);
    } catch (error) {
      if (error instanceof ConnectionError) return errorResponse(502, error.message);
      throw error;
    }
  };

  const generation = (type: JobType) => async ({ request }: { request: Request }) => {
    // The body is read as text whatever its content type: Ollama decodes JSON from any request.
    const body = parseJsonBody(await request.text()) as { stream?: unknown };
    const priority = parsePriorityHeader(request.headers.get("x-foreman-priority"));
    const { job } = await jobs.submit(type, body, { source: "ollama", priority });
    return jobs.respond(job, body.stream !== false, request.signal);
  };

  const app = new Elysia()
    .get("/", () => new Response("Ollama is running", { headers: TEXT_PLAIN }))
    .head("/", () => new Response(null, { headers: TEXT_PLAIN }))
    .post("/api/chat", generation("chat"), { parse: "none" })
    .post("/api/generate", generation("generate"), { parse: "none" })
    .post("/api/embed", ({ request }) => relay("POST", "/api/embed", request), { parse: "none" })
    .post("/api/embeddings", ({ request }) => relay("POST", "/api/embeddings", request), { parse: "none" })
    .post("/api/show", ({ request }) => relay("POST", "/api/show", request), { parse: "none" })
    .get("/api/version", ({ request }) => relay("GET", "/api/version", request))
    .get("/api/tags", () => new Response(JSON.stringify({ models: jobs.inventory.snapshot.models }), { headers: JSON_UTF8 }))
    .head("/api/tags", () => new Response(null, { headers: JSON_UTF8 }))
    .get("/api/ps", () => new Response(JSON.stringify({ models: jobs.inventory.snapshot.running }), { headers: JSON_UTF8 }));

  for (const [method, path] of MANAGEMENT_ROUTES) {
    app.route(
      method,
      path,
      async ({ request }: { request: Request }) => {
        const response = await relay(method, path, request);
        if (response.ok) void jobs.inventory.refresh();
        return response;
      },
      { parse: "none" },
    );
  }
  return app;
}
