import type { WireAdapter } from "./adapter";
import { errorBody } from "./error-shapes";
import type { Framing } from "./framing";
import { sseJson, wholeError, wholeIsFinal } from "./sse-json";

/** The sentinel that ends an OpenAI chat or completion stream. */
const DONE = "data: [DONE]";

/**
 * What /v1/chat/completions and /v1/completions share: `data:` frames without event names, ended by
 * `data: [DONE]`, a failure told as a frame holding an `error` (the openai SDK throws on one), and a
 * job's stream asks for the usage frame so its answer can carry usage.
 */
export const openaiDataStream = {
  streamingBody: (body: Record<string, unknown>) => ({
    ...body,
    stream: true,
    stream_options: { ...(body.stream_options as object | null | undefined), include_usage: true },
  }),
  isFinal: (record: string, framing: Framing) => (framing === "whole" ? wholeIsFinal(record) : record.trimEnd() === DONE),
  recordError(record: string, framing: Framing) {
    if (framing === "whole") return wholeError(record);
    // Only a key can put "error": unescaped in a frame; a text delta that says it is escaped.
    if (!record.includes('"error":')) return undefined;
    const error = sseJson(record).json?.error;
    if (typeof error === "string") return error;
    const message = (error as { message?: unknown } | null | undefined)?.message;
    return typeof message === "string" ? message : undefined;
  },
  failureRecord(message: string, framing: Framing) {
    const body = JSON.stringify(errorBody("openai", 500, message));
    return framing === "whole" ? body : `data: ${body}\n\n`;
  },
} satisfies Partial<WireAdapter>;
