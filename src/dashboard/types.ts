// The dashboard's wire format: what GET /ui/events sends and src/ui/app.ts reads. Times are epoch ms
// (the page measures waits against the snapshot's `now`), durations ms. Kept free of imports so the
// page's bundle takes the types and nothing else. Models are named by their model key throughout (what
// the queue groups by: "llama3.2" and "llama3.2:latest" are one model), never as each client spelled it.

/** The running job, with live token counts from its streamed records. */
export interface RunningJob {
  id: string;
  /** As the client sent it. */
  model: string;
  /** What Ollama loads for it: model:tag plus the load options that force a reload (the queue's groups). */
  modelKey: string;
  /** loading: waiting for Ollama's first record (a model load, or the prompt); working: generating. */
  state: "loading" | "working";
  /** The job type: chat, generate, openai.chat, … */
  type: string;
  /** The first words of its prompt (see src/dashboard/preview.ts); "" when it has none in text. */
  preview: string;
  source: string;
  priority: number;
  createdAt: number;
  startedAt: number | null;
  /** Whether its claim had to load its model. */
  swapped: boolean | null;
  /** The name of the API key that asked for it; null without one, or when it is not the viewer's to see. */
  key: string | null;
  /** Records streamed so far (one per token on Ollama's streams). */
  tokens: number;
  /** Tokens over the time since its first record; null before there is a measure. */
  tokensPerS: number | null;
}

/**
 * When a queued job or group is expected to start, from the queue's plan (the API's estimated_start_at):
 * epoch ms; 0 when it is next (its start is due now); null while the queue is held (see `degraded`).
 */
export type ExpectedStart = number | null;

/** A waiting job. */
export interface QueuedJob {
  id: string;
  /** As the client sent it. */
  model: string;
  /** The job type: chat, generate, openai.chat, … */
  type: string;
  /** The first words of its prompt (see src/dashboard/preview.ts); "" when it has none in text. */
  preview: string;
  source: string;
  priority: number;
  createdAt: number;
  estimatedStartAt: ExpectedStart;
  /** The name of the API key that asked for it; null without one. */
  key: string | null;
}

/** One model's jobs in the queue: the first few in claim order, and how many more wait. */
export interface QueueGroup {
  /** The model key (model:tag plus load options): jobs that run on one load, as the drain takes them. */
  model: string;
  count: number;
  /** When its first job is expected to start. */
  estimatedStartAt: ExpectedStart;
  jobs: QueuedJob[];
  /** count minus the jobs listed. */
  more: number;
}

/** A job that ended. */
export interface RecentJob {
  id: string;
  /** As the client sent it. */
  model: string;
  modelKey: string;
  type: string;
  source: string;
  state: string;
  error: string | null;
  finishedAt: number;
  waitMs: number;
  runMs: number | null;
  outputTokens: number | null;
  tokensPerS: number | null;
  /** The name of the API key that asked for it; null without one. */
  key: string | null;
}

/** Jobs done and model swaps per minute over the last hour, oldest minute first. */
export interface HourChart {
  /** Epoch ms of the first bucket's start. */
  since: number;
  bucketMs: number;
  done: number[];
  swaps: number[];
}

/** One job's time on the GPU: from its claim to its end (or now, for the running job). */
export interface TimelineBar {
  id: string;
  modelKey: string;
  type: string;
  /** done, failed or canceled. */
  state: string;
  startedAt: number;
  finishedAt: number;
  /** Whether its claim had to load its model (a swap). */
  swapped: boolean;
  /** Ollama's load_duration, ms (native APIs only; null elsewhere). */
  loadMs: number | null;
  /** The name of the API key that asked for it; null without one, or another key's (its id is "" then). */
  key: string | null;
}

/** What the GPU did lately: the jobs that ended since `since`, oldest first (the running job is `running`). */
export interface Timeline {
  /** Epoch ms, a whole minute: the page draws the last {@link Timeline.windowMs} of it. */
  since: number;
  windowMs: number;
  jobs: TimelineBar[];
  /** Whether older jobs in the window were left out (the list is bounded). */
  truncated: boolean;
}

/** A reason foreman works below its best (Ollama unreachable, …), with what it means for the queue. */
export interface DegradedReason {
  reason: string;
  message: string;
}

/** One Ollama target (a GPU) when there are several: a lane of its own on the page. */
export interface TargetLane {
  name: string;
  reachable: boolean;
  /** Generations of its loaded model key it serves at once. */
  slots: number;
  /** Model keys it has loaded (its /api/ps). */
  resident: string[];
  /** What runs on it now, oldest first. */
  running: RunningJob[];
}

/** One API key's line on the Keys panel: who uses the GPU, this UTC day. */
export interface KeyLine {
  name: string;
  /** Prompt plus output tokens of its jobs done today (what its daily quota counts). */
  tokens: number;
  /** What its jobs that ended today held the GPU, ms (start to end, the load too when one caused the swap). */
  gpuMs: number;
  /** Its jobs queued or running now. */
  waiting: number;
  /** Its jobs done today. */
  done: number;
}

/** Everything the page shows, sent whole on connect and on each change. */
export interface DashboardSnapshot {
  /** The server's clock when it was built, epoch ms. */
  now: number;
  ollama: { reachable: boolean; resident: string[] };
  /** Empty when all is well; the page shows each as a banner. */
  degraded: DegradedReason[];
  running: RunningJob | null;
  /** With several Ollama targets: a lane per target (absent with one). */
  targets?: TargetLane[];
  /** Groups in the order they are likely to run: the running model's first, then by priority and age. */
  queue: { total: number; groups: QueueGroup[] };
  recent: RecentJob[];
  hour: HourChart;
  timeline: Timeline;
  /** Only when keys exist: every key for an admin, its own line alone for a client key (UTC day). */
  keys?: KeyLine[];
}

/** The `tokens` event: the running job's live count, sent between snapshots. */
export interface TokenUpdate {
  id: string;
  tokens: number;
  tokensPerS: number | null;
}
