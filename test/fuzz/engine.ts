// The fuzzer behind test/fuzz/*.test.ts (a seeded short run) and `bun run fuzz` (100,000 cases): random
// and mutated requests over every route the app declares, sent over a real socket to a running foreman
// (in this process, or the compiled binary). Every answer must be 2xx-4xx, an error must be JSON in its
// API's shape, nothing may hang; afterwards the database holds exactly the jobs the answers announced,
// and `PRAGMA integrity_check` is ok.
import { Database } from "bun:sqlite";
import fc from "fast-check";
import { composeForeman, type JobLoop } from "../../src/compose";
import { loadConfig } from "../../src/config";
import { openDatabase } from "../../src/queue/db";
import { openJobTables } from "../../src/tables";
import { JobEventHub } from "../../src/worker/job-events";
import { capturingLogger } from "../in-process";

/** One request the fuzzer sends. */
export interface FuzzCase {
  method: string;
  path: string;
  query: string;
  headers: Record<string, string>;
  body: Uint8Array | undefined;
  /** Sent without a Content-Length, as a stream of pieces. */
  chunked: boolean;
}

/** What came back; `error` when no answer did (a dropped connection, a hang). */
export interface Outcome {
  status: number;
  contentType: string;
  text: string;
  jobId: string | null;
  error?: string;
}

/**
 * The routes as the app declares them (Elysia's `app.routes`), so a route added later is fuzzed too.
 * foreman is composed over a throwaway database and an idle loop; nothing is started or called.
 */
export function declaredRoutes(): Array<{ method: string; path: string }> {
  const db = openDatabase(":memory:");
  const log = capturingLogger("fuzz", []);
  const hub = new JobEventHub(log);
  const loop: JobLoop = {
    hub,
    onUnreachable: () => {},
    onAttemptFailed: () => {},
    setInventory: () => {},
    subscribe: (jobId, listener) => hub.subscribe(jobId, listener),
    subscribeAll: (listener) => hub.subscribeAll(listener),
    jobEnded: () => {},
    wake: () => {},
    cancel: () => {},
    clientGone: () => {},
  };
  try {
    return composeForeman(loadConfig({}), db, openJobTables(db), loop, () => log).routes;
  } finally {
    db.close();
  }
}

const MODELS = ["llama3.2", "qwen3:latest", "all-minilm", "no-such-model", ""];
const user = (content: string) => [{ role: "user", content }];

/** A valid body per route family, which mutation then breaks in one place or several. */
function template(path: string): Record<string, unknown> {
  if (path === "/jobs") return { type: "chat", request: { model: "llama3.2", messages: user("hi") }, priority: 0 };
  if (path === "/api/chat") return { model: "llama3.2", messages: user("hi"), stream: false };
  if (path === "/api/generate") return { model: "llama3.2", prompt: "hi", stream: false };
  if (path.includes("embed")) return { model: "all-minilm", input: "hi", prompt: "hi" };
  if (path === "/v1/chat/completions") return { model: "llama3.2", messages: user("hi") };
  if (path === "/v1/completions") return { model: "llama3.2", prompt: "hi" };
  if (path === "/v1/responses") return { model: "llama3.2", input: "hi" };
  if (path === "/v1/messages") return { model: "llama3.2", max_tokens: 16, messages: user("hi") };
  if (path === "/api/copy") return { source: "llama3.2", destination: "copied" };
  if (path === "/api/create") return { model: "created", from: "llama3.2", stream: false };
  return { model: "llama3.2", stream: false };
}

const loneSurrogates = fc.constantFrom("\ud800", "a\udfffb", "\udc00\ud800", "x\ud83d");
const hugeNumbers = fc.constantFrom(1e308, -1e308, Number.MAX_SAFE_INTEGER + 2, -0, 5e-324, 2 ** 64);
const weirdStrings = fc.oneof(
  fc.string({ maxLength: 40 }),
  fc.string({ unit: "binary", maxLength: 40 }),
  loneSurrogates,
  fc.constantFrom("", " ", "\u0000", "null", "../../etc/passwd", "%00", "\u202e", "💥".repeat(50)),
);
const anyValue: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 4, arbitrary: fc.jsonValue({ maxDepth: 3 }) },
  { weight: 2, arbitrary: weirdStrings },
  { weight: 1, arbitrary: hugeNumbers },
  { weight: 1, arbitrary: fc.constantFrom(MODELS) },
  { weight: 1, arbitrary: fc.constantFrom(true, false, null, [], {}, -1, 0, 1, 1.5, "5") },
);

