import { BadRequestError } from "../errors";

const EFFORTS = new Set(["", "none", "minimal", "low", "medium", "high", "max", "xhigh", "ultra"]);

/** Rejects a reasoning effort Ollama cannot map to a think level, with its text (R:openai/openai.go:531-547). */
export function assertReasoningEffort(effort: string | null | undefined): void {
  if (effort == null || EFFORTS.has(effort)) return;
  throw new BadRequestError(
    `invalid reasoning value: ${JSON.stringify(effort)} (must be "minimal", "low", "medium", "high", "xhigh", "ultra", "max", or "none")`,
  );
}
