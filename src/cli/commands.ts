import { parseArgs } from "node:util";
import { loadClientConfig } from "../config";
import type { JobModel } from "../http/job-model";
import { PRIORITY_RANGE } from "../job-service";
import { JOB_STATES, isTerminal } from "../queue/job-states";
import type { JobView } from "../queue/job-view";
import { CliError, ForemanApi } from "./api-client";
import { oneId, usage } from "./args";
import { BATCH_USAGE, batchCommand } from "./batch-command";
import { formatDuration } from "../duration";
import { formatAge, formatBytes, formatEstimatedStart, formatRunTime, formatTable, formatUntil } from "./format";

/**
 * A job as the CLI reads it. `estimated_start_at` (a queued job's expected start, ISO) comes from servers
 * that estimate it; the CLI shows it when present and works without it.
 */
type ShownJob = JobView & { estimated_start_at?: string | null };

/** "starts in ~2m" for a queued job whose server estimates it, else "". */
function startEstimate(job: ShownJob): string {
  return job.state === "queued" && job.estimated_start_at ? formatEstimatedStart(job.estimated_start_at) : "";
}

/** What `submit --wait` shows of a job: its state; while queued its position, or the retry it waits for and why. */
export function waitStatus(job: ShownJob): string {
  if (job.state !== "queued") return `job ${job.id}: ${job.state}`;
  let status: string;
  if (!job.error) status = `queued, position ${job.queue_position}`;
  // attempts counts the attempts made: the next is attempts + 1. With none counted (Ollama was down, or
  // foreman restarted), it is not a retry of a failed attempt.
  else if (job.attempts > 0) status = `retry ${job.attempts + 1}/${job.max_attempts} after: ${job.error}`;
  else status = `queued again after: ${job.error}`;
  const estimate = startEstimate(job);
  return `job ${job.id}: ${status}${estimate ? `, ${estimate}` : ""}`;
}

/** Usage lines of the client subcommands, for `foreman --help`. */
export const CLIENT_USAGE = `  foreman submit --model M (--prompt TEXT | --message TEXT | --file PATH) [--type chat|generate]
                 [--system TEXT] [--priority N] [--webhook URL] [--wait] [--json]
                                queue a job (TEXT or PATH "-" reads stdin); prints its id, or with --wait its answer
  foreman jobs [--state S] [--model M] [--limit N] [--json]
                                list jobs, newest first
  foreman job ID [--full] [--json]
                                show one job (--full: all of a long answer)
  foreman cancel ID             cancel a queued or running job
  foreman ps                    loaded models and the queue
${BATCH_USAGE}
  (they talk to FOREMAN_URL, default http://127.0.0.1:8080, with FOREMAN_TOKEN if set)`;

type Io = { stdout: (text: string) => void; stderr: (text: string) => void; stdin: () => Promise<string>; isTty: boolean };

const defaultIo: Io = {
  stdout: (text) => process.stdout.write(text),
  stderr: (text) => process.stderr.write(text),
  stdin: () => Bun.stdin.text(),
  isTty: Boolean(process.stderr.isTTY),
};

const COMMANDS: Record<string, (api: ForemanApi, args: string[], io: Io) => Promise<number>> = {
  submit,
  jobs,
  job,
  cancel,
  ps,
  batch: batchCommand,
};

/** What follows a misuse's one-line error: the usage is a command away, not 17 lines of scroll. */
export const USAGE_HINT = "run `foreman --help` for usage\n";

/** The subcommands that talk to a running server. */
export const CLIENT_COMMANDS = new Set(Object.keys(COMMANDS));

/** Runs one client subcommand; errors become one line on stderr and a non-zero exit code. */
export async function runClientCommand(command: string, args: string[], io: Io = defaultIo): Promise<number> {
  try {
    return await COMMANDS[command]!(new ForemanApi(loadClientConfig()), args, io);
  } catch (error) {
    if (error instanceof CliError) {
      io.stderr(`foreman ${command}: ${error.message}\n`);
      if (error.exitCode === 2) io.stderr(USAGE_HINT);
      return error.exitCode;
    }
    // parseArgs reports unknown or malformed flags as TypeErrors with a code.
    if (error instanceof TypeError && "code" in error && String(error.code).startsWith("ERR_PARSE_ARGS")) {
      io.stderr(`foreman ${command}: ${error.message}\n${USAGE_HINT}`);
      return 2;
    }
    io.stderr(`foreman ${command}: ${error instanceof Error ? error.message : String(error)}\n`);
    return 1;
  }
}

