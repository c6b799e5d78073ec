// An unmodified `ollama` client must get the same answers through foreman as from Ollama itself. foreman
// answers in this process (test/in-process.ts); the fake Ollama is a real server.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Ollama } from "ollama";
import { type InProcessStack, startInProcess } from "../in-process";

let stack: InProcessStack;
let direct: Ollama;
let viaForeman: Ollama;

beforeAll(async () => {
  stack = await startInProcess();
  direct = new Ollama({ host: stack.fake.url });
  viaForeman = new Ollama({ host: stack.url, fetch: stack.fetch as typeof fetch });
});
afterAll(() => stack.stop());

/** Drops what legitimately differs between two runs: timestamps and durations. */
function stable(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(stable);
  if (value && typeof value === "object") {
    return Object.fromEntries(
      Object.entries(value)
        .filter(([key]) => key !== "created_at" && !key.endsWith("_duration"))
        .map(([key, v]) => [key, stable(v)]),
    );
  }
  return value;
}

async function collect<T>(iterable: AsyncIterable<T>): Promise<T[]> {
  const parts: T[] = [];
  for await (const part of iterable) parts.push(part);
  return parts;
}

describe("the ollama client sees no difference", () => {
  const chat = { model: "llama3.2", messages: [{ role: "user", content: "Why is the sky blue?" }] };
  const generate = { model: "qwen3", prompt: "Tell me a story" };

  test("chat, not streamed", async () => {
    const expected = await direct.chat(chat);
    const actual = await viaForeman.chat(chat);
    expect(stable(actual)).toEqual(stable(expected));
    expect(actual.message.content).toBe("You said: Why is the sky blue?");
  });

  test("chat, streamed", async () => {
    const expected = await collect(await direct.chat({ ...chat, stream: true }));
    const actual = await collect(await viaForeman.chat({ ...chat, stream: true }));
    expect(actual.length).toBeGreaterThan(2);
    expect(stable(actual)).toEqual(stable(expected));
  });

  test("generate, not streamed and streamed", async () => {
    expect(stable(await viaForeman.generate(generate))).toEqual(stable(await direct.generate(generate)));
    const expected = await collect(await direct.generate({ ...generate, stream: true }));
    const actual = await collect(await viaForeman.generate({ ...generate, stream: true }));
    expect(stable(actual)).toEqual(stable(expected));
  });

  test("embed and legacy embeddings", async () => {
    const request = { model: "all-minilm", input: ["one", "three"] };
    expect(stable(await viaForeman.embed(request))).toEqual(stable(await direct.embed(request)));
    const legacy = { model: "all-minilm", prompt: "hello" };
    expect(await viaForeman.embeddings(legacy)).toEqual(await direct.embeddings(legacy));
  });

  test("list, ps, show and version", async () => {
    expect(await viaForeman.list()).toEqual(await direct.list());
    await stack.inventory.refresh();
    expect((await viaForeman.ps()).models.map((m) => m.name)).toEqual((await direct.ps()).models.map((m) => m.name));
    expect(await viaForeman.show({ model: "llama3.2" })).toEqual(await direct.show({ model: "llama3.2" }));
    expect(await viaForeman.version()).toEqual(await direct.version());
  });

  test("errors carry Ollama's status and text", async () => {
    const failure = async (client: Ollama) => {
      try {
        await client.chat({ model: "no-such-model", messages: [{ role: "user", content: "hi" }] });
      } catch (error) {
        return {
          name: (error as Error).name,
          status: (error as { status_code?: number }).status_code,
          message: (error as Error).message,
        };
      }
      throw new Error("expected a failure");
    };
    const expected = await failure(direct);
    expect(expected.status).toBe(404);
    expect(await failure(viaForeman)).toEqual(expected);
  });

  test("a load request (no messages) answers one JSON object, as Ollama does", async () => {
    const body = JSON.stringify({ model: "mistral", messages: [] });
    const ours = await stack.fetch("/api/chat", { method: "POST", body });
    const theirs = await fetch(`${stack.fake.url}/api/chat`, { method: "POST", body });
    expect(ours.headers.get("content-type")).toBe(theirs.headers.get("content-type")!);
    expect(stable(await ours.json())).toEqual(stable(await theirs.json()));
  });

  test("generation requests reach Ollama without the client's Host or Authorization", async () => {
    await stack.fetch("/api/generate", {
      method: "POST",
      headers: { authorization: "Bearer client-secret", host: "localhost:8080" },
      body: JSON.stringify({ ...generate, stream: false }),
    });
    const seen = stack.fake.seen.at(-1)!;
    expect(seen.headers.authorization).toBeUndefined();
    expect(seen.headers.host).toBe(`127.0.0.1:${stack.fake.port}`);
  });
});
