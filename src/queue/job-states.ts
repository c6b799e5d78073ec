import { literalUnion } from "../schema/literal-union";

/** A job's life: queued → loading → working → done | failed | canceled. Written once; types and checks derive from it. */
export const JOB_STATES = ["queued", "loading", "working", "done", "failed", "canceled"] as const;
export type JobState = (typeof JOB_STATES)[number];

/** The states a job never leaves. */
export const TERMINAL_STATES = ["done", "failed", "canceled"] as const satisfies readonly JobState[];
export type TerminalState = (typeof TERMINAL_STATES)[number];

/** True once the job has ended. */
export function isTerminal(state: JobState): state is TerminalState {
  return (TERMINAL_STATES as readonly JobState[]).includes(state);
}

/** The state as the API validates and documents it. */
export const JobStateSchema = literalUnion(JOB_STATES, { description: `One of ${JOB_STATES.join(", ")}` });

/**
 * Who waits for a job: "jobs" (the job API: nobody holds a connection, watchers may come and go),
 * "batch" (a line of an OpenAI batch: nobody waits either), or the API family whose route a client
 * called and is waiting on.
 */
export const JOB_SOURCES = ["ollama", "openai", "anthropic", "jobs", "batch"] as const;
export type JobSource = (typeof JOB_SOURCES)[number];

export const JobSourceSchema = literalUnion(JOB_SOURCES, {
  description:
    "jobs: made by POST /jobs; batch: a line of POST /v1/batches; otherwise the API whose route made it (a client waits on the answer)",
});

/** The sources whose jobs no connection waits on: they outlive a restart (re-queued), where a client's request cannot. */
export const NOBODY_WAITING_SOURCES = ["jobs", "batch"] as const satisfies readonly JobSource[];

/** True for a job API or batch job; false for a request whose client holds a connection for the answer. */
export function isNobodyWaiting(source: JobSource): boolean {
  return (NOBODY_WAITING_SOURCES as readonly JobSource[]).includes(source);
}