/** The job states, from the schema the server validates with, so `--state` is checked before any request. */

/** An integer flag within [min, max], checked here so misuse exits 2 rather than being refused by the server. */
function integerFlag(name: string, value: string | undefined, min: number, max: number): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!/^-?\d+$/.test(value) || n < min || n > max) usage(`--${name} must be an integer from ${min} to ${max}, not "${value}"`);
  return n;
}

function oneOfFlag(name: string, value: string | undefined, allowed: readonly string[]): string | undefined {
  if (value !== undefined && !allowed.includes(value)) usage(`--${name} must be one of ${allowed.join(", ")}, not "${value}"`);
  return value;
}

async function submit(api: ForemanApi, args: string[], io: Io): Promise<number> {
  const { values } = parseArgs({
    args,
    strict: true,
    options: {
      model: { type: "string" },
      prompt: { type: "string" },
      message: { type: "string" },
      file: { type: "string" },
      type: { type: "string" },
      system: { type: "string" },
      priority: { type: "string" },
      webhook: { type: "string" },
      wait: { type: "boolean" },
      json: { type: "boolean" },
    },
  });
  if (!values.model) usage("--model is required");
  const sources = [values.prompt, values.message, values.file].filter((v) => v !== undefined);
  if (sources.length !== 1) usage("give exactly one of --prompt, --message or --file");
  const type = values.type ?? (values.prompt !== undefined ? "generate" : "chat");
  if (type !== "chat" && type !== "generate") usage(`--type must be chat or generate, not "${type}"`);
  const priority = integerFlag("priority", values.priority, PRIORITY_RANGE.min, PRIORITY_RANGE.max);
  if (values.webhook !== undefined && !/^https?:$/.test(URL.parse(values.webhook)?.protocol ?? "")) {
    usage(`--webhook must be an http or https URL, not "${values.webhook}"`);
  }

  let text: string;
  if (values.file !== undefined) {
    const file = Bun.file(values.file);
    if (values.file !== "-" && !(await file.exists())) usage(`--file: no such file: ${values.file}`);
    text = values.file === "-" ? await io.stdin() : await file.text();
  } else {
    const given = (values.prompt ?? values.message)!;
    text = given === "-" ? await io.stdin() : given;
  }
  const request =
    type === "chat"
      ? {
          model: values.model,
          messages: [...(values.system ? [{ role: "system", content: values.system }] : []), { role: "user", content: text }],
        }
      : { model: values.model, prompt: text, ...(values.system ? { system: values.system } : {}) };
  const submitted = await api.request<JobView>("POST", "/jobs", {
    type,
    request,
    ...(priority !== undefined ? { priority } : {}),
    ...(values.webhook !== undefined ? { webhook: { url: values.webhook } } : {}),
  });
  if (!values.wait) {
    io.stdout(values.json ? `${JSON.stringify(submitted, null, 2)}\n` : `${submitted.id}\n`);
    return 0;
  }
  const finished = await waitForJob(api, submitted.id, io);
  if (values.json) io.stdout(`${JSON.stringify(finished, null, 2)}\n`);
  else if (finished.state === "done") io.stdout(`${answerText(finished)}\n`);
  if (finished.state !== "done") {
    io.stderr(`foreman submit: job ${finished.id} ${finished.state}${finished.error ? `: ${finished.error}` : ""}\n`);
    return 1;
  }
  return 0;
}

