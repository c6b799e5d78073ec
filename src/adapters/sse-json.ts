import { errorText } from "./error-shapes";
import { parseSseRecord, tryJson } from "./framing";

/** A JSON object as a plain record. */
export type Json = Record<string, unknown>;

/** The value as a JSON object, or undefined when it is not one. */
export function asObject(value: unknown): Json | undefined {
  return value && typeof value === "object" && !Array.isArray(value) ? (value as Json) : undefined;
}

/** The `event:` name of a Server-Sent Event, read from its first line only (cheap: no parse of the data). */
export function sseEventName(record: string): string | undefined {
  if (!record.startsWith("event:")) return undefined;
  const end = record.indexOf("\n");
  return record.slice(6, end < 0 ? undefined : end).trim();
}

/** A Server-Sent Event's name and its `data:` parsed as a JSON object (undefined when it is not one). */
export function sseJson(record: string): { event: string | undefined; data: string; json: Json | undefined } {
  const { event, data } = parseSseRecord(record);
  return { event, data, json: asObject(tryJson(data)) };
}

/** The answer that came as one body: final when it is a JSON object that is not an error. */
export function wholeIsFinal(record: string): boolean {
  const body = asObject(tryJson(record));
  return body !== undefined && errorText(body) === undefined;
}

/** The error text of a whole body that is an error in any API's shape. */
export function wholeError(record: string): string | undefined {
  return record.includes('"error"') ? errorText(tryJson(record)) : undefined;
}

/** A whole answer kept as it came, exact bytes; IncompleteAnswerError-worthy when it is not a complete JSON object. */
export function wholeBody(records: readonly string[]): string | undefined {
  return records.length === 1 && wholeIsFinal(records[0]!) ? records[0]! : undefined;
}
