// A stand-in for Ollama that speaks its wire format (see shared/reference/ollama-api.md) and behaves
// like one GPU: one chat model resident at a time, a load delay on each swap, a delay per token.
// It counts requests in flight so tests can prove foreman never sends two generations at once. The
// OpenAI-compatible and Anthropic routes (test/fake/openai.ts, anthropic.ts) and the model-management
// routes (test/fake/models.ts) live beside it; every generation route shares the one simulated GPU.
import type { Server } from "bun";
import { handleAnthropic } from "./fake/anthropic";
import { handleModelManagement } from "./fake/models";
import { handleOpenAI } from "./fake/openai";
import { fakeReply } from "./fake/reply";

export { fakeTokens } from "./fake/reply";

/** A failure the next generation request meets. */
export type InjectedFailure =
  | { kind: "status"; status: number; error: string }
  /** Streams `afterChunks` tokens, then an {"error"} line, as Ollama ends a failed stream. */
  | { kind: "mid-stream"; afterChunks: number; error: string }
  /** Streams `afterChunks` tokens, then drops the connection without a done line. */
  | { kind: "drop"; afterChunks: number };

export interface FakeOllamaOptions {
  /** Chat/generate models it has, default four. */
  models?: string[];
  /** Embedding models it has, default all-minilm:latest. */
  embedModels?: string[];
  /** Milliseconds to load a model that is not resident (a swap). */
  loadDelayMs?: number;
  /** Milliseconds between two streamed tokens. */
  tokenDelayMs?: number;
  /** Milliseconds between a stream's final record and the end of its body (a slow connection's tail). */
  finalDelayMs?: number;
  /** Per-model overrides of loadDelayMs and tokenDelayMs, by normalized name (uneven model sizes). */
  modelDelays?: Record<string, { loadMs?: number; tokenMs?: number }>;
  /** Milliseconds one embed call takes. */
  embedDelayMs?: number;
  /** Milliseconds between two progress lines of /api/pull, /api/push and /api/create, default 0. */
  pullDelayMs?: number;
  /**
   * Parallel mode, as Ollama with OLLAMA_NUM_PARALLEL = `slots`: that many generations of the loaded model
   * key are served at once, each token `slowdown` times slower while another shares the GPU (batched
   * decoding). More at once, or two keys at once, is recorded in `violations`. Default 1 slot, no slowdown.
   */
  parallel?: { slots: number; slowdown: number };
  port?: number;
}

/** One generation request as the fake saw it. */
export interface SeenRequest {
  /** The route the client called: /api/chat, /v1/chat/completions, /v1/messages, … */
  path: string;
  model: string;
  key: string;
  /** The body the client sent to that route. */
  body: Record<string, unknown>;
  headers: Record<string, string>;
  startedAt: number;
  endedAt?: number;
  /** performance.now() (ms, fractional) when it arrived and when it was served in full: the serving log's clock. */
  arrivedMs: number;
  servedMs?: number;
  aborted?: boolean;
  swapped: boolean;
  /** Generations in flight when it arrived, itself included. */
  inFlight: number;
}

const JSON_UTF8 = { "content-type": "application/json; charset=utf-8" };
const LOAD_OPTIONS = ["num_ctx", "num_batch", "num_gpu", "main_gpu", "use_mmap", "num_thread"];

/** A model name with its default `:latest` tag. */
export const normalize = (name: string) => (name.slice(name.lastIndexOf("/") + 1).includes(":") ? name : `${name}:latest`);
/** A JSON answer as gin's c.JSON writes it (no trailing newline). */
export const json = (body: unknown, status = 200) => new Response(JSON.stringify(body), { status, headers: JSON_UTF8 });
const now = () => new Date().toISOString().replace(/0+Z$/, "Z");

