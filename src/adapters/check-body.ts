import type { TSchema } from "@sinclair/typebox";
import { TypeCompiler } from "@sinclair/typebox/compiler";
import { type ValueError, ValueErrorType } from "@sinclair/typebox/errors";
import { BadRequestError } from "../errors";

const checkers = new WeakMap<TSchema, ReturnType<typeof TypeCompiler.Compile>>();

/** The JSON type names a schema allows, e.g. ["string", "array", "null"]. */
function allowedTypes(schema: TSchema): string[] {
  if (Array.isArray(schema.anyOf)) return (schema.anyOf as TSchema[]).flatMap(allowedTypes);
  if (schema.const !== undefined) return [JSON.stringify(schema.const)];
  if (Array.isArray(schema.type)) return schema.type as string[];
  return typeof schema.type === "string" ? [schema.type] : [];
}

/** The JSON type of a value, in the schema's words. */
function jsonType(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  return typeof value === "number" ? "number" : typeof value;
}

/**
 * The error that names the real fault: a union whose value has the kind of one of its branches
 * (an object where "object or null" is allowed) failed inside that branch, so report that instead.
 */
function innermost(error: ValueError): ValueError {
  if (error.type !== ValueErrorType.Union || !Array.isArray(error.schema.anyOf)) return error;
  const kind = jsonType(error.value);
  const branch = (error.schema.anyOf as TSchema[]).findIndex((schema) =>
    allowedTypes(schema).some((type) => type === kind || (type === "integer" && kind === "number")),
  );
  const inner = branch >= 0 ? error.errors[branch]?.First() : undefined;
  return inner ? innermost(inner) : error;
}

/**
 * Checks a parsed body against a request schema and throws a 400 naming the first wrong field and
 * what it may be, e.g. `invalid request: "stream" must be boolean or null`.
 */
export function checkBody<T extends TSchema>(schema: T, value: unknown): asserts value is T["static"] {
  let checker = checkers.get(schema);
  if (!checker) checkers.set(schema, (checker = TypeCompiler.Compile(schema)));
  if (checker.Check(value)) return;
  const first = checker.Errors(value).First();
  const error = first && innermost(first);
  const field = error?.path ? error.path.slice(1).replaceAll("/", ".") : "";
  if (!error || !field) throw new BadRequestError("request body must be a JSON object");
  const types = allowedTypes(error.schema);
  throw new BadRequestError(`invalid request: "${field}" must be ${types.length ? types.join(" or ") : "valid"}`);
}
