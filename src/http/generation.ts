import { type JobType, adapterFor } from "../adapters";
import { type JobService, parsePriorityHeader } from "../job-service";
import { parseJsonBody } from "../ollama/types";
import { keepOpen, restoresAtEnd } from "./long-lived";
import { principalOf } from "../keys/principal";

/**
 * The handler of a queued generation route, whatever its API: reads the body, queues the job (its
 * priority from X-Foreman-Priority) and answers when the worker runs it, in the adapter's format.
 */
export function queuedGeneration(jobs: JobService, type: JobType) {
  const adapter = adapterFor(type);
  return async ({ request }: { request: Request }): Promise<Response> => {
    // The body is read as text whatever its content type: Ollama decodes JSON from any request.
    const body = parseJsonBody(await request.text());
    const priority = parsePriorityHeader(request.headers.get("x-foreman-priority"));
    const { job, facts } = await jobs.submit(type, body, { source: adapter.api, priority, principal: principalOf(request) });
    // Waits in the queue or behind a model load, maybe minutes without a byte: no idle timeout may cut it.
    keepOpen(request);
    return jobs.respond(job, facts.stream, { signal: request.signal, restoresAtEnd: () => restoresAtEnd(request) });
  };
}
