// Ollama's model-management routes (reference §5, §6.8): pull, push and create stream progress NDJSON
// (spaced by `pullDelayMs`, so a test can prove a relay does not buffer them); copy and delete answer an
// empty 200; blobs are checked against their sha256 digest. None of them touches the simulated GPU.
// The fake's choices where Ollama would talk to a registry: any name can be pulled and pushed, except a
// name starting with "missing", whose manifest the "registry" does not have.
import type { FakeOllama } from "../fake-ollama";
import { json, normalize } from "../fake-ollama";

type Body = Record<string, unknown>;
/** One line of a progress stream: a status, or the error that ends the stream. */
type Progress = { status: string; digest?: string; total?: number; completed?: number } | { error: string };

const encoder = new TextEncoder();
const MISSING_MANIFEST = "pull model manifest: file does not exist";
const DIGEST = /^sha256[:-][0-9a-f]{64}$/;

/** Answers the model-management routes, or null for another path. */
export async function handleModelManagement(fake: FakeOllama, request: Request, path: string): Promise<Response | null> {
  const method = request.method;
  if (path.startsWith("/api/blobs/")) {
    const digest = decodeURIComponent(path.slice("/api/blobs/".length));
    if (method === "HEAD") return new Response(null, { status: fake.blobs.has(digest.replace("-", ":")) ? 200 : 404 });
    if (method === "POST") return receiveBlob(fake, digest, request);
    return methodNotAllowed();
  }
  const routes: Record<string, [string, (fake: FakeOllama, body: Body) => Response]> = {
    "/api/pull": ["POST", pull],
    "/api/push": ["POST", push],
    "/api/create": ["POST", create],
    "/api/copy": ["POST", copy],
    "/api/delete": ["DELETE", remove],
  };
  const route = routes[path];
  if (!route) return null;
  if (method !== route[0]) return methodNotAllowed();
  const text = await request.text();
  if (!text) return json({ error: "missing request body" }, 400);
  let body: Body;
  try {
    body = JSON.parse(text);
  } catch (error) {
    return json({ error: (error as Error).message }, 400);
  }
  // Ollama binds the body into a struct: JSON that is not an object is its decoder's 400, not a crash.
  if (!body || typeof body !== "object" || Array.isArray(body)) return json({ error: "request body must be a JSON object" }, 400);
  return route[1](fake, body);
}

const methodNotAllowed = () => new Response("405 method not allowed", { status: 405, headers: { "content-type": "text/plain" } });
const nameOf = (body: Body) => String(body.model ?? body.name ?? "");
const layerDigest = (name: string) => `sha256:${new Bun.CryptoHasher("sha256").update(name).digest("hex")}`;

/** Adds a model to the fake's inventory: an embedding model if its name says so. */
function addModel(fake: FakeOllama, name: string) {
  const model = normalize(name);
  if (fake.models.includes(model) || fake.embedModels.includes(model)) return;
  if (/embed|minilm/.test(model)) fake.embedModels.push(model);
  else fake.models.push(model);
}

/**
 * A progress stream: each line as soon as it is made, `pullDelayMs` apart; `stream: false` waits for the
 * end and answers the last line alone, an error with its status (§1.3).
 */
function progress(fake: FakeOllama, body: Body, lines: Progress[], onSuccess: () => void, errorStatus = 500): Response {
  const delayMs = fake.pullDelayMs;
  if (body.stream === false) {
    return new Response(
      new ReadableStream<Uint8Array>({
        async start(controller) {
          for (let i = 1; i < lines.length && delayMs; i++) await Bun.sleep(delayMs);
          const last = lines.at(-1)!;
          if (!("error" in last)) onSuccess();
          controller.enqueue(encoder.encode(JSON.stringify(last)));
          controller.close();
        },
      }),
      { status: "error" in lines.at(-1)! ? errorStatus : 200, headers: { "content-type": "application/json" } },
    );
  }
  let index = 0;
  return new Response(
    new ReadableStream<Uint8Array>({
      async pull(controller) {
        if (index > 0 && delayMs) await Bun.sleep(delayMs);
        const line = lines[index++]!;
        controller.enqueue(encoder.encode(`${JSON.stringify(line)}\n`));
        if (index < lines.length) return;
        if (!("error" in line)) onSuccess();
        controller.close();
      },
    }),
    { headers: { "content-type": "application/x-ndjson" } },
  );
}

