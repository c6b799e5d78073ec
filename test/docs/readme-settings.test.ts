// The README's settings table against src/config.ts, so it cannot fall behind: every FOREMAN_* name
// config.ts reads is a row, no row names a setting it does not read, and each row's default is the
// code's. A default is checked by behaviour, not by text: setting the variable to the README's default
// (and to the one its doc comment in the Config interface states) must give exactly the configuration
// the code builds with the variable unset. A failure lists every missing, extra or wrong row at once.
import { expect, test } from "bun:test";
import { join } from "node:path";
import { loadClientConfig, loadConfig } from "../../src/config";

const ROOT = join(import.meta.dir, "..", "..");
const README = await Bun.file(join(ROOT, "README.md")).text();
const CONFIG_SOURCE = await Bun.file(join(ROOT, "src", "config.ts")).text();

type Env = Record<string, string | undefined>;

/** Every FOREMAN_* name config.ts reads: those loadConfig asks the environment for, and any named in its source. */
function settingsRead(): string[] {
  const names = new Set<string>();
  const tracking = new Proxy({} as Env, {
    get(target, name) {
      if (typeof name === "string" && name.startsWith("FOREMAN_")) names.add(name);
      return Reflect.get(target, name);
    },
  });
  loadConfig(tracking);
  loadClientConfig(tracking);
  for (const [name] of CONFIG_SOURCE.matchAll(/(?<=["'`])FOREMAN_[A-Z0-9_]+(?=["'`])/g)) names.add(name);
  return [...names].sort();
}

/** The doc comment of each setting in config.ts (`/** FOREMAN_X: … *\/` above its field), by name. */
function docComments(): Map<string, string> {
  const docs = new Map<string, string>();
  for (const [, body] of CONFIG_SOURCE.matchAll(/\/\*\*((?:(?!\*\/)[\s\S])*)\*\/\s*\n\s*\w+\??:/g)) {
    const text = body!.replace(/\s*\n\s*\*\s?/g, " ").trim();
    const name = /^(FOREMAN_[A-Z0-9_]+):/.exec(text)?.[1];
    if (name) docs.set(name, text);
  }
  return docs;
}

/** The default a doc comment states ("default 30s", "default 64 MiB", "drain (default; …)"), as a value to set. */
function docDefault(doc: string): string | undefined {
  // The value ends the sentence or clause ("default 30s.", "default 30m; 0 means none", "default -1 (below …"):
  // "default whsec_ secret" and "default text on a terminal" state none.
  const after = /\bdefault (-?[^\s;()]+?)(?: (KiB|MiB|GiB))?(?=[.;]?$|[.;] |;| \()/.exec(doc);
  if (after) {
    const value = after[1]!;
    const unit = { KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3 }[after[2] ?? ""];
    return unit ? String(Number(value) * unit) : value;
  }
  return /(\S+) \(default[;)]/.exec(doc)?.[1];
}

interface Row {
  name: string;
  defaultCell: string;
  meaning: string;
  line: string;
}

/** The rows of the README's settings table (the table whose first column is headed "variable"). */
function readmeRows(): Row[] {
  const lines = README.split("\n");
  const header = lines.findIndex((line) => /^\|\s*variable\s*\|/.test(line));
  if (header < 0) return [];
  const rows: Row[] = [];
  for (const line of lines.slice(header + 2)) {
    if (!line.startsWith("|")) break;
    const cells = line
      .slice(1, -1)
      .split(/(?<!\\)\|/)
      .map((cell) => cell.trim());
    rows.push({ name: cells[0]!.replace(/`/g, ""), defaultCell: cells[1] ?? "", meaning: cells[2] ?? "", line });
  }
  return rows;
}

/** Both configurations config.ts builds from `env`: the server's and the client subcommands'. */
const configs = (env: Env) => ({ server: loadConfig(env), client: loadClientConfig(env) });

/** Why setting `name` to `value` is not the same as leaving it unset, or undefined when it is the same. */
function notTheDefault(name: string, value: string): string | undefined {
  let set;
  try {
    set = configs({ [name]: value });
  } catch (error) {
    return `config.ts refuses it: ${(error as Error).message}`;
  }
  return Bun.deepEquals(set, configs({})) ? undefined : "config.ts's default is another value";
}

test("the README's settings table has a row for every FOREMAN_* setting config.ts reads, with its default", () => {
  const read = settingsRead();
  const docs = docComments();
  const rows = readmeRows();
  expect(rows.length, "no settings table (a table whose first column is headed `variable`) in README.md").toBeGreaterThan(0);
  const problems: string[] = [];

  for (const name of read) {
    if (rows.some((row) => row.name === name)) continue;
    const doc = docs.get(name)?.replace(/^FOREMAN_[A-Z0-9_]+:\s*/, "") ?? "(no doc comment in config.ts)";
    const fallback = docDefault(doc);
    problems.push(`missing row: | \`${name}\` | ${fallback ? `\`${fallback}\`` : "–"} | ${doc} |`);
  }
  for (const row of rows) {
    if (!read.includes(row.name)) problems.push(`extra row, config.ts reads no ${row.name}: ${row.line.replace(/\s+/g, " ")}`);
  }

  for (const row of rows.filter((r) => read.includes(r.name))) {
    const doc = docs.get(row.name) ?? "";
    const stated = docDefault(doc);
    const code = /^`([^`]*)`$/.exec(row.defaultCell)?.[1];
    if (code !== undefined) {
      const why = notTheDefault(row.name, code);
      if (why)
        problems.push(
          `${row.name}: the README's default \`${code}\` is wrong (${why}; its doc comment says ${stated ?? "none"})`,
        );
      if (stated !== undefined) {
        const docWhy = notTheDefault(row.name, stated);
        if (docWhy) problems.push(`${row.name}: config.ts's doc comment says default ${stated}, but ${docWhy}`);
      }
    } else if (row.defaultCell === "–") {
      if (stated !== undefined) problems.push(`${row.name}: the README says no default, config.ts's doc comment says ${stated}`);
    } else if (!row.meaning.includes(`${row.defaultCell}:`)) {
      // A default that depends on where foreman runs (FOREMAN_LOG_FORMAT's "auto") is a word the meaning explains.
      problems.push(
        `${row.name}: the default "${row.defaultCell}" is neither \`a value\` nor – nor explained as "${row.defaultCell}: …"`,
      );
    }
  }

  expect(problems, `README.md's settings table and src/config.ts disagree:\n${problems.join("\n")}\n`).toEqual([]);
});
