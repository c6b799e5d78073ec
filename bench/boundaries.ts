// Record boundaries: does each streamed record reach the client on its own, as Ollama writes it? The
// fake (its own process, 10 ms per token) is streamed from directly and through foreman, interleaved,
// over a raw socket that decodes the chunked body itself: per socket read, and per HTTP chunk (one write
// of the server's), how many records it held. A client that parses each read as one record (Genkit)
// fails on a read holding two.
import { join } from "node:path";
import { foremanEnv, spawnForeman, tempDir } from "../test/harness";
import { mergedShare, type StreamReads, streamReads } from "../test/record-reads";
import { table, targets } from "./stats";

const STREAMS = 40;
const TOKENS = 50;
const TOKEN_MS = 10;

const SURFACES = [
  {
    name: "Ollama /api/chat (NDJSON)",
    path: "/api/chat",
    body: JSON.stringify({ model: "llama3.2", messages: [{ role: "user", content: "go" }], options: { num_predict: TOKENS } }),
    recordEnd: "\n",
  },
  {
    name: "OpenAI /v1/chat/completions (SSE)",
    path: "/v1/chat/completions",
    // The fake answers "You said: <prompt>" a word per chunk.
    body: JSON.stringify({ model: "llama3.2", stream: true, messages: [{ role: "user", content: "w ".repeat(TOKENS - 2) }] }),
    recordEnd: "\n\n",
  },
];

async function startFake(tokenMs: number) {
  const child = Bun.spawn(["bun", join(import.meta.dir, "..", "test", "fake-ollama-main.ts")], {
    env: { ...process.env, FAKE_TOKEN_MS: String(tokenMs) },
    stdout: "pipe",
    stderr: "inherit",
  });
  const { value } = await child.stdout.getReader().read();
  return { url: `http://127.0.0.1:${Number(new TextDecoder().decode(value).trim())}`, stop: () => child.kill() };
}

const pct = (share: number) => `${(share * 100).toFixed(2)}%`;

export async function benchBoundaries(): Promise<string> {
  const fake = await startFake(TOKEN_MS);
  const dir = tempDir();
  // As users run it: the default log level and format, stdout a pipe (spawnForeman reads it).
  const env = foremanEnv(fake.url, dir.path, { FOREMAN_POLL_INTERVAL: "1h" });
  delete env.FOREMAN_LOG_LEVEL;
  const foreman = await spawnForeman(env);
  try {
    const rows: string[][] = [];
    for (const surface of SURFACES) {
      const direct: StreamReads[] = [];
      const via: StreamReads[] = [];
      for (let i = 0; i < STREAMS; i++) {
        direct.push(await streamReads(fake.url, surface.path, surface.body, surface.recordEnd));
        via.push(await streamReads(foreman.url, surface.path, surface.body, surface.recordEnd));
      }
      if (
        via.some((stream, i) => stream.body.split(surface.recordEnd).length !== direct[i]!.body.split(surface.recordEnd).length)
      )
        throw new Error(`${surface.name}: foreman relayed a different number of records`);
      const [directReads, viaReads] = [mergedShare(direct), mergedShare(via)];
      const [directChunks, viaChunks] = [mergedShare(direct, "chunk"), mergedShare(via, "chunk")];
      rows.push(
        [surface.name, "direct", String(directReads.reads), pct(directReads.share), pct(directChunks.share)],
        [surface.name, "via foreman", String(viaReads.reads), pct(viaReads.share), pct(viaChunks.share)],
      );
      targets.push({
        target: `reads holding >1 record at ${TOKEN_MS} ms/token, ${surface.name}`,
        figure: `${pct(viaReads.share)} (direct ${pct(directReads.share)})`,
        goal: "≤ direct",
        met: viaReads.merged <= directReads.merged,
      });
    }
    return [
      `### Record boundaries: ${STREAMS} streams of ${TOKENS} tokens per path at ${TOKEN_MS} ms per token, read over a raw socket`,
      "",
      table(["API", "path", "reads", "reads holding >1 record", "HTTP chunks holding >1 record"], rows),
      "",
      "The fake writes its last token and its final record together (one write), so direct has one merged read and",
      "chunk per stream; through foreman each record is its own HTTP chunk, and reads merge only where the writes",
      "came too close together for the client to read between them.",
    ].join("\n");
  } finally {
    foreman.process.kill("SIGTERM");
    await foreman.process.exited;
    fake.stop();
    dir.cleanup();
  }
}
