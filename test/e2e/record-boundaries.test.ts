// Each streamed record leaves foreman as its own write (one HTTP chunk of the chunked body), as Ollama
// writes them, however the records reached foreman: the fake sends its last token and its final record
// in one write, and an instant stream many records per read. Read over a raw socket that decodes the
// chunked body itself, so what is checked is foreman's writes, not the client's timing.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { FakeOllama } from "../fake-ollama";
import { type ForemanProcess, foremanEnv, spawnForeman, tempDir } from "../harness";
import { streamReads } from "../record-reads";

let fake: FakeOllama;
let foreman: ForemanProcess;
const dir = tempDir();
beforeAll(async () => {
  fake = new FakeOllama().start();
  foreman = await spawnForeman(foremanEnv(fake.url, dir.path, { FOREMAN_POLL_INTERVAL: "1h" }));
});
afterAll(async () => {
  foreman.process.kill("SIGTERM");
  await foreman.process.exited;
  await fake.stop();
  dir.cleanup();
});

const SURFACES = [
  {
    name: "NDJSON (/api/chat)",
    path: "/api/chat",
    body: (tokens: number) =>
      JSON.stringify({ model: "llama3.2", messages: [{ role: "user", content: "go" }], options: { num_predict: tokens } }),
    recordEnd: "\n",
  },
  {
    name: "SSE (/v1/chat/completions)",
    path: "/v1/chat/completions",
    body: (tokens: number) =>
      JSON.stringify({ model: "llama3.2", stream: true, messages: [{ role: "user", content: "w ".repeat(tokens) }] }),
    recordEnd: "\n\n",
  },
];

for (const surface of SURFACES) {
  describe(surface.name, () => {
    for (const [what, tokens, tokenDelayMs] of [
      ["a stream at 5 ms per token", 20, 5],
      ["an instant stream (many records per read upstream)", 300, 0],
    ] as const) {
      test(`${what}: every record is its own HTTP chunk, and the records are Ollama's`, async () => {
        fake.tokenDelayMs = tokenDelayMs;
        try {
          const direct = await streamReads(fake.url, surface.path, surface.body(tokens), surface.recordEnd);
          const via = await streamReads(foreman.url, surface.path, surface.body(tokens), surface.recordEnd);
          expect(via.status).toBe(200);
          const records = (body: string) => body.split(surface.recordEnd).length - 1;
          expect(records(via.body)).toBe(records(direct.body));
          expect(records(via.body)).toBeGreaterThan(tokens / 2);
          // The fake merges some records into one write (direct); foreman writes each alone.
          expect(direct.recordsPerChunk.some((count) => count > 1)).toBe(true);
          expect(via.recordsPerChunk.filter((count) => count !== 1)).toEqual([]);
          expect(via.recordsPerChunk.length).toBe(records(via.body));
        } finally {
          fake.tokenDelayMs = 0;
        }
      });
    }
  });
}
