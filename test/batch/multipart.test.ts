import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import { multipartBoundary, multipartParts } from "../../src/http/multipart";

/** Body bytes fed in pieces cut at the given points, as a network would. */
function streamOf(bytes: Uint8Array, cuts: number[]): ReadableStream<Uint8Array> {
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  const pieces: Uint8Array[] = [];
  let start = 0;
  for (const point of [...points, bytes.length]) {
    if (point > start) pieces.push(bytes.slice(start, point));
    start = Math.max(start, point);
  }
  return new ReadableStream({
    start(controller) {
      for (const piece of pieces) controller.enqueue(piece);
      controller.close();
    },
  });
}

async function readAll(body: ReadableStream<Uint8Array>, boundary: string) {
  const parts: Array<{ name: string; filename: string | undefined; data: string }> = [];
  for await (const part of multipartParts(body, boundary)) {
    const chunks: Uint8Array[] = [];
    for await (const chunk of part.data) chunks.push(Uint8Array.prototype.slice.call(chunk));
    parts.push({ name: part.name, filename: part.filename, data: Buffer.concat(chunks).toString("utf8") });
  }
  return parts;
}

describe("multipart", () => {
  test("reads the boundary from a Content-Type, quoted or not", () => {
    expect(multipartBoundary("multipart/form-data; boundary=abc")).toBe("abc");
    expect(multipartBoundary('multipart/form-data; boundary="a b"')).toBe("a b");
    expect(multipartBoundary("application/json")).toBeUndefined();
  });

  test("whatever the network's cuts, the parts come out as a FormData encoded them", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.string({ maxLength: 300 }),
        fc.string({ minLength: 1, maxLength: 20 }),
        fc.array(fc.nat(), { maxLength: 12 }),
        async (content, purpose, cuts) => {
          const form = new FormData();
          // Content that looks like a boundary must not end the part.
          form.append("file", new Blob([`${content}\r\n--`]), "in.jsonl");
          form.append("purpose", purpose);
          const request = new Request("http://x/", { method: "POST", body: form });
          const boundary = multipartBoundary(request.headers.get("content-type"))!;
          const bytes = new Uint8Array(await request.arrayBuffer());
          const parts = await readAll(streamOf(bytes, cuts), boundary);
          expect(parts).toEqual([
            { name: "file", filename: "in.jsonl", data: `${content}\r\n--` },
            { name: "purpose", filename: undefined, data: purpose },
          ]);
        },
      ),
      { numRuns: 200 },
    );
  });

  test("a body cut off before its closing boundary is a 400", async () => {
    const body = '--b\r\ncontent-disposition: form-data; name="file"; filename="x"\r\n\r\nhello';
    const error = await readAll(streamOf(Buffer.from(body), []), "b").catch((e) => e);
    expect(error.status).toBe(400);
    expect(error.message).toBe("multipart body ends early");
  });

  test("padding, preamble and headers are bounded, each with a 400 that says its bound", async () => {
    const cases: Array<[string, string]> = [
      [`--b${" ".repeat(2000)}\r\n\r\nx\r\n--b--`, "at most 1024 bytes of padding"],
      [`${"p".repeat(70_000)}\r\n--b\r\n\r\nx\r\n--b--`, "a preamble may be at most that long"],
      [`--b\r\nx-long: ${"h".repeat(17_000)}\r\n\r\nx\r\n--b--`, "headers are too long: at most 16384 bytes"],
    ];
    for (const [body, message] of cases) {
      // Cut in small pieces, as a slow client sends them.
      const bytes = Buffer.from(body);
      const cuts = Array.from({ length: Math.ceil(bytes.length / 100) }, (_, i) => i * 100);
      const error = await readAll(streamOf(bytes, cuts), "b").catch((e) => e);
      expect([error.status, error.message]).toEqual([400, expect.stringContaining(message)]);
    }
  });

  test("past the body's bound, a 413 with the bound's message, even in a part nobody reads", async () => {
    const body = Buffer.from(`--b\r\ncontent-disposition: form-data; name="extra"\r\n\r\n${"x".repeat(5000)}\r\n--b--`);
    const parts = multipartParts(streamOf(body, [1000, 2000, 3000, 4000]), "b", { maxBytes: 3000, message: "too big" });
    const error = await (async () => {
      for await (const _ of parts);
    })().catch((e) => e);
    expect([error.status, error.message]).toEqual([413, "too big"]);
  });
});