/** A template with one to three fields set to anything, deleted, or added. */
function mutated(path: string): fc.Arbitrary<Record<string, unknown>> {
  const base = template(path);
  const keys = [...Object.keys(base), "options", "format", "tools", "stream", "keep_alive", "priority", "webhook", "extra"];
  const edit = fc.tuple(fc.constantFrom(...keys), fc.constantFrom("set", "delete", "nest"), anyValue);
  return fc.array(edit, { minLength: 0, maxLength: 3 }).map((edits) => {
    const body: Record<string, unknown> = structuredClone(base);
    for (const [key, how, shared] of edits) {
      // fc.constantFrom hands out the same [] and {} each time: a copy, or nesting could make a cycle.
      const value = structuredClone(shared);
      if (how === "delete") delete body[key];
      else if (how === "set") body[key] = value;
      else if (body[key] && typeof body[key] === "object") body[key] = { ...(body[key] as object), mutant: value };
      else body[key] = { value };
    }
    return body;
  });
}

const encoder = new TextEncoder();
/** Bytes that are not UTF-8: a stray continuation byte, an overlong form, a truncated sequence, a surrogate. */
const INVALID_UTF8 = [[0x80], [0xc0, 0xaf], [0xe2, 0x82], [0xed, 0xa0, 0x80], [0xff, 0xfe]];

function withInvalidUtf8(text: string, at: number, which: number): Uint8Array {
  const bytes = encoder.encode(text);
  const i = Math.min(bytes.length, at);
  const bad = INVALID_UTF8[which % INVALID_UTF8.length]!;
  return new Uint8Array([...bytes.subarray(0, i), ...bad, ...bytes.subarray(i)]);
}

/** Bodies: mutated templates (JSON, duplicate keys, invalid UTF-8), garbage, deep nesting, huge literals. */
function bodyArb(path: string): fc.Arbitrary<Uint8Array | undefined> {
  const json = mutated(path).map((body) => JSON.stringify(body));
  return fc.oneof(
    { weight: 8, arbitrary: json.map((text) => encoder.encode(text)) },
    { weight: 1, arbitrary: fc.constant(undefined) },
    // Duplicate keys: the last one wins in JSON.parse; the first is a different model or type.
    { weight: 1, arbitrary: json.map((text) => encoder.encode(`{"model":"no-such-model","type":"generate",${text.slice(1)}`)) },
    {
      weight: 1,
      arbitrary: fc
        .tuple(json, fc.nat(), fc.nat())
        .map(([text, at, which]) => withInvalidUtf8(text, at % (text.length + 1), which)),
    },
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: 200 }) },
    { weight: 1, arbitrary: fc.string({ maxLength: 200 }).map((text) => encoder.encode(text)) },
    {
      weight: 1,
      arbitrary: fc.tuple(fc.integer({ min: 1, max: 100_000 }), fc.constantFrom("[", '{"a":')).map(([depth, open]) => {
        const close = open === "[" ? "]" : "}";
        return encoder.encode(`${open.repeat(depth)}1${close.repeat(depth)}`);
      }),
    },
    {
      weight: 1,
      arbitrary: fc
        .constantFrom("1e999", "-1e999", "123456789012345678901234567890", "0.0000000000000000000000001e-400", "NaN", "Infinity")
        .map((n) => encoder.encode(JSON.stringify(template(path)).replace(/}$/, `,"n":${n},"priority":${n}}`))),
    },
    { weight: 1, arbitrary: fc.json({ maxDepth: 4 }).map((text) => encoder.encode(text)) },
  );
}

const CONTENT_TYPES = [
  "application/json",
  "application/json; charset=utf-8",
  "text/plain",
  "application/x-www-form-urlencoded",
  "multipart/form-data; boundary=xyz",
  "application/octet-stream",
  "application/json; charset=utf-16",
  "image/png",
  "",
];
const headerValue = fc.string({ unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)), maxLength: 30 });

/** Zero to two headers, each a likely one with a random value or a plain one: most requests keep reaching the routes. */
function headersArb(): fc.Arbitrary<Record<string, string>> {
  const entry = fc.oneof(
    fc.tuple(fc.constant("content-type"), fc.oneof(fc.constantFrom(...CONTENT_TYPES), headerValue)),
    fc.tuple(fc.constant("x-foreman-priority"), fc.oneof(fc.integer({ min: -2000, max: 2000 }).map(String), headerValue)),
    fc.tuple(fc.constant("authorization"), fc.oneof(fc.constant("Bearer x"), headerValue)),
    fc.tuple(
      fc.constant("origin"),
      fc.oneof(fc.constantFrom("http://localhost", "https://evil.example", "null", "app://x"), headerValue),
    ),
    fc.tuple(fc.constant("accept"), fc.constantFrom("*/*", "text/event-stream", "application/json")),
    fc.tuple(fc.constant("x-custom"), headerValue),
  );
  return fc.array(entry, { maxLength: 2 }).map((entries) => Object.fromEntries(entries.filter(([, value]) => value !== "")));
}