/** Polls the job until it ends, showing its position and state on stderr (one live line on a terminal). */
async function waitForJob(api: ForemanApi, id: string, io: Io): Promise<JobView> {
  let shown = "";
  for (;;) {
    const job = await api.request<ShownJob>("GET", `/jobs/${id}`);
    const ended = isTerminal(job.state);
    const status = waitStatus(job);
    if (status !== shown) {
      io.stderr(io.isTty ? `\r\x1b[2K${status}${ended ? "\n" : ""}` : `${status}\n`);
      shown = status;
    } else if (ended && io.isTty) io.stderr("\n");
    if (ended) return job;
    await Bun.sleep(250);
  }
}

function answerText(job: JobView): string {
  const result = job.result as { message?: { content?: string }; response?: string } | null;
  return result?.message?.content ?? result?.response ?? "";
}

/** How much of an answer `foreman job` shows without --full: a screenful, not a 1,000-word essay. */
export const ANSWER_PREVIEW_CHARS = 500;

function shortened(text: string): string {
  const chars = [...text];
  if (chars.length <= ANSWER_PREVIEW_CHARS) return text;
  const rest = chars.length - ANSWER_PREVIEW_CHARS;
  return `${chars.slice(0, ANSWER_PREVIEW_CHARS).join("")}… (${rest} more characters; --full for all)`;
}

async function jobs(api: ForemanApi, args: string[], io: Io): Promise<number> {
  const { values } = parseArgs({
    args,
    strict: true,
    options: { state: { type: "string" }, model: { type: "string" }, limit: { type: "string" }, json: { type: "boolean" } },
  });
  const query = new URLSearchParams();
  const state = oneOfFlag("state", values.state, JOB_STATES);
  if (state) query.set("state", state);
  if (values.model !== undefined && !values.model) usage("--model must not be empty");
  if (values.model) query.set("model", values.model);
  const limit = integerFlag("limit", values.limit, 1, 500);
  if (limit !== undefined) query.set("limit", String(limit));
  const list = await api.request<{ jobs: ShownJob[] }>("GET", `/jobs${query.size ? `?${query}` : ""}`);
  if (values.json) {
    io.stdout(`${JSON.stringify(list.jobs, null, 2)}\n`);
    return 0;
  }
  if (list.jobs.length === 0) {
    const filters = [state && `--state ${state}`, values.model && `--model ${values.model}`].filter(Boolean);
    io.stdout(filters.length ? `no jobs match ${filters.join(" ")}\n` : "no jobs\n");
    return 0;
  }
  const rows = list.jobs.map((j) => {
    const estimate = startEstimate(j);
    return [
      j.id,
      j.state === "queued" && j.queue_position ? `queued #${j.queue_position}` : j.state,
      j.model,
      j.type,
      formatAge(j.created_at),
      formatDuration(j.wait_ms) + (estimate ? ` (${estimate})` : ""),
      formatRunTime(j.state === "queued" ? null : j.started_at, j.finished_at),
      `${j.attempts}/${j.max_attempts}`,
    ];
  });
  io.stdout(`${formatTable(["ID", "STATE", "MODEL", "TYPE", "AGE", "WAIT", "DURATION", "ATTEMPTS"], rows)}\n`);
  return 0;
}

function oneJobId(args: string[], command: string, flags: readonly string[] = []) {
  return oneId(args, {
    command,
    flags,
    kind: "job",
    pattern: /^[0-9A-HJKMNP-TV-Z]{26}$/,
    shape: "26 characters of 0-9 and A-Z (a ULID, as submit prints it)",
  });
}

