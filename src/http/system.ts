import { Elysia, t } from "elysia";
import type { ModelInventory } from "../ollama/inventory";

/** GET /healthz: always 200 and never behind the token, so a supervisor can probe it. */
export function systemRoutes(inventory: ModelInventory) {
  return new Elysia({ tags: ["system"] }).get(
    "/healthz",
    () => ({ status: "ok" as const, degraded: inventory.snapshot.degraded }),
    {
      response: t.Object({ status: t.Literal("ok"), degraded: t.Boolean() }),
      detail: { summary: "Health", description: "200 while foreman runs; `degraded` is true while Ollama is unreachable." },
    },
  );
}