const QUERY_KEYS = ["state", "model", "type", "limit", "cursor", "include", "stream", "x"];
const queryValue = fc.oneof(
  fc.constantFrom(
    "queued",
    "done",
    "chat",
    "0",
    "-1",
    "501",
    "1e3",
    "%zz",
    "%ff%fe",
    "request,result",
    "01ARZ3NDEKTSV4RRFFQ69G5FAV",
  ),
  fc.string({ maxLength: 20 }).map(encodeURIComponent),
);
const queryArb = fc
  .array(fc.tuple(fc.constantFrom(...QUERY_KEYS), queryValue), { maxLength: 3 })
  .map((pairs) => (pairs.length ? `?${pairs.map(([k, v]) => `${k}=${v}`).join("&")}` : ""));

const METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];
const segment = fc.oneof(
  fc.constantFrom(
    "api",
    "v1",
    "jobs",
    "..",
    "%2e%2e",
    "%00",
    "%ff",
    "a%2Fb",
    "swagger",
    "queue",
    "metrics",
    "ui",
    "batches",
    "files",
  ),
  fc.string({ maxLength: 12 }).map(encodeURIComponent),
);

/** Fills a route's `:params` and `*`: a job id seen earlier, a well-formed unknown one, or anything. */
function fillParams(path: string, ids: readonly string[]): fc.Arbitrary<string> {
  const names = path.match(/:[a-z]+|\*/gi) ?? [];
  if (names.length === 0) return fc.constant(path);
  const value = fc.oneof(
    fc.nat().map((i) => ids[i % Math.max(1, ids.length)] ?? "01ARZ3NDEKTSV4RRFFQ69G5FAV"),
    fc.constantFrom("01ARZ3NDEKTSV4RRFFQ69G5FAV", "result.json", "stream.ndjson", "sha256:abc", "llama3.2", "x"),
    segment,
  );
  return fc.array(value, { minLength: names.length, maxLength: names.length }).map((values) => {
    let i = 0;
    return path.replace(/:[a-z]+|\*/gi, () => values[i++]!);
  });
}

