import type { ModelCost } from "../queue/model-costs";
import type { QueuePlan } from "../queue/start-estimate";
import type { JobModel } from "./job-model";

/** GET /queue's by_model_key: every model key learned or queued, with its costs and its group's estimated start. */
export function modelKeySummary(plan: QueuePlan, costs: Map<string, ModelCost>): JobModel.modelKeySummary {
  const summary: JobModel.modelKeySummary = {};
  for (const [key, cost] of costs) {
    summary[key] = {
      queued: 0,
      expected_load_ms: roundMs(cost.loadMs),
      expected_run_ms: roundMs(cost.runMs),
      learned_from: cost.jobs,
      estimated_start_at: null,
    };
  }
  for (const group of plan.groups.values()) {
    const entry = (summary[group.modelKey] ??= {
      queued: 0,
      expected_load_ms: null,
      expected_run_ms: null,
      learned_from: 0,
      estimated_start_at: null,
    });
    entry.queued += group.queued;
    const start = new Date(Math.max(plan.now, Math.round(group.startAt))).toISOString();
    if (entry.estimated_start_at === null || start < entry.estimated_start_at) entry.estimated_start_at = start;
  }
  return summary;
}

const roundMs = (ms: number | null) => (ms === null ? null : Math.round(ms * 10) / 10);
