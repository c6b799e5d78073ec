import { literalUnion } from "../schema/literal-union";
import type { WireAdapter } from "./adapter";
import { anthropicMessages } from "./anthropic-messages";
import { ollamaChat, ollamaGenerate } from "./ollama";
import { openaiChat } from "./openai-chat";
import { openaiCompletion } from "./openai-completion";
import { openaiEmbeddings } from "./openai-embeddings";
import { openaiResponses } from "./openai-responses";

/** Every wire format a queued job can come in, keyed by the job type stored in its row. */
export const ADAPTERS = {
  chat: ollamaChat,
  generate: ollamaGenerate,
  "openai.chat": openaiChat,
  "openai.completion": openaiCompletion,
  "openai.responses": openaiResponses,
  "openai.embeddings": openaiEmbeddings,
  "anthropic.messages": anthropicMessages,
} as const satisfies Record<string, WireAdapter>;

/** A job's type: which adapter runs it. */
export type JobType = keyof typeof ADAPTERS;

/** Every job type, in registry order. */
export const JOB_TYPES = Object.keys(ADAPTERS) as JobType[];

/** The job type as the API validates and documents it, derived from the registry. */
export const JobTypeSchema = literalUnion(JOB_TYPES as [JobType, ...JobType[]], {
  description: `Which API the request is in: ${JOB_TYPES.join(", ")}`,
});

/** The adapter of a job type. */
export function adapterFor(type: JobType): WireAdapter {
  return ADAPTERS[type];
}