export class FakeOllama {
  models: string[];
  embedModels: string[];
  loadDelayMs: number;
  tokenDelayMs: number;
  modelDelays: Record<string, { loadMs?: number; tokenMs?: number }>;
  finalDelayMs: number;
  embedDelayMs: number;
  pullDelayMs: number;
  parallel: { slots: number; slowdown: number };
  /**
   * What a GPU behind foreman must never see, in the order it happened: more generations at once than its
   * slots, or a generation of one model key while another key's is in flight. Tests assert it stays empty.
   */
  violations: string[] = [];
  /** Generations in flight by model key. */
  readonly inFlightByKey = new Map<string, number>();
  /** Sizes in bytes of the blobs received by POST /api/blobs/:digest, by digest. */
  blobs = new Map<string, number>();
  /** Model key resident on the GPU, or null. */
  loaded: string | null = null;
  swaps = 0;
  inFlight = 0;
  maxInFlight = 0;
  embedInFlight = 0;
  maxEmbedInFlight = 0;
  seen: SeenRequest[] = [];
  /** Bodies of /api/embed and /api/embeddings calls, in order. */
  embeds: Record<string, unknown>[] = [];
  failures: InjectedFailure[] = [];
  /** Every request as "METHOD /path", polls included. */
  requests: string[] = [];
  /** While set, generations pause before chunk number `afterChunks` until `open` resolves (see {@link hold}). */
  #hold: { afterChunks: number; open: Promise<void> } | undefined;
  /** The model key being loaded, and when its load is over. */
  #loading: { key: string; done: Promise<void> } | undefined;
  /** When each request reached the handler, before its body was read: a generation's arrivedMs. */
  #receivedAt = new WeakMap<Request, number>();
  /** Resolves waiters each time a generation request arrives. */
  #arrivals: Array<(seen: SeenRequest) => void> = [];
  #server: Server<undefined> | undefined;
  #port: number;

  constructor(options: FakeOllamaOptions = {}) {
    this.models = (options.models ?? ["llama3.2:latest", "qwen3:latest", "mistral:latest", "gemma3:latest"]).map(normalize);
    this.embedModels = (options.embedModels ?? ["all-minilm:latest"]).map(normalize);
    this.loadDelayMs = options.loadDelayMs ?? 0;
    this.tokenDelayMs = options.tokenDelayMs ?? 0;
    this.modelDelays = options.modelDelays ?? {};
    this.finalDelayMs = options.finalDelayMs ?? 0;
    this.embedDelayMs = options.embedDelayMs ?? 0;
    this.pullDelayMs = options.pullDelayMs ?? 0;
    this.parallel = options.parallel ?? { slots: 1, slowdown: 1 };
    this.#port = options.port ?? 0;
  }

  get url(): string {
    return `http://127.0.0.1:${this.#port}`;
  }

  get port(): number {
    return this.#port;
  }

  /** Generation requests seen so far. */
  get generations(): SeenRequest[] {
    return this.seen;
  }

