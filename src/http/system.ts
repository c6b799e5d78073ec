import { Elysia, t } from "elysia";
import type { TargetInventory } from "../ollama/targets";
import type { StorageHealth } from "../queue/storage-health";

/** Why foreman is degraded, in the order they are checked; empty while it is healthy. */
export function degradedReasons(inventory: TargetInventory, storage: StorageHealth): string[] {
  const reasons: string[] = [];
  if (inventory.snapshot.degraded) reasons.push("ollama unreachable");
  if (storage.reason) reasons.push(storage.reason);
  return reasons;
}

/** GET /healthz: always 200 and never behind the token, so a supervisor can probe it. */
export function systemRoutes(inventory: TargetInventory, storage: StorageHealth) {
  return new Elysia({ tags: ["system"] }).get(
    "/healthz",
    () => {
      const reasons = degradedReasons(inventory, storage);
      const targets = inventory.several
        ? inventory.targets.map((t) => ({ name: t.target.name, reachable: !t.inventory.snapshot.degraded }))
        : undefined;
      return { status: "ok" as const, degraded: reasons.length > 0, reasons, ...(targets ? { targets } : {}) };
    },
    {
      response: t.Object({
        status: t.Literal("ok"),
        degraded: t.Boolean(),
        reasons: t.Array(t.String()),
        targets: t.Optional(t.Array(t.Object({ name: t.String(), reachable: t.Boolean() }))),
      }),
      detail: {
        summary: "Health",
        description:
          "200 while foreman runs; `degraded` is true while Ollama is unreachable or the database cannot be written (a full disk), and `reasons` says which.",
      },
    },
  );
}
