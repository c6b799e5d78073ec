type Json = Record<string, unknown>;

/**
 * Builds the answer Ollama gives with `"stream": false` from the lines of a stream: text fields
 * (`message.content`, `message.thinking`, `response`, `thinking`) concatenated, `tool_calls` and
 * `logprobs` appended, every other field from the last chunk (R:server/routes.go:2387-2434, 750-790).
 */
export function assembleFinalResponse(lines: readonly string[]): Json {
  if (lines.length === 0) throw new Error("empty stream");
  const chunks = lines.map((line) => JSON.parse(line) as Json);
  const last = chunks[chunks.length - 1]!;
  if (chunks.length === 1) return last;

  let response = "";
  let thinking = "";
  let content = "";
  let messageThinking = "";
  const toolCalls: unknown[] = [];
  const logprobs: unknown[] = [];
  for (const chunk of chunks) {
    if (typeof chunk.response === "string") response += chunk.response;
    if (typeof chunk.thinking === "string") thinking += chunk.thinking;
    const message = chunk.message as Json | undefined;
    if (message) {
      if (typeof message.content === "string") content += message.content;
      if (typeof message.thinking === "string") messageThinking += message.thinking;
      if (Array.isArray(message.tool_calls)) toolCalls.push(...message.tool_calls);
    }
    if (Array.isArray(chunk.tool_calls)) toolCalls.push(...chunk.tool_calls);
    if (Array.isArray(chunk.logprobs)) logprobs.push(...chunk.logprobs);
  }

  // Rebuild in Ollama's field order so the body reads like the one Ollama itself would send.
  const final: Json = {};
  for (const [key, value] of Object.entries(last)) {
    if (key === "response") {
      final.response = response;
      if (thinking) final.thinking = thinking;
    } else if (key === "thinking") {
      continue;
    } else if (key === "message" && value && typeof value === "object") {
      const { role, content: _c, thinking: _t, tool_calls: _tc, ...rest } = value as Json;
      final.message = {
        role: role ?? "assistant",
        content,
        ...(messageThinking ? { thinking: messageThinking } : {}),
        ...(toolCalls.length ? { tool_calls: toolCalls } : {}),
        ...rest,
      };
    } else if (key === "tool_calls" || key === "logprobs") {
      continue;
    } else {
      final[key] = value;
    }
  }
  if (!("message" in last) && toolCalls.length) final.tool_calls = toolCalls;
  if (logprobs.length) final.logprobs = logprobs;
  return final;
}