  start(): this {
    this.#server = Bun.serve({
      hostname: "127.0.0.1",
      port: this.#port,
      idleTimeout: 0,
      fetch: (request) => this.#route(request),
    });
    this.#port = this.#server.port!;
    return this;
  }

  /** Stops answering (an outage); `start()` again brings it back on the same port. */
  async stop(): Promise<void> {
    await this.#server?.stop(true);
    this.#server = undefined;
  }

  /** Resolves when the next generation request arrives. */
  nextArrival(): Promise<SeenRequest> {
    return new Promise((resolve) => this.#arrivals.push(resolve));
  }

  /**
   * Holds the GPU: every generation from now on pauses before streaming chunk number `afterChunks`
   * (0: before any output; a non-streamed one before it answers) until the returned function is called.
   * Tests hold a job running this way instead of making tokens slow.
   */
  hold(afterChunks = 0): () => void {
    let open!: () => void;
    const hold = { afterChunks, open: new Promise<void>((resolve) => (open = resolve)) };
    this.#hold = hold;
    return () => {
      if (this.#hold === hold) this.#hold = undefined;
      open();
    };
  }

  async #route(request: Request): Promise<Response> {
    this.#receivedAt.set(request, performance.now());
    const path = new URL(request.url).pathname;
    const method = request.method;
    this.requests.push(`${method} ${path}`);
    if (path === "/" && (method === "GET" || method === "HEAD")) {
      return new Response(method === "HEAD" ? null : "Ollama is running", {
        headers: { "content-type": "text/plain; charset=utf-8" },
      });
    }
    if (path === "/api/version" && (method === "GET" || method === "HEAD")) return json({ version: "0.12.6" });
    // Not Ollama's: the serving log, for a benchmark that runs the fake as a process of its own.
    if (path === "/_fake/log" && method === "GET") {
      return json({
        swaps: this.swaps,
        maxInFlight: this.maxInFlight,
        violations: this.violations,
        // The prompt alone of each body: a benchmark's job names itself in it.
        seen: this.seen.map(({ body, headers, ...rest }) => ({ ...rest, prompt: body.prompt })),
      });
    }
    if (path === "/api/tags" && (method === "GET" || method === "HEAD")) {
      return json({ models: [...this.models, ...this.embedModels].map(tagEntry) });
    }
    if (path === "/api/ps" && method === "GET") return json({ models: this.#running() });
    if (path.startsWith("/v1/messages")) return (await handleAnthropic(this, request, path)) ?? notFound();
    if (path.startsWith("/v1/")) return (await handleOpenAI(this, request, path)) ?? notFound();
    const managed = await handleModelManagement(this, request, path);
    if (managed) return managed;
    if (method === "POST") {
      const text = await request.text();
      if (!text) return json({ error: "missing request body" }, 400);
      let body: Record<string, unknown>;
      try {
        body = JSON.parse(text);
      } catch (error) {
        return json({ error: (error as Error).message }, 400);
      }
      // Ollama binds the body into a struct: JSON that is not an object is its decoder's 400, not a crash.
      if (!body || typeof body !== "object" || Array.isArray(body))
        return json({ error: "request body must be a JSON object" }, 400);
      switch (path) {
        case "/api/chat":
        case "/api/generate":
          return this.generate(path, body, request);
        case "/api/embed":
          return this.embed(body, false);
        case "/api/embeddings":
          return this.embed(body, true);
        case "/api/show": {
          const model = String(body.model ?? body.name ?? "");
          if (!model) return json({ error: "model is required" }, 400);
          if (!this.has(model)) return json({ error: `model '${model}' not found` }, 404);
          return json({
            modelfile: "# fake",
            parameters: "",
            template: "{{ .Prompt }}",
            details: tagEntry(normalize(model)).details,
            model_info: {},
            capabilities: this.embedModels.includes(normalize(model)) ? ["embedding"] : ["completion", "tools"],
            modified_at: "2025-01-01T00:00:00Z",
          });
        }
      }
    }
    return notFound();
  }

  /** The model's delay per token now: slowed by the parallel mode's factor while another generation shares the GPU. */
  #tokenDelay(model: string): number {
    const base = this.modelDelays[normalize(model)]?.tokenMs ?? this.tokenDelayMs;
    return this.inFlight > 1 ? base * this.parallel.slowdown : base;
  }

  /** Whether the fake has this model (chat or embedding), by its normalized name. */
  has(model: string): boolean {
    const name = normalize(model);
    return this.models.includes(name) || this.embedModels.includes(name);
  }

  #running() {
    const running = this.loaded ? [this.loaded.split(" ")[0]!] : [];
    return running.map((name) => ({
      ...tagEntry(name),
      expires_at: new Date(Date.now() + 300_000).toISOString(),
      size_vram: 2019393189,
      context_length: 4096,
    }));
  }

  /** /api/embed (or the legacy /api/embeddings): the /v1/embeddings adapter calls it too. */
  async embed(body: Record<string, unknown>, legacy: boolean): Promise<Response> {
    const model = String(body.model ?? "");
    if (!model) return json({ error: "model is required" }, 400);
    if (!this.has(model)) return json({ error: `model "${model}" not found, try pulling it first` }, 404);
    this.embeds.push(body);
    this.embedInFlight++;
    this.maxEmbedInFlight = Math.max(this.maxEmbedInFlight, this.embedInFlight);
    try {
      if (this.embedDelayMs) await Bun.sleep(this.embedDelayMs);
      const vector = (text: string) => {
        const raw = [text.length + 1, 1, 2].map((n) => n / 10);
        const norm = Math.hypot(...raw);
        return raw.map((v) => v / norm);
      };
      if (legacy) return json({ embedding: body.prompt ? vector(String(body.prompt)) : [] });
      const input = body.input;
      if (
        input !== undefined &&
        typeof input !== "string" &&
        !(Array.isArray(input) && input.every((i) => typeof i === "string"))
      ) {
        return json({ error: "invalid input type" }, 400);
      }
      const inputs = input === undefined || input === "" ? [] : Array.isArray(input) ? input : [input];
      if (inputs.length === 0) return json({ model, embeddings: [] });
      return json({
        model,
        embeddings: inputs.map(vector),
        total_duration: 14143917,
        load_duration: 1019500,
        prompt_eval_count: 8,
      });
    } finally {
      this.embedInFlight--;
    }
  }

  /**
   * /api/chat or /api/generate on the one simulated GPU. The /v1 and /v1/messages adapters call it with
   * the native body they made, as Ollama's middleware does, and their own route and body as `client`
   * (what `seen` records).
   */
  async generate(
    path: "/api/chat" | "/api/generate",
    body: Record<string, unknown>,
    request: Request,
    client: { path: string; body: Record<string, unknown> } = { path, body },
  ): Promise<Response> {
    const chat = path === "/api/chat";
    const model = typeof body.model === "string" ? body.model : "";
    if (!model) return chat ? json({ error: "model is required" }, 400) : json({ error: "model '' not found" }, 404);
    if (!this.models.includes(normalize(model))) return json({ error: `model '${model}' not found` }, 404);
    const options = (body.options ?? {}) as Record<string, unknown>;
    const key = [
      normalize(model),
      ...LOAD_OPTIONS.filter((o) => options[o] !== undefined).map((o) => `${o}=${JSON.stringify(options[o])}`),
    ].join(" ");
    const seen: SeenRequest = {
      path: client.path,
      model,
      key,
      body: client.body,
      headers: Object.fromEntries(request.headers),
      startedAt: Date.now(),
      arrivedMs: this.#receivedAt.get(request) ?? performance.now(),
      swapped: false,
      inFlight: this.inFlight + 1,
    };
    this.seen.push(seen);
    for (const resolve of this.#arrivals.splice(0)) resolve(seen);

    const others = [...this.inFlightByKey.keys()].filter((k) => k !== key);
    if (others.length) this.violations.push(`${key} while ${others.join(", ")} in flight`);
    if (this.inFlight + 1 > this.parallel.slots) {
      this.violations.push(`${this.inFlight + 1} generations at once (slots ${this.parallel.slots})`);
    }
    this.inFlight++;
    this.inFlightByKey.set(key, (this.inFlightByKey.get(key) ?? 0) + 1);
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    let released = false;
    const release = (aborted = false) => {
      if (released) return;
      released = true;
      this.inFlight--;
      const left = (this.inFlightByKey.get(key) ?? 1) - 1;
      if (left > 0) this.inFlightByKey.set(key, left);
      else this.inFlightByKey.delete(key);
      seen.servedMs = performance.now();
      seen.endedAt = Date.now();
      seen.aborted = aborted;
    };
    request.signal.addEventListener("abort", () => release(true), { once: true });

    const failure = this.failures.shift();
    if (failure?.kind === "status") {
      release();
      return json({ error: failure.error }, failure.status);
    }
    const started = performance.now();
    if (this.#loading?.key === key) {
      // Parallel mode: a second request for the model being loaded waits for that one load, as Ollama's does.
      await this.#loading.done;
    }
    if (this.loaded !== key) {
      seen.swapped = true;
      this.swaps++;
      const loadDelayMs = this.modelDelays[normalize(model)]?.loadMs ?? this.loadDelayMs;
      let loaded!: () => void;
      const loading = { key, done: new Promise<void>((resolve) => (loaded = resolve)) };
      this.#loading = loading;
      if (loadDelayMs) await Bun.sleep(loadDelayMs);
      if (this.#loading === loading) this.#loading = undefined;
      loaded();
      // A load whose request went away is abandoned, as a canceled schedule is in Ollama.
      if (request.signal.aborted) return new Response(null, { status: 499 });
      this.loaded = key;
    }
    const loadNs = Math.round((performance.now() - started) * 1e6) + 1_000_000;
    const messages = (body.messages ?? []) as unknown[];
    const isLoad = chat ? messages.length === 0 : !body.prompt;
    const base = (extra: Record<string, unknown>) =>
      chat
        ? { model, created_at: now(), message: { role: "assistant", content: extra.text as string }, done: extra.done }
        : { model, created_at: now(), response: extra.text as string, done: extra.done };

    if (isLoad) {
      release();
      const unload = body.keep_alive === 0;
      if (unload) this.loaded = null;
      return json({ ...base({ text: "", done: true }), done_reason: unload ? "unload" : "load" });
    }

    const hold = this.#hold;
    const { prompt, tokens, toolCalls } = fakeReply(body, chat);
    // Tool calls arrive in one chunk of their own after the text, as Ollama streams them.
    const chunkCount = tokens.length + (toolCalls.length ? 1 : 0);
    const final = () => ({
      ...base({ text: "", done: true }),
      done_reason: "stop",
      ...(chat ? {} : { context: [1, 2, 3] }),
      total_duration: Math.round((performance.now() - started) * 1e6) + 2_000_000,
      load_duration: loadNs,
      prompt_eval_count: prompt.length,
      prompt_eval_duration: 1_000_000,
      eval_count: chunkCount,
      eval_duration: chunkCount * 1_000_000,
    });

    if (body.stream === false) {
      await hold?.open;
      for (let i = 0; i < chunkCount && this.#tokenDelay(model); i++) await Bun.sleep(this.#tokenDelay(model));
      release();
      // Without streaming, a failure during generation is an ordinary error status (reference §7.3).
      if (failure?.kind === "mid-stream") return json({ error: failure.error }, 500);
      if (failure?.kind === "drop") {
        // controller.error() without a reason drops the connection without Bun printing a stack trace.
        return new Response(new ReadableStream({ pull: (controller) => controller.error() }), { headers: JSON_UTF8 });
      }
      const done = final();
      if (chat) {
        const message = (done as { message: Record<string, unknown> }).message;
        message.content = tokens.join("");
        if (toolCalls.length) message.tool_calls = toolCalls;
      } else (done as { response: string }).response = tokens.join("");
      return json(done);
    }

    const encoder = new TextEncoder();
    const tokenDelay = () => this.#tokenDelay(model);
    const finalDelayMs = this.finalDelayMs;
    let index = 0;
    const stream = new ReadableStream<Uint8Array>({
      async pull(controller) {
        if (hold && index === hold.afterChunks) await hold.open;
        if (request.signal.aborted) return;
        if (failure && index === failure.afterChunks) {
          release();
          if (failure.kind === "mid-stream") {
            controller.enqueue(encoder.encode(`${JSON.stringify({ error: failure.error })}\n`));
            controller.close();
          } else {
            // Let what was enqueued reach the wire first, so the break comes after those chunks.
            if (index > 0) await Bun.sleep(30);
            controller.error();
          }
          return;
        }
        if (index < chunkCount) {
          const tokenDelayMs = tokenDelay();
          if (tokenDelayMs && index > 0) await Bun.sleep(tokenDelayMs);
          const chunk = base({ text: tokens[index] ?? "", done: false });
          if (index === tokens.length) (chunk as { message: Record<string, unknown> }).message.tool_calls = toolCalls;
          controller.enqueue(encoder.encode(`${JSON.stringify(chunk)}\n`));
          index++;
          return;
        }
        controller.enqueue(encoder.encode(`${JSON.stringify(final())}\n`));
        release();
        if (finalDelayMs) await Bun.sleep(finalDelayMs);
        controller.close();
      },
      cancel: () => release(true),
    });
    return new Response(stream, { headers: { "content-type": "application/x-ndjson" } });
  }
}

const notFound = () => new Response("404 page not found", { status: 404, headers: { "content-type": "text/plain" } });

/** A model as /api/tags lists it. */
export function tagEntry(name: string) {
  return {
    name,
    model: name,
    modified_at: "2025-05-04T17:37:44.706015396-07:00",
    size: 2019393189,
    digest: `sha256:${Bun.hash(name).toString(16).padStart(16, "0")}`,
    details: {
      parent_model: "",
      format: "gguf",
      family: "llama",
      families: ["llama"],
      parameter_size: "3.2B",
      quantization_level: "Q4_K_M",
    },
  };
}