/** Any request: mostly a declared route with its method, sometimes another method or a path no route has. */
export function caseArb(routes: ReadonlyArray<{ method: string; path: string }>, ids: readonly string[]): fc.Arbitrary<FuzzCase> {
  const declared = fc.constantFrom(...routes).chain((route) =>
    fc.record({
      method: fc.oneof(
        { weight: 6, arbitrary: fc.constant(route.method) },
        { weight: 1, arbitrary: fc.constantFrom(...METHODS) },
      ),
      path: fillParams(route.path, ids),
      query: queryArb,
      headers: headersArb(),
      body: bodyArb(route.path),
      chunked: fc.oneof({ weight: 4, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
    }),
  );
  const stray = fc.record({
    method: fc.constantFrom(...METHODS),
    path: fc.array(segment, { minLength: 1, maxLength: 4 }).map((parts) => `/${parts.join("/")}`),
    query: queryArb,
    headers: headersArb(),
    body: bodyArb("/"),
    chunked: fc.constant(false),
  });
  return fc.oneof({ weight: 9, arbitrary: declared }, { weight: 1, arbitrary: stray });
}

/** The big cases every run sends once per body-taking route: 10 MB strings, in valid JSON and in garbage. */
export function bigCases(routes: ReadonlyArray<{ method: string; path: string }>): FuzzCase[] {
  const ten = "x".repeat(10 * 1024 * 1024);
  const cases: FuzzCase[] = [];
  for (const route of routes) {
    if (route.method !== "POST" || route.path.includes(":")) continue;
    const body = template(route.path);
    for (const key of ["prompt", "input", "model", "content"]) body[key] = ten;
    cases.push({
      method: "POST",
      path: route.path,
      query: "",
      headers: {},
      body: encoder.encode(JSON.stringify(body)),
      chunked: false,
    });
    cases.push({ method: "POST", path: route.path, query: "", headers: {}, body: encoder.encode(`"${ten}`), chunked: true });
  }
  return cases;
}

/** Sends one case; an SSE answer is read to its first event only (a job's watch stays open while it waits). */
export async function send(base: string, c: FuzzCase, timeoutMs = 30_000): Promise<Outcome> {
  const noBody = c.method === "GET" || c.method === "HEAD";
  const bytes = noBody ? undefined : c.body;
  const body =
    bytes && c.chunked
      ? new ReadableStream<Uint8Array>({
          start(controller) {
            for (let i = 0; i < bytes.length; i += 65_536) controller.enqueue(bytes.subarray(i, i + 65_536));
            controller.close();
          },
        })
      : bytes;
  try {
    const response = await fetch(`${base}${c.path}${c.query}`, {
      method: c.method,
      headers: c.headers,
      body: body as BodyInit | undefined,
      signal: AbortSignal.timeout(timeoutMs),
    });
    const contentType = response.headers.get("content-type") ?? "";
    let text: string;
    if (contentType.startsWith("text/event-stream") && response.body) {
      const reader = response.body!.getReader();
      const first = await reader.read();
      void reader.cancel();
      text = first.value ? new TextDecoder().decode(first.value) : "";
    } else {
      text = await response.text();
    }
    return { status: response.status, contentType, text, jobId: response.headers.get("x-foreman-job-id") };
  } catch (error) {
    return { status: 0, contentType: "", text: "", jobId: null, error: (error as Error).message };
  }
}

/** What is wrong with an answer, or undefined. */
export function violation(c: FuzzCase, outcome: Outcome): string | undefined {
  if (outcome.error) return `no answer: ${outcome.error}`;
  if (outcome.status >= 500) return `${outcome.status}: ${outcome.text.slice(0, 300)}`;
  if (outcome.status < 200) return `status ${outcome.status}`;
  if (outcome.status >= 400 && c.method !== "HEAD") {
    if (!outcome.contentType.includes("json")) return `${outcome.status} without a JSON body: ${outcome.contentType}`;
    let parsed: unknown;
    try {
      parsed = JSON.parse(outcome.text);
    } catch {
      return `${outcome.status} with a body that is not JSON: ${outcome.text.slice(0, 200)}`;
    }
    if (!parsed || typeof parsed !== "object" || !("error" in parsed))
      return `${outcome.status} without an error: ${outcome.text.slice(0, 200)}`;
  }
  return undefined;
}

/** The jobs the answers announced: every generation answer's X-Foreman-Job-Id, every POST /jobs id. */
export class Ledger {
  readonly ids = new Set<string>();
  /** Ids in the order seen, for path parameters. */
  readonly list: string[] = [];

  record(c: FuzzCase, outcome: Outcome): void {
    let id = outcome.jobId;
    if (!id && c.method === "POST" && c.path === "/jobs" && outcome.status < 300) {
      id = (JSON.parse(outcome.text) as { id: string }).id;
    }
    if (id && !this.ids.has(id)) (this.ids.add(id), this.list.push(id));
  }
}

/** Runs `numRuns` random cases plus the big ones against `base`; returns the violations found (none is a pass). */
export async function fuzz(
  base: string,
  {
    numRuns,
    seed,
    big = true,
    onProgress,
  }: { numRuns: number; seed: number; big?: boolean; onProgress?: (done: number) => void },
): Promise<{ violations: string[]; ledger: Ledger; cases: number; statuses: Record<number, number> }> {
  const routes = declaredRoutes();
  const ledger = new Ledger();
  const violations: string[] = [];
  const statuses: Record<number, number> = {};
  let cases = 0;
  const check = async (c: FuzzCase) => {
    const outcome = await send(base, c);
    cases++;
    statuses[outcome.status] = (statuses[outcome.status] ?? 0) + 1;
    if (cases % 1000 === 0) onProgress?.(cases);
    ledger.record(c, outcome);
    const wrong = violation(c, outcome);
    if (wrong && violations.length < 50) {
      const body = c.body ? new TextDecoder().decode(c.body.subarray(0, 300)) : "";
      violations.push(`${c.method} ${c.path}${c.query} ${JSON.stringify(c.headers)} body ${JSON.stringify(body)}: ${wrong}`);
    }
  };
  if (big) for (const c of bigCases(routes)) await check(c);
  await fc.assert(
    fc.asyncProperty(caseArb(routes, ledger.list), async (c) => {
      await check(c);
    }),
    { numRuns, seed, endOnFailure: true },
  );
  return { violations, ledger, cases, statuses };
}

/** After a run: the jobs the database holds that no answer announced, those announced but missing, and the integrity check. */
export function auditDatabase(
  dbPath: string,
  ledger: Ledger,
): { unannounced: string[]; missing: string[]; integrity: string; countsMatch: boolean } {
  const db = new Database(dbPath, { readonly: true });
  try {
    const stored = new Set(
      db
        .query<{ id: string }, []>("SELECT id FROM jobs")
        .all()
        .map((row) => row.id),
    );
    const integrity = db.query<{ integrity_check: string }, []>("PRAGMA integrity_check").get()!.integrity_check;
    const queued = db.query<{ n: number }, []>("SELECT count(*) AS n FROM jobs WHERE state = 'queued'").get()!.n;
    const counted = db.query<{ n: number }, []>("SELECT coalesce(sum(n), 0) AS n FROM queued_counts").get()!.n;
    return {
      unannounced: [...stored].filter((id) => !ledger.ids.has(id)),
      missing: [...ledger.ids].filter((id) => !stored.has(id)),
      integrity,
      countsMatch: queued === counted,
    };
  } finally {
    db.close();
  }
}
