/** What Elysia's VALIDATION error carries that the message is made from. */
export interface ValidationFailure {
  type?: string;
  value?: unknown;
  customError?: unknown;
  valueError?: { path: string; message: string; value?: unknown; schema?: Schema };
}

/** The JSON Schema keywords read here (TypeBox schemas are JSON Schema). */
interface Schema {
  type?: string;
  const?: unknown;
  anyOf?: Schema[];
  minimum?: number;
  maximum?: number;
  minLength?: number;
  maxLength?: number;
  pattern?: string;
  format?: string;
  description?: string;
  title?: string;
}

/**
 * Human words for the string patterns of the API's schemas, so an error names the format instead of a
 * regular expression. Keyed by the pattern itself: a schema's pattern and its explanation cannot drift apart.
 */
const PATTERN_WORDS = new Map<string, string>();

/** Registers what `pattern` means in words ("a ULID", …), for validation errors; returns the pattern. */
export function describedPattern(pattern: string, words: string): string {
  PATTERN_WORDS.set(pattern, words);
  return pattern;
}

/**
 * One line in Ollama's error style saying which field is wrong and what is allowed, e.g.
 * `invalid field "priority": must be an integer from -1000 to 1000, not 5000`.
 */
export function validationMessage(error: ValidationFailure): string {
  if (typeof error.customError === "string") return error.customError;
  // "property": Elysia's t.Integer/t.Numeric turned a query string into a number that then failed its bounds.
  // That error has no path, so such a schema names itself with `title`.
  const where =
    error.type === "query" || error.type === "property"
      ? "query parameter"
      : error.type === "params"
        ? "path parameter"
        : "field";
  const detail = error.valueError;
  if (!detail) return `invalid ${error.type ?? "request"}`;
  const name = detail.path.replace(/^\//, "").replaceAll("/", ".") || detail.schema?.title;
  if (!name) return `invalid request body: ${lowerFirst(detail.message)}`;
  const allowed = detail.schema ? describeAllowed(detail.schema) : lowerFirst(detail.message);
  // A bare type says little: add what the field is for, "must be an object, not "hi" (The Ollama request body…)".
  const bare = /^must be an? \w+$/.test(allowed);
  const hint = bare && detail.schema?.description ? ` (${detail.schema.description})` : "";
  if (detail.value === undefined) return `missing ${where} "${name}": it is required and ${allowed}${hint}`;
  return `invalid ${where} "${name}": ${allowed}, not ${shortJson(detail.value)}${hint}`;
}

/** "must be …" for a schema: the values of an enumeration, a number's range, a string's length or format. */
export function describeAllowed(schema: Schema): string {
  const literals = schema.anyOf?.map((member) => member.const);
  if (literals?.length && literals.every((value) => value !== undefined)) {
    return `must be ${orList(literals.map((value) => JSON.stringify(value)))}`;
  }
  // Elysia's t.Integer and t.Numeric are unions with a numeric string (for query strings): the number counts.
  const numeric = schema.anyOf?.find((member) => member.type === "integer" || member.type === "number");
  if (numeric) return describeAllowed(numeric);
  if (schema.anyOf?.length) return `must be ${orList([...new Set(schema.anyOf.map((member) => article(member.type)))])}`;

  switch (schema.type) {
    case "integer":
    case "number": {
      const { minimum: min, maximum: max } = schema;
      const bounds =
        min !== undefined && max !== undefined
          ? ` from ${min} to ${max}`
          : min !== undefined
            ? ` of ${min} or more`
            : max !== undefined
              ? ` of ${max} or less`
              : "";
      return `must be ${article(schema.type)}${bounds}`;
    }
    case "string": {
      if (schema.pattern !== undefined) {
        const words = PATTERN_WORDS.get(schema.pattern);
        return `must be ${words ?? `a string matching ${schema.pattern}`}`;
      }
      const { minLength: min, maxLength: max } = schema;
      if (min !== undefined && max !== undefined) return `must be a string of ${min} to ${max} characters`;
      if (min === 1) return "must be a non-empty string";
      if (min !== undefined) return `must be a string of at least ${min} characters`;
      if (max !== undefined) return `must be a string of at most ${max} characters`;
      return "must be a string";
    }
    case undefined:
      return "is not valid";
    default:
      return `must be ${article(schema.type)}`;
  }
}

function article(type: string | undefined): string {
  if (type === "integer" || type === "object" || type === "array") return `an ${type}`;
  if (type === "null") return "null";
  return `a ${type ?? "value"}`;
}

function orList(items: string[]): string {
  if (items.length <= 1) return items.join("");
  if (items.length === 2) return `${items[0]} or ${items[1]}`;
  return `one of ${items.slice(0, -1).join(", ")} or ${items.at(-1)}`;
}

function shortJson(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 40 ? `${text.slice(0, 37)}...` : text;
}

function lowerFirst(text: string): string {
  return text.charAt(0).toLowerCase() + text.slice(1);
}
