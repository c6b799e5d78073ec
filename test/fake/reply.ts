// What the fake "model" answers, decided from the native request alone so that every API in front of
// it (native, OpenAI, Anthropic) gets the same answer. The rules, in order:
// 1. The last message is a tool result: the answer is `Tool said: <its content>`.
// 2. `tools` are given and the last user message names one of them (as a word): the answer is one call of
//    the first tool named, with arguments made from its parameter schema (see `fakeValue`).
// 3. `format` is "json" or a JSON-Schema object: the answer is JSON text, `{"answer": "You said: <prompt>"}`
//    for "json", else a value matching the schema (see `fakeValue`).
// 4. Otherwise `fakeTokens(prompt, options.num_predict)`: `You said: <prompt>`, or numbered words.

/** A native tool call, as Ollama's /api/chat streams it. */
export interface NativeToolCall {
  id: string;
  function: { index: number; name: string; arguments: Record<string, unknown> };
}

/** The fake's answer: text pieces (streamed one per chunk) and tool calls (one chunk after the text). */
export interface FakeReply {
  prompt: string;
  tokens: string[];
  toolCalls: NativeToolCall[];
}

type Message = { role?: string; content?: unknown };
type Schema = Record<string, unknown>;

/** The tokens the fake answers with: deterministic from the prompt, or `num_predict` numbered words. */
export function fakeTokens(prompt: string, numPredict?: number): string[] {
  if (numPredict && numPredict > 0) return Array.from({ length: numPredict }, (_, i) => (i === 0 ? `w${i}` : ` w${i}`));
  return `You said: ${prompt}`.split(/(?=\s)/);
}

/** The last word of the prompt without punctuation: what a string in a tool call or schema answer gets. */
export function lastWord(prompt: string): string {
  const words = prompt.match(/[\p{L}\p{N}_-]+/gu);
  return words?.at(-1) ?? "";
}

/**
 * A value matching a (simple) JSON schema: strings are the prompt's last word (an enum's first value),
 * numbers 42, booleans true, arrays one item, objects every property; anyOf/oneOf take the first branch.
 */
export function fakeValue(schema: Schema | undefined, prompt: string): unknown {
  if (!schema || typeof schema !== "object") return lastWord(prompt);
  if (Array.isArray(schema.enum) && schema.enum.length) return schema.enum[0];
  if ("const" in schema) return schema.const;
  const branch = (schema.anyOf ?? schema.oneOf) as Schema[] | undefined;
  if (Array.isArray(branch) && branch.length) return fakeValue(branch.find((b) => b.type !== "null") ?? branch[0], prompt);
  const type = Array.isArray(schema.type) ? schema.type.find((t) => t !== "null") : schema.type;
  switch (type) {
    case "number":
    case "integer":
      return 42;
    case "boolean":
      return true;
    case "null":
      return null;
    case "array":
      return [fakeValue(schema.items as Schema | undefined, prompt)];
    case "object":
    case undefined:
      if (type === undefined && !schema.properties) return lastWord(prompt);
      return Object.fromEntries(
        Object.entries((schema.properties ?? {}) as Record<string, Schema>).map(([key, sub]) => [key, fakeValue(sub, prompt)]),
      );
    default:
      return lastWord(prompt);
  }
}

/** Ollama's tool-call id: `call_` and 8 random [a-z0-9]. */
export function toolCallId(): string {
  return `call_${Array.from({ length: 8 }, () => "abcdefghijklmnopqrstuvwxyz0123456789"[Math.floor(Math.random() * 36)]).join("")}`;
}

const text = (content: unknown) => (typeof content === "string" ? content : "");

/** The answer to a native /api/chat (`chat` true) or /api/generate body. */
export function fakeReply(body: Record<string, unknown>, chat: boolean): FakeReply {
  const options = (body.options ?? {}) as Record<string, unknown>;
  const numPredict = typeof options.num_predict === "number" ? options.num_predict : undefined;
  const messages = (chat && Array.isArray(body.messages) ? body.messages : []) as Message[];
  const prompt = chat ? text([...messages].reverse().find((m) => m.role === "user")?.content) : text(body.prompt);
  const last = messages.at(-1);
  if (chat && last?.role === "tool") return { prompt, tokens: `Tool said: ${text(last.content)}`.split(/(?=\s)/), toolCalls: [] };

  // Ollama decodes each tool into a struct: a null is an empty tool, any other non-object was its 400 already.
  const tools = (Array.isArray(body.tools) ? body.tools : []).filter((t) => t && typeof t === "object") as Array<{
    function?: { name?: string; parameters?: Schema };
  }>;
  if (chat && last?.role === "user" && tools.length) {
    const words = new Set(prompt.split(/[^\p{L}\p{N}_-]+/u));
    const tool = tools.find((t) => t.function?.name && words.has(t.function.name));
    if (tool?.function?.name) {
      const args = fakeValue(tool.function.parameters ?? { type: "object" }, prompt) as Record<string, unknown>;
      return {
        prompt,
        tokens: [],
        toolCalls: [{ id: toolCallId(), function: { index: 0, name: tool.function.name, arguments: args } }],
      };
    }
  }

  const format = body.format;
  if (format === "json" || (format && typeof format === "object")) {
    const value = format === "json" ? { answer: `You said: ${prompt}` } : fakeValue(format as Schema, prompt);
    // Pieces of the JSON text, so a streamed structured answer arrives in several chunks too.
    return { prompt, tokens: JSON.stringify(value).split(/(?=[,}])/), toolCalls: [] };
  }
  return { prompt, tokens: fakeTokens(prompt, numPredict), toolCalls: [] };
}
