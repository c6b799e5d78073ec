import { Elysia } from "elysia";
import type { ForemanMetrics } from "../metrics";

/** Prometheus' text exposition format, version 0.0.4. */
const CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

/** GET /metrics: Prometheus text format; behind the token unless FOREMAN_METRICS_PUBLIC=true. */
export function metricsRoutes(metrics: ForemanMetrics) {
  return new Elysia({ tags: ["system"] }).get(
    "/metrics",
    async () => new Response(await metrics.text(), { headers: { "content-type": CONTENT_TYPE } }),
    {
      detail: {
        summary: "Metrics (Prometheus)",
        description:
          "Queue depth by model and state, jobs ended, wait and run time, model swaps, tokens and tokens/s, upstream " +
          "errors, retries, webhook deliveries, Ollama up, build info. Needs the token unless FOREMAN_METRICS_PUBLIC=true.",
        responses: {
          200: { description: "Prometheus text format", content: { "text/plain": { schema: { type: "string" } } } },
        },
      },
    },
  );
}