async function job(api: ForemanApi, args: string[], io: Io): Promise<number> {
  const { id, json, flags } = oneJobId(args, "job", ["full"]);
  const view = await api.request<ShownJob>("GET", `/jobs/${encodeURIComponent(id)}`);
  if (json) {
    io.stdout(`${JSON.stringify(view, null, 2)}\n`);
    return 0;
  }
  const lines: Array<[string, string]> = [
    ["id", view.id],
    ["state", view.state + (view.queue_position ? ` (position ${view.queue_position})` : "")],
    ["type", view.type],
    ["model", view.model],
    ["priority", String(view.priority)],
    ["attempts", `${view.attempts}/${view.max_attempts}`],
    ["created", `${view.created_at} (${formatAge(view.created_at)})`],
    view.state === "queued" ? ["waiting", `${formatDuration(view.wait_ms)} so far`] : ["waited", formatDuration(view.wait_ms)],
  ];
  const estimate = startEstimate(view);
  if (estimate) lines.push(["starts", `${estimate.replace(/^starts /, "")} (${view.estimated_start_at})`]);
  // A re-queued job keeps its last attempt's started_at: while it waits, it is not running.
  lines.push(["duration", formatRunTime(view.state === "queued" ? null : view.started_at, view.finished_at)]);
  if (view.output_tokens !== null) {
    const rate = view.tokens_per_s === null ? "" : `, ${view.tokens_per_s}/s`;
    lines.push([
      "tokens",
      `${view.prompt_tokens ?? "?"} in, ${view.output_tokens} out${rate}${view.swapped ? " (model loaded)" : ""}`,
    ]);
  }
  if (view.error) lines.push(["error", view.error]);
  if (view.webhook) lines.push(["webhook", `${view.webhook.url} (${view.webhook.state}, ${view.webhook.attempts} attempts)`]);
  if (view.state === "done") lines.push(["answer", flags.has("full") ? answerText(view) : shortened(answerText(view))]);
  io.stdout(`${lines.map(([k, v]) => `${`${k}:`.padEnd(10)}${v}`).join("\n")}\n`);
  return 0;
}

async function cancel(api: ForemanApi, args: string[], io: Io): Promise<number> {
  const { id } = oneJobId(args, "cancel");
  const view = await api.request<JobView>("DELETE", `/jobs/${encodeURIComponent(id)}`);
  io.stdout(`canceled ${view.id}\n`);
  return 0;
}

interface PsModel {
  name: string;
  /** With several targets: where it is loaded. */
  target?: string;
  digest?: string;
  size?: number;
  size_vram?: number;
  expires_at?: string;
}

async function ps(api: ForemanApi, args: string[], io: Io): Promise<number> {
  parseArgs({ args, strict: true, options: {} });
  const [loaded, queue] = await Promise.all([
    api.request<{ models: PsModel[] }>("GET", "/api/ps"),
    api.request<typeof JobModel.queue.static>("GET", "/queue"),
  ]);
  // Several targets: a column saying where each model is loaded, and a line per target below.
  const several = queue.targets !== undefined;
  const rows = loaded.models.map((m) => [
    ...(several ? [m.target ?? "-"] : []),
    m.name,
    (m.digest ?? "").replace(/^sha256:/, "").slice(0, 12),
    m.size === undefined ? "-" : formatBytes(m.size),
    m.size && m.size_vram !== undefined ? `${Math.round((m.size_vram / m.size) * 100)}% GPU` : "-",
    m.expires_at ? formatUntil(m.expires_at) : "-",
  ]);
  let out = `${formatTable([...(several ? ["TARGET"] : []), "NAME", "ID", "SIZE", "PROCESSOR", "UNTIL"], rows)}\n\n`;
  const perModel = Object.entries(queue.by_model).map(([model, n]) => [model, String(n)]);
  // An older server's /queue has no reasons: its degraded meant Ollama alone.
  const held = queue.degraded ? `  (degraded: ${queue.reasons?.join(" ") || "ollama unreachable"})` : "";
  out += `QUEUE  ${queue.depth} queued${held}\n`;
  if (perModel.length) out += `${formatTable(["MODEL", "QUEUED"], perModel)}\n`;
  const run = queue.running;
  out += run
    ? `RUNNING  ${run.id}  ${run.model}  ${run.state}${run.started_at ? `  for ${formatRunTime(run.started_at, null)}` : ""}\n`
    : "RUNNING  nothing\n";
  if (queue.targets) {
    const lanes = queue.targets.map((t) => [
      t.name,
      t.reachable ? "up" : "unreachable",
      `${t.running.length}/${t.slots}`,
      t.running.map((j) => `${j.id} ${j.model} ${j.state}`).join(", ") || "-",
    ]);
    out += `\n${formatTable(["TARGET", "STATE", "SLOTS", "RUNNING"], lanes)}\n`;
  }
  io.stdout(out);
  return 0;
}
