// Runs the fake Ollama as a process of its own (for benchmarks, so it does not share a thread with
// the client measuring it). Prints its port on stdout; stops when killed.
import { FakeOllama } from "./fake-ollama";

const fake = new FakeOllama({
  loadDelayMs: Number(process.env.FAKE_LOAD_MS ?? 0),
  tokenDelayMs: Number(process.env.FAKE_TOKEN_MS ?? 0),
  // {"llama3.2:latest": {"loadMs": 30, "tokenMs": 1}, …}: uneven model sizes.
  modelDelays: JSON.parse(process.env.FAKE_MODEL_DELAYS ?? "{}"),
  // "llama3.2:latest,qwen3:latest": the chat models this host has installed (default: the fake's four).
  models: process.env.FAKE_MODELS ? process.env.FAKE_MODELS.split(",") : undefined,
  // {"slots": 4, "slowdown": 1.5}: the parallel mode (OLLAMA_NUM_PARALLEL).
  parallel: process.env.FAKE_PARALLEL ? JSON.parse(process.env.FAKE_PARALLEL) : undefined,
  // A port to listen on (a host brought back where it was); default any free one.
  port: Number(process.env.FAKE_PORT ?? 0),
}).start();
console.log(fake.port);
