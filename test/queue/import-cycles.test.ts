// The queue, the batches and the webhooks import each other in one direction only: no circle runs
// through src/queue, src/batch or src/webhook. Each table has one owner, and the owners that write at a
// job's end join it through a hook (src/tables.ts) instead of the queue importing them. Type-only
// imports count: a circle of types is still two modules that cannot be read, or replaced, apart.
import { describe, expect, test } from "bun:test";
import { existsSync, readFileSync, readdirSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";

const SRC = resolve(import.meta.dir, "../../src");
const GUARDED = ["queue/", "batch/", "webhook/"];
const transpiler = new Bun.Transpiler({ loader: "ts" });

/**
 * What a module's text imports, type-only imports and re-exports included. Bun's scanner parses (so a
 * string or a comment that looks like an import is not one) but drops type-only imports, which are
 * erased at run time: they are turned into plain ones first.
 */
function importsOf(source: string): string[] {
  const untyped = source
    .replace(/^#!.*/, "")
    .replace(/\bimport\s+type\s+(?=[{*\w])/g, "import ")
    .replace(/\bexport\s+type\s+(?=[{*])/g, "export ")
    .replace(/([{,]\s*)type\s+(?=[\w$]+\s*[,}]|[\w$]+\s+as\b)/g, "$1");
  return transpiler.scanImports(untyped).map((entry) => entry.path);
}

/** The module file a relative specifier names (x.ts or x/index.ts), or undefined (a package, a .sql text). */
function resolveModule(from: string, specifier: string): string | undefined {
  if (!specifier.startsWith(".")) return undefined;
  const base = resolve(dirname(from), specifier);
  return [base, `${base}.ts`, join(base, "index.ts")].find((path) => path.endsWith(".ts") && existsSync(path));
}

/** Every module under src/ and the modules it imports, by path relative to src/. */
function importGraph(): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  for (const file of readdirSync(SRC, { recursive: true, encoding: "utf8" })) {
    if (!file.endsWith(".ts") || file.endsWith(".d.ts")) continue;
    const path = join(SRC, file);
    const targets = importsOf(readFileSync(path, "utf8")).flatMap((specifier) => {
      const target = resolveModule(path, specifier);
      return target ? [relative(SRC, target)] : [];
    });
    graph.set(relative(SRC, path), [...new Set(targets)]);
  }
  return graph;
}

/** The graph's circles, one per strongly connected component of more than one module (or a self-import). */
function circles(graph: Map<string, string[]>): string[][] {
  // Tarjan's algorithm.
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const found: string[][] = [];
  const visit = (node: string) => {
    index.set(node, index.size);
    low.set(node, index.get(node)!);
    stack.push(node);
    onStack.add(node);
    for (const next of graph.get(node) ?? []) {
      if (!index.has(next)) {
        visit(next);
        low.set(node, Math.min(low.get(node)!, low.get(next)!));
      } else if (onStack.has(next)) {
        low.set(node, Math.min(low.get(node)!, index.get(next)!));
      }
    }
    if (low.get(node) !== index.get(node)) return;
    const component: string[] = [];
    let member: string;
    do {
      member = stack.pop()!;
      onStack.delete(member);
      component.push(member);
    } while (member !== node);
    if (component.length > 1 || graph.get(node)?.includes(node)) found.push(component.sort());
  };
  for (const node of graph.keys()) if (!index.has(node)) visit(node);
  return found;
}

describe("the import graph", () => {
  test("has no circle through src/queue, src/batch or src/webhook", () => {
    const graph = importGraph();
    // The walk sees what it must: the store's type-only import of its row, the ledger's of the same.
    expect(graph.get("queue/store.ts")).toContain("queue/job-row.ts");
    expect(graph.get("batch/ledger.ts")).toContain("queue/job-row.ts");
    const guarded = circles(graph).filter((circle) => circle.some((module) => GUARDED.some((d) => module.startsWith(d))));
    expect(guarded).toEqual([]);
  });

  test("the queue imports none of the batches' or webhooks' modules", () => {
    const graph = importGraph();
    const crossing = [...graph]
      .filter(([module]) => module.startsWith("queue/"))
      .flatMap(([module, targets]) => targets.filter((t) => /^(batch|webhook)\//.test(t)).map((t) => `${module} -> ${t}`));
    expect(crossing).toEqual([]);
  });

  test("the check itself: type-only imports are edges, and a circle of them is found", () => {
    expect(
      importsOf(
        `import type { A } from "./a";\nimport { type B, type C as D } from "./b";\nexport type { E } from "./e";\nexport type F = string;`,
      ),
    ).toEqual(["./a", "./b", "./e"]);
    expect(importsOf(`const s = 'import { X } from "./x"'; // import "./y"\nconst o = { type: 1 };`)).toEqual([]);
    const graph = new Map([
      ["queue/store.ts", ["batch/ledger.ts", "queue/job-states.ts"]],
      ["batch/ledger.ts", ["queue/store.ts"]],
      ["queue/job-states.ts", []],
    ]);
    expect(circles(graph)).toEqual([["batch/ledger.ts", "queue/store.ts"]]);
  });
});
