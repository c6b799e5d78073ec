// The dashboard's wire format: what GET /ui/events sends and src/ui/app.ts reads. Times are epoch ms
// (the page measures waits against the snapshot's `now`), durations ms. Kept free of imports so the
// page's bundle takes the types and nothing else.

/** The running job, with live token counts from its streamed records. */
export interface RunningJob {
  id: string;
  /** As the client sent it. */
  model: string;
  /** What Ollama loads for it: model:tag plus the load options that force a reload (the queue's groups). */
  modelKey: string;
  /** loading: waiting for Ollama's first record (a model load, or the prompt); working: generating. */
  state: "loading" | "working";
  source: string;
  priority: number;
  createdAt: number;
  startedAt: number | null;
  /** Whether its claim had to load its model. */
  swapped: boolean | null;
  /** Records streamed so far (one per token on Ollama's streams). */
  tokens: number;
  /** Tokens over the time since its first record; null before there is a measure. */
  tokensPerS: number | null;
}

/** A waiting job. */
export interface QueuedJob {
  id: string;
  /** As the client sent it. */
  model: string;
  type: string;
  source: string;
  priority: number;
  createdAt: number;
}

/** One model's jobs in the queue: the first few in claim order, and how many more wait. */
export interface QueueGroup {
  /** The model key (model:tag plus load options): jobs that run on one load, as the drain takes them. */
  model: string;
  count: number;
  jobs: QueuedJob[];
  /** count minus the jobs listed. */
  more: number;
}

/** A job that ended. */
export interface RecentJob {
  id: string;
  model: string;
  source: string;
  state: string;
  error: string | null;
  finishedAt: number;
  waitMs: number;
  runMs: number | null;
  outputTokens: number | null;
  tokensPerS: number | null;
}

/** Jobs done and model swaps per minute over the last hour, oldest minute first. */
export interface HourChart {
  /** Epoch ms of the first bucket's start. */
  since: number;
  bucketMs: number;
  done: number[];
  swaps: number[];
}

/** Everything the page shows, sent whole on connect and on each change. */
export interface DashboardSnapshot {
  /** The server's clock when it was built, epoch ms. */
  now: number;
  ollama: { reachable: boolean; resident: string[] };
  running: RunningJob | null;
  /** Groups in the order they are likely to run: the running model's first, then by priority and age. */
  queue: { total: number; groups: QueueGroup[] };
  recent: RecentJob[];
  hour: HourChart;
}

/** The `tokens` event: the running job's live count, sent between snapshots. */
export interface TokenUpdate {
  id: string;
  tokens: number;
  tokensPerS: number | null;
}
