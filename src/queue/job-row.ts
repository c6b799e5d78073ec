import type { JobType } from "../adapters";
import type { JobSource, JobState } from "./job-states";

/** One row of `jobs`, columns aliased to camelCase. */
export interface JobRow {
  id: string;
  type: JobType;
  model: string;
  modelKey: string;
  request: string;
  source: JobSource;
  state: JobState;
  priority: number;
  attempts: number;
  maxAttempts: number;
  runAfter: number;
  error: string | null;
  errorStatus: number | null;
  createdAt: number;
  startedAt: number | null;
  finishedAt: number | null;
  result: string | null;
  idempotencyKey: string | null;
  webhookUrl: string | null;
  webhookSecret: string | null;
  /** 1 when its model was not loaded at its last claim (a swap), 0 when it was; null before any claim. */
  swapped: number | null;
  promptTokens: number | null;
  outputTokens: number | null;
  /** Ollama's load_duration and eval_duration in ms; null where its API does not report them. */
  loadMs: number | null;
  evalMs: number | null;
  /** 1 when outputTokens and evalMs are foreman's count and timing of the stream, 0 when the API's; null before done. */
  tokensEstimated: number | null;
  /** The API key that made it; null for FOREMAN_TOKEN, an open foreman, and jobs made before keys. */
  keyId: string | null;
  /** The Ollama target (its name) that runs or last ran an attempt; null before the first claim. */
  target: string | null;
}
