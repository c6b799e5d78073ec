import { type SchemaOptions, type TLiteral, type TUnion, Type } from "@sinclair/typebox";

/**
 * A union of string literals from a list written once, typed as the list's values.
 * (Elysia's `t.UnionEnum` would do, but in a query it defaults a missing value to the first member.)
 * @example literalUnion(["queued", "done"]) // static type "queued" | "done"
 */
export function literalUnion<const T extends readonly [string, ...string[]]>(
  values: T,
  options?: SchemaOptions,
): TUnion<{ -readonly [K in keyof T]: TLiteral<T[K]> }> {
  return Type.Union(
    values.map((value) => Type.Literal(value)),
    options,
  ) as unknown as TUnion<{ -readonly [K in keyof T]: TLiteral<T[K]> }>;
}
