// Real records for the adapter tests: the same request sent to the fake Ollama streamed (as a watched
// job sends it) and whole, each cut into records as the worker cuts them.
import type { WireAdapter } from "../../src/adapters/adapter";
import { type Framing, framingFor, recordChunks, splitRecords } from "../../src/adapters/framing";
import type { FakeOllama } from "../fake-ollama";

/** An upstream answer as the worker sees it: its framing and its records. */
export interface UpstreamAnswer {
  framing: Framing;
  records: string[];
  /** The connection dropped before the body ended. */
  broken: boolean;
}

/** Posts `body` to the adapter's upstream route and cuts the answer into records as the runner does. */
export async function upstreamAnswer(fake: FakeOllama, adapter: WireAdapter, body: unknown): Promise<UpstreamAnswer> {
  const response = await fetch(`${fake.url}${adapter.upstreamPath}`, { method: "POST", body: JSON.stringify(body) });
  if (response.status !== 200) throw new Error(`fake answered ${response.status}: ${await response.text()}`);
  const framing = framingFor(response.headers.get("content-type") ?? "application/json");
  const decoder = new TextDecoder();
  const records: string[] = [];
  try {
    for await (const chunk of recordChunks(response.body!, framing))
      records.push(...splitRecords(decoder.decode(chunk), framing));
  } catch {
    // A dropped connection: the records that came are what the worker holds when it gives up.
    return { framing, records, broken: true };
  }
  return { framing, records, broken: false };
}

/** The same request streamed (the adapter's streaming body) and whole (`stream: false`). */
export async function bothAnswers(fake: FakeOllama, adapter: WireAdapter, body: Record<string, unknown>) {
  const streamed = await upstreamAnswer(fake, adapter, adapter.streamingBody(body));
  const whole = await upstreamAnswer(fake, adapter, { ...body, stream: false });
  return { streamed, whole };
}

const VARYING = new Set(["id", "created", "created_at", "completed_at", "call_id", "item_id"]);

/** A parsed body with what differs between two runs of one answer (ids, timestamps) blanked out. */
export function withoutIds(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(withoutIds);
  if (!value || typeof value !== "object") return value;
  return Object.fromEntries(Object.entries(value).map(([key, item]) => [key, VARYING.has(key) ? "…" : withoutIds(item)]));
}
