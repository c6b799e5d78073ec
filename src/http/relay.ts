import type { ApiFamily } from "../adapters/adapter";
import { errorResponse } from "../adapters/error-shapes";
import { ConnectionError, type OllamaClient } from "../ollama/client";
import { keepOpen } from "./long-lived";
import { modelAllowed, principalOf } from "../keys/principal";
import type { TargetInventory } from "../ollama/targets";

/** Options for {@link relayRequest}. */
export interface RelayOptions {
  /** Send the body on as it arrives (a multi-GB blob upload) instead of reading it first. */
  streamBody?: boolean;
  /** Called once Ollama's answer has been relayed to its end (a pull that finished changes the model list). */
  onFinished?: (response: Response) => void;
  /** Reads the body first: a refusal it returns is the answer, and nothing goes to Ollama (a key's model scope). */
  refuse?: (body: string) => Response | undefined;
  /** The body, already read (to choose the target by its model): sent instead of reading the request's. */
  body?: string;
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
  const body =
    options.body !== undefined
      ? options.body
      : !hasBody
        ? undefined
        : options.streamBody && request.body
          ? request.body
          : await request.text();
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
    const model = modelOf(body);
    if (model === undefined || modelAllowed(principal, model)) return undefined;
    return errorResponse(api, 404, `model '${model}' not found`);
  };
}

/** The model a direct request names (`model`, or `name` as /api/show and /api/delete also accept), if any. */
export function modelOf(body: string): string | undefined {
  try {
    const parsed = JSON.parse(body) as { model?: unknown; name?: unknown };
    const model = parsed?.model ?? parsed?.name;
    return typeof model === "string" && model ? model : undefined;
  } catch {
    return undefined; // the target answers a bad body with its own 400
  }
}

/**
 * A direct request for one model (embeddings, /api/show) with several targets: to a target that has the
 * model resident, else installed (taking turns among equals, so embeddings spread), else the first
 * that answers. One target: as {@link relayRequest} always did. A model outside the caller's key scope
 * is refused first (see {@link outsideScope}), on either path.
 */
export function relayByModel(inventory: TargetInventory, api: ApiFamily, path: string) {
  let turn = 0;
  return async ({ request }: { request: Request }): Promise<Response> => {
    const refuse = outsideScope(api, request);
    if (!inventory.several) return relayRequest(inventory.targets[0]!.client, api, "POST", path, request, { refuse });
    const body = await request.text();
    const refused = refuse(body);
    if (refused) return refused;
    return relayRequest(inventory.pick(modelOf(body), turn++).client, api, "POST", path, request, { body });
  };
}
