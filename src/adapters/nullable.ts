import type { TSchema } from "@sinclair/typebox";
import { t } from "elysia";

/** An optional field that may also be null, as Go's JSON decoder allows for any field. */
export const nullable = <T extends TSchema>(schema: T) => t.Optional(t.Union([schema, t.Null()]));