/** Download progress for one layer: three steps to its total. */
function transfer(verb: string, name: string): Progress[] {
  const digest = layerDigest(name);
  const total = 2019393189;
  return [1, 2, 3].map((step) => ({
    status: `${verb} ${digest.slice(7, 19)}`,
    digest,
    total,
    completed: Math.floor((total * step) / 3),
  }));
}

function pull(fake: FakeOllama, body: Body): Response {
  const name = nameOf(body);
  if (!name) return json({ error: "model is required" }, 400);
  const lines: Progress[] = [{ status: "pulling manifest" }];
  if (name.startsWith("missing")) lines.push({ error: MISSING_MANIFEST });
  else
    lines.push(
      ...transfer("pulling", name),
      { status: "verifying sha256 digest" },
      { status: "writing manifest" },
      { status: "success" },
    );
  return progress(fake, body, lines, () => addModel(fake, name));
}

function push(fake: FakeOllama, body: Body): Response {
  const name = nameOf(body);
  if (!name) return json({ error: "model is required" }, 400);
  if (!fake.has(name)) return json({ error: `model '${name}' not found` }, 404);
  const lines: Progress[] = [
    { status: "retrieving manifest" },
    { status: "starting upload" },
    ...transfer("pushing", name),
    { status: "pushing manifest" },
    { status: "success" },
  ];
  return progress(fake, body, lines, () => {});
}

function create(fake: FakeOllama, body: Body): Response {
  const name = nameOf(body);
  if (!name) return json({ error: "model is required" }, 400);
  const from = typeof body.from === "string" ? body.from : "";
  if (from && !fake.has(from)) return json({ error: `model '${from}' not found` }, 404);
  const lines: Progress[] = [{ status: "reading model metadata" }];
  if (from) lines.push({ status: `using existing layer ${layerDigest(from)}` });
  if (typeof body.system === "string") lines.push({ status: "creating system layer" });
  lines.push({ status: "writing manifest" }, { status: "success" });
  return progress(fake, body, lines, () => addModel(fake, name));
}

function copy(fake: FakeOllama, body: Body): Response {
  const source = String(body.source ?? "");
  const destination = String(body.destination ?? "");
  if (!source) return json({ error: `source "${source}" is invalid` }, 400);
  if (!destination) return json({ error: `destination "${destination}" is invalid` }, 400);
  if (!fake.has(source)) return json({ error: `model "${source}" not found` }, 404);
  if (fake.embedModels.includes(normalize(source))) fake.embedModels.push(normalize(destination));
  else addModel(fake, destination);
  return new Response(null, { status: 200 });
}

function remove(fake: FakeOllama, body: Body): Response {
  const name = nameOf(body);
  if (!name) return json({ error: "model is required" }, 400);
  if (!fake.has(name)) return json({ error: `model '${name}' not found` }, 404);
  const model = normalize(name);
  fake.models = fake.models.filter((m) => m !== model);
  fake.embedModels = fake.embedModels.filter((m) => m !== model);
  if (fake.loaded?.split(" ")[0] === model) fake.loaded = null;
  return new Response(null, { status: 200 });
}

/** Reads the body as it streams in, checks its sha256 and records its size: 201, or 200 if known. */
async function receiveBlob(fake: FakeOllama, digest: string, request: Request): Promise<Response> {
  if (!DIGEST.test(digest)) return json({ error: "invalid digest format" }, 400);
  const hasher = new Bun.CryptoHasher("sha256");
  let size = 0;
  if (request.body) {
    for await (const chunk of request.body) {
      hasher.update(chunk);
      size += chunk.byteLength;
    }
  }
  const actual = `sha256:${hasher.digest("hex")}`;
  const expected = digest.replace("-", ":");
  if (actual !== expected) return json({ error: `digest mismatch, expected "${expected}", got "${actual}"` }, 400);
  if (fake.blobs.has(expected)) return new Response(null, { status: 200 });
  fake.blobs.set(expected, size);
  return new Response(null, { status: 201 });
}
