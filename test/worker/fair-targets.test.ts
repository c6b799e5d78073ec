// Fair share with several targets: each runner's claim orders the loaded group's jobs by caller, so a
// key that comes behind a flood is served next on whichever target frees first; the targets' invariants
// (never two model keys at once, never a model a target lacks, every job once) hold as without it.
import { afterEach, expect, test } from "bun:test";
import { KeyStore } from "../../src/keys/key-store";
import { keyPrincipal } from "../../src/keys/principal";
import { type InProcessStack, startInProcess } from "../in-process";

let stack: InProcessStack | undefined;
afterEach(async () => {
  await stack?.stop();
  stack = undefined;
});

const FLOOD = 24;

/** A floods FLOOD jobs of one model, then B queues two: how many of A's had started before B's last did. */
async function floodThenTrickle(fairShare: "on" | "off"): Promise<number> {
  const fake = { models: ["llama3.2", "qwen3"], loadDelayMs: 20, tokenDelayMs: 2 };
  stack = await startInProcess({
    targets: [
      { name: "t1", fake },
      { name: "t2", fake },
    ],
    env: { FOREMAN_FAIR_SHARE: fairShare },
  });
  const keys = new KeyStore(stack.db);
  const a = keyPrincipal(keys.create("flood", "client").key);
  const b = keyPrincipal(keys.create("trickle", "client").key);
  const submit = async (principal: typeof a, text: string) =>
    (await stack!.jobs.submit("generate", { model: "llama3.2", prompt: text, stream: false }, { source: "jobs", principal })).job
      .id;
  const aIds: string[] = [];
  for (let i = 0; i < FLOOD; i++) aIds.push(await submit(a, `a ${i}`));
  const bIds = [await submit(b, "b 0"), await submit(b, "b 1")];
  const rows = await Promise.all([...aIds, ...bIds].map((id) => stack!.ended(id)));
  expect(rows.map((r) => r.state)).toEqual(rows.map(() => "done"));
  for (const fake of stack.fakes.values()) expect(fake.violations).toEqual([]);
  const bLast = Math.max(...rows.slice(FLOOD).map((r) => r.startedAt!));
  const aBefore = rows.slice(0, FLOOD).filter((r) => r.startedAt! < bLast).length;
  await stack.stop();
  stack = undefined;
  return aBefore;
}

test("two targets: a key behind another's flood is served within a few jobs, not after the flood", async () => {
  // Both targets take A's first jobs before B queues; B, lifted level with A, then goes before A's next.
  expect(await floodThenTrickle("on")).toBeLessThanOrEqual(8);
  // The witness that it is fair share doing it: without, B's jobs wait for the whole flood.
  expect(await floodThenTrickle("off")).toBe(FLOOD);
});
