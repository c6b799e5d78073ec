import { afterEach, beforeEach, expect, test } from "bun:test";
import type { Database } from "bun:sqlite";
import { join } from "node:path";
import fc from "fast-check";
import { FileStore } from "../../src/batch/files";
import { openDatabase } from "../../src/queue/db";
import { tempDir } from "../harness";

let dir: ReturnType<typeof tempDir>;
let db: Database;
let files: FileStore;

beforeEach(() => {
  dir = tempDir();
  db = openDatabase(join(dir.path, "f.db"));
  files = new FileStore(db);
});
afterEach(() => {
  db.close();
  dir.cleanup();
});

/** Stores `text` cut into chunks at the given points. */
function store(text: string, cuts: number[]): string {
  const bytes = Buffer.from(text);
  const id = files.beginUpload("batch", "x.jsonl").id;
  let start = 0;
  for (const cut of [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b).concat(bytes.length)) {
    if (cut > start) files.append(id, bytes.subarray(start, cut));
    start = Math.max(start, cut);
  }
  files.finishUpload(id, "batch");
  return id;
}

test("lines come out whole whatever the chunking, multi-byte characters and CRLF included", () => {
  fc.assert(
    fc.property(
      fc.array(
        fc.string({ unit: "grapheme", maxLength: 20 }).filter((s) => !/[\r\n]/.test(s)),
        { maxLength: 8 },
      ),
      fc.array(fc.nat(), { maxLength: 10 }),
      fc.boolean(),
      (lines, cuts, crlf) => {
        const text = lines.map((line) => `${line}${crlf ? "\r\n" : "\n"}`).join("");
        const id = store(text, cuts);
        expect([...files.lines(id)].map((line) => line.text)).toEqual(lines);
        expect(files.get(id)!.bytes).toBe(Buffer.byteLength(text));
      },
    ),
    { numRuns: 100 },
  );
});

test("a last line without a newline counts; a line past the limit comes as tooLong, without its text", () => {
  const id = store(`short\n${"x".repeat(50)}\nafter\nend`, [3, 10, 20, 30, 40]);
  expect([...files.lines(id, 20)]).toEqual([
    { number: 1, text: "short" },
    { number: 2, text: "", tooLong: true },
    { number: 3, text: "after" },
    { number: 4, text: "end" },
  ]);
});

test("an unfinished upload is not listed, and start-up removes it with its bytes", () => {
  const id = files.beginUpload("batch", "half.jsonl").id;
  files.append(id, Buffer.from("partial"));
  expect(files.get(id)).toBeNull();
  expect(files.list({ limit: 10, order: "desc" })).toEqual([]);
  expect(files.removeStaleUploads()).toBe(1);
  expect(db.query("SELECT count(*) AS n FROM file_chunks").get()).toEqual({ n: 0 });
});
