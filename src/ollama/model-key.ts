/**
 * Options that make Ollama reload a model when they change (R:server/sched.go needsReload):
 * two requests for one model that differ in any of these cost a swap.
 */
export const LOAD_OPTIONS = [
  "num_ctx",
  "num_batch",
  "num_gpu",
  "main_gpu",
  "use_mmap",
  "num_thread",
  "draft_num_predict",
] as const;

/** A model name as Ollama resolves it: no tag means `:latest`. @example normalizeModel("llama3.2") // "llama3.2:latest" */
export function normalizeModel(name: string): string {
  const lastSegment = name.slice(name.lastIndexOf("/") + 1);
  return lastSegment.includes(":") ? name : `${name}:latest`;
}

/**
 * The identity of a loaded model: the normalized name plus the load-time options the request sets.
 * @example modelKey("llama3.2", { num_ctx: 8192, temperature: 0 }) // "llama3.2:latest num_ctx=8192"
 */
export function modelKey(model: string, options: unknown): string {
  let key = normalizeModel(model);
  if (options && typeof options === "object") {
    const record = options as Record<string, unknown>;
    for (const name of LOAD_OPTIONS) {
      if (record[name] !== undefined && record[name] !== null) key += ` ${name}=${JSON.stringify(record[name])}`;
    }
  }
  return key;
}
