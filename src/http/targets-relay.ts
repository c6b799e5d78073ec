// Model management with several Ollama targets. What a user expects of "pull llama3.2" in front of two
// GPUs is that both can run it, so pull, push, copy and delete act on every target that answers, one
// after the other; `X-Foreman-Target: <name>` limits any of them to one. /api/create and the blobs it
// uploads first go to one target (the named one, else the first): a blob is gigabytes streamed through,
// not something to hold and send twice. /api/show and embeddings go to a target that has the model (relay.ts).
import { errorResponse } from "../adapters/error-shapes";
import { ConnectionError } from "../ollama/client";
import type { TargetInventory, TargetView } from "../ollama/targets";
import { keepOpen } from "./long-lived";

/** The header that names one target for a management request. */
export const TARGET_HEADER = "x-foreman-target";

/** The target the request names, else the first that answers (else the first). */
export function namedTarget(inventory: TargetInventory, request: Request): TargetView {
  const name = request.headers.get(TARGET_HEADER);
  return (
    inventory.targets.find((t) => t.target.name === name) ??
    inventory.targets.find((t) => !t.inventory.snapshot.degraded) ??
    inventory.targets[0]!
  );
}

/**
 * A management request on several targets. Streamed answers (pull and push progress) are relayed target
 * after target as one NDJSON stream, each line as that target wrote it; a non-streamed one answers with
 * the last target's answer, or the first failure (status and body) when one failed. Delete and copy
 * succeed when any target did (a model present on one GPU only is deleted there), else answer the
 * first target's error. The inventory is re-polled after.
 */
export async function relayToTargets(
  inventory: TargetInventory,
  method: string,
  path: string,
  request: Request,
): Promise<Response> {
  const named = request.headers.get(TARGET_HEADER);
  if (named !== null && !inventory.targets.some((t) => t.target.name === named)) {
    return errorResponse(
      "ollama",
      404,
      `no target named '${named}' (FOREMAN_OLLAMA_URL names ${inventory.targets.map((t) => t.target.name).join(", ")})`,
    );
  }
  const body = await request.text();
  keepOpen(request);
  const single = path === "/api/create" || named !== null;
  const views = single ? [namedTarget(inventory, request)] : inventory.targets.filter((t) => !t.inventory.snapshot.degraded);
  if (views.length === 0) return errorResponse("ollama", 502, "no Ollama target answers");
  const send = async (view: TargetView): Promise<Response> => {
    try {
      return await view.client.passthrough(method, path, body, request.signal);
    } catch (error) {
      if (error instanceof ConnectionError) return errorResponse("ollama", 502, `${view.target.name}: ${error.message}`);
      throw error;
    }
  };
  const refresh = () => void inventory.refresh();
  if (path === "/api/delete" || path === "/api/copy") {
    const answers = await Promise.all(views.map(send));
    refresh();
    return answers.find((a) => a.ok) ?? answers[0]!;
  }
  if (views.length === 1) {
    const answer = await send(views[0]!);
    if (!answer.body) return (refresh(), answer);
    const done = new TransformStream<Uint8Array, Uint8Array>({ flush: refresh });
    return new Response(answer.body.pipeThrough(done), { status: answer.status, headers: answer.headers });
  }
  // Several, in turn: the first answer decides the status and headers; a later failure is a final error line.
  const first = await send(views[0]!);
  if (!first.ok || !first.headers.get("content-type")?.includes("ndjson")) {
    // Not streamed (stream: false) or refused: each in turn, the first failure or the last answer.
    let last = first;
    for (const view of views.slice(1)) {
      if (!last.ok) break;
      await last.arrayBuffer();
      last = await send(view);
    }
    refresh();
    return last;
  }
  const stream = new ReadableStream<Uint8Array>({
    async start(controller) {
      const encoder = new TextEncoder();
      let answer: Response | undefined = first;
      for (const [i, view] of views.entries()) {
        answer ??= await send(view);
        if (!answer.ok) {
          controller.enqueue(encoder.encode(`${JSON.stringify({ error: `${view.target.name}: ${await answer.text()}` })}\n`));
          break;
        }
        if (answer.body) for await (const chunk of answer.body) controller.enqueue(chunk);
        answer = undefined;
        if (i === views.length - 1) break;
      }
      refresh();
      controller.close();
    },
  });
  return new Response(stream, { status: first.status, headers: first.headers });
}
