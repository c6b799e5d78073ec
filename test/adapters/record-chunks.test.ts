// recordChunks against any cutting of a stream into reads: the bytes come back exactly, every chunk
// but a trailing unterminated one ends on a record boundary, and no chunk waits for a later read.
import { expect, test } from "bun:test";
import fc from "fast-check";
import { type Framing, recordChunks, recordsOf } from "../../src/adapters/framing";

const encoder = new TextEncoder();

function streamOf(reads: Uint8Array[]): ReadableStream<Uint8Array> {
  return new ReadableStream({
    start(controller) {
      for (const read of reads) controller.enqueue(read);
      controller.close();
    },
  });
}

/** Cuts `bytes` at the given offsets (any order, any repeats). */
function cut(bytes: Uint8Array, offsets: number[]): Uint8Array[] {
  const points = [...new Set(offsets.map((o) => o % (bytes.length + 1)))].sort((a, b) => a - b);
  const reads: Uint8Array[] = [];
  let from = 0;
  for (const point of [...points, bytes.length]) (reads.push(bytes.slice(from, point)), (from = point));
  return reads;
}

const record = fc
  .string({ unit: fc.constantFrom("a", "b", "{", "}", "é", " ", ":"), minLength: 1, maxLength: 12 })
  .filter((r) => r.trim() !== ""); // A blank trailing record is dropped by design.

for (const framing of ["ndjson", "sse"] as Framing[]) {
  const delimiter = framing === "sse" ? "\n\n" : "\n";
  test(`${framing}: bytes exact, chunks end on record boundaries, whatever the reads`, async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(record, { minLength: 1, maxLength: 20 }),
        fc.boolean(),
        fc.array(fc.nat(), { maxLength: 30 }),
        async (records, terminated, offsets) => {
          const text = records.join(delimiter) + (terminated ? delimiter : "");
          const bytes = encoder.encode(text);
          const chunks: Uint8Array[] = [];
          for await (const chunk of recordChunks(streamOf(cut(bytes, offsets)), framing)) chunks.push(chunk);
          expect(Buffer.concat(chunks).equals(Buffer.from(bytes))).toBe(true);
          chunks.forEach((chunk, i) => {
            if (i < chunks.length - 1 || terminated) expect(Buffer.from(chunk).toString().endsWith(delimiter)).toBe(true);
          });
          // Whole records only: no chunk ends inside a record, so each chunk's records are complete.
          expect(
            chunks
              .map((c) => Buffer.from(c).toString())
              .join("")
              .split(delimiter)
              .filter(Boolean),
          ).toEqual(records);
        },
      ),
      { seed: 7, numRuns: 300 },
    );
  });
}

for (const framing of ["ndjson", "sse"] as Framing[]) {
  const delimiter = framing === "sse" ? "\n\n" : "\n";
  test(`${framing}: recordsOf cuts a chunk into its records, each with its delimiter, the bytes exact`, () => {
    fc.assert(
      fc.property(fc.array(record, { minLength: 1, maxLength: 20 }), fc.boolean(), (records, terminated) => {
        const text = records.join(delimiter) + (terminated ? delimiter : "");
        const bytes = encoder.encode(text);
        const pieces = recordsOf(bytes, framing).map((piece) => Buffer.from(piece).toString());
        expect(pieces.join("")).toBe(text);
        expect(pieces.map((piece) => (piece.endsWith(delimiter) ? piece.slice(0, -delimiter.length) : piece))).toEqual(records);
      }),
      { seed: 7, numRuns: 300 },
    );
  });
}

test("whole: one chunk when the body is complete", async () => {
  const chunks: Uint8Array[] = [];
  for await (const chunk of recordChunks(streamOf([encoder.encode('{"a":'), encoder.encode("1}")]), "whole")) chunks.push(chunk);
  expect(chunks.map((c) => Buffer.from(c).toString())).toEqual(['{"a":1}']);
});
