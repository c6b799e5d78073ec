import type { ApiFamily } from "../adapters/adapter";
import { errorResponse } from "../adapters/error-shapes";
import { ConnectionError, type OllamaClient } from "../ollama/client";
import { keepOpen } from "./long-lived";
import { modelAllowed, principalOf } from "../keys/principal";

/** Options for {@link relayRequest}. */
export interface RelayOptions {
  /** Send the body on as it arrives (a multi-GB blob upload) instead of reading it first. */
  streamBody?: boolean;
  /** Called once Ollama's answer has been relayed to its end (a pull that finished changes the model list). */
  onFinished?: (response: Response) => void;
  /** Reads the body first: a refusal it returns is the answer, and nothing goes to Ollama (a key's model scope). */
  refuse?: (body: string) => Response | undefined;
}

/**
 * Relays a request to the same route on Ollama and its answer back as it comes, status, content type
 * and body (a pull's progress lines flow as Ollama writes them). Unreachable Ollama is a 502 in the
 * API's shape. For the routes that bypass the queue: embeddings, model information and management.
 */
export async function relayRequest(
  ollama: OllamaClient,
  api: ApiFamily,
  method: string,
  path: string,
  request: Request,
  options: RelayOptions = {},
): Promise<Response> {
  const hasBody = method !== "GET" && method !== "HEAD";
  const body = !hasBody ? undefined : options.streamBody && request.body ? request.body : await request.text();
  const refused = typeof body === "string" ? options.refuse?.(body) : undefined;
  if (refused) return refused;
  // Ollama may be silent for long before it answers (a model load for embeddings, a pull's first layer).
  // Lifted once the body is read, so that a stalled body is still cut (a streamed blob is read as it goes).
  keepOpen(request);
  let response: Response;
  try {
    response = await ollama.passthrough(method, path, body, request.signal);
  } catch (error) {
    if (error instanceof ConnectionError) return errorResponse(api, 502, error.message);
    throw error;
  }
  const { onFinished } = options;
  if (!onFinished) return response;
  if (!response.body) {
    onFinished(response);
    return response;
  }
  const done = new TransformStream<Uint8Array, Uint8Array>({ flush: () => onFinished(response) });
  return new Response(response.body.pipeThrough(done), { status: response.status, headers: response.headers });
}

/**
 * A {@link RelayOptions.refuse} for a route whose body names a model (embeddings, /api/show): a model the
 * request's key may not use is answered as one Ollama lacks (404), so a scope leaks no model list. A body
 * that is not JSON goes on, for Ollama to refuse in its own words.
 */
export function outsideScope(api: ApiFamily, request: Request): (body: string) => Response | undefined {
  const principal = principalOf(request);
  return (body) => {
    if (!principal.key?.models) return undefined;
    let model: unknown;
    try {
      const parsed = JSON.parse(body) as { model?: unknown; name?: unknown };
      model = parsed?.model ?? parsed?.name;
    } catch {
      return undefined;
    }
    if (typeof model !== "string" || modelAllowed(principal, model)) return undefined;
    return errorResponse(api, 404, `model '${model}' not found`);
  };
}
