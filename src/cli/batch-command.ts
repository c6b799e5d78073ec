import { parseArgs } from "node:util";
import type { batchObject } from "../batch/view";
import type { fileObject } from "../batch/files";
import { BATCH_ENDPOINTS } from "../batch/validate";
import { CliError, type ForemanApi } from "./api-client";
import { oneId, usage } from "./args";
import { formatAge, formatTable } from "./format";

type Batch = ReturnType<typeof batchObject>;
type FileObject = ReturnType<typeof fileObject>;
type Io = { stdout: (text: string) => void; stderr: (text: string) => void; isTty: boolean };

/** Usage lines of `foreman batch`, for `foreman --help`. */
export const BATCH_USAGE = `  foreman batch submit FILE.jsonl [--endpoint PATH] [--wait] [--json]
                                upload an OpenAI batch input file and start a batch; prints its id,
                                or with --wait its progress until it ends
  foreman batch list [--limit N] [--json]
                                batches, newest first, with progress
  foreman batch get ID [--json] one batch, with progress and its output and error file ids
  foreman batch cancel ID       cancel a batch: lines not yet started are dropped, finished ones kept
  foreman batch output ID [--errors] [-o FILE]
                                its output file (--errors: its error file) to stdout, or to FILE`;

const ENDED = new Set(["completed", "failed", "cancelled", "expired"]);

/** `foreman batch SUBCOMMAND …`: OpenAI's Batch API from the command line. */
export async function batchCommand(api: ForemanApi, args: string[], io: Io): Promise<number> {
  const [sub, ...rest] = args;
  switch (sub) {
    case "submit":
      return submit(api, rest, io);
    case "list":
      return list(api, rest, io);
    case "get":
      return get(api, rest, io);
    case "cancel":
      return cancel(api, rest, io);
    case "output":
      return output(api, rest, io);
    default:
      usage(
        sub
          ? `unknown batch subcommand "${sub}": use submit, list, get, cancel or output`
          : "batch needs a subcommand: submit, list, get, cancel or output",
      );
  }
}

/** completed/failed/total, e.g. "12/0/300". */
function progress(batch: Batch): string {
  const counts = batch.request_counts;
  return `${counts.completed}/${counts.failed}/${counts.total}`;
}

function statusLine(batch: Batch): string {
  return `batch ${batch.id}: ${batch.status}, ${progress(batch)} completed/failed/total`;
}

async function submit(api: ForemanApi, args: string[], io: Io): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    strict: true,
    allowPositionals: true,
    options: { endpoint: { type: "string" }, wait: { type: "boolean" }, json: { type: "boolean" } },
  });
  if (positionals.length !== 1) usage("batch submit takes one FILE.jsonl");
  const path = positionals[0]!;
  const endpoint = values.endpoint ?? (await guessEndpoint(path));
  if (!(endpoint in BATCH_ENDPOINTS)) usage(`--endpoint must be one of ${Object.keys(BATCH_ENDPOINTS).join(", ")}`);
  const form = new FormData();
  form.append("purpose", "batch");
  form.append("file", Bun.file(path), path.split("/").pop());
  const file = await api.request<FileObject>("POST", "/v1/files", form);
  let batch = await api.request<Batch>("POST", "/v1/batches", {
    input_file_id: file.id,
    endpoint,
    completion_window: "24h",
  });
  if (values.wait) batch = await waitForBatch(api, batch.id, io);
  if (values.json) io.stdout(`${JSON.stringify(batch, null, 2)}\n`);
  else if (!values.wait) io.stdout(`${batch.id}\n`);
  else io.stdout(`${describe(batch)}\n`);
  return !values.wait || batch.status === "completed" ? 0 : 1;
}

/** The endpoint named by the file's first line (`url`), as every line must name the same one. */
async function guessEndpoint(path: string): Promise<string> {
  const file = Bun.file(path);
  if (!(await file.exists())) usage(`no such file: ${path}`);
  const head = await file.slice(0, 64 * 1024).text();
  try {
    const url = (JSON.parse(head.split("\n")[0]!) as { url?: unknown }).url;
    if (typeof url === "string") return url;
  } catch {
    // Not JSON: the server reports the file's lines properly.
  }
  return "/v1/chat/completions";
}

/** Polls until the batch ends, showing its progress on stderr (one live line on a terminal). */
async function waitForBatch(api: ForemanApi, id: string, io: Io): Promise<Batch> {
  let shown = "";
  for (;;) {
    const batch = await api.request<Batch>("GET", `/v1/batches/${encodeURIComponent(id)}`);
    const ended = ENDED.has(batch.status);
    const status = statusLine(batch);
    if (status !== shown) {
      io.stderr(io.isTty ? `\r\x1b[2K${status}${ended ? "\n" : ""}` : `${status}\n`);
      shown = status;
    } else if (ended && io.isTty) io.stderr("\n");
    if (ended) return batch;
    await Bun.sleep(500);
  }
}

async function list(api: ForemanApi, args: string[], io: Io): Promise<number> {
  const { values } = parseArgs({ args, strict: true, options: { limit: { type: "string" }, json: { type: "boolean" } } });
  const limit = values.limit ?? "20";
  if (!/^\d+$/.test(limit) || Number(limit) < 1 || Number(limit) > 100)
    usage(`--limit must be an integer from 1 to 100, not "${limit}"`);
  const page = await api.request<{ data: Batch[] }>("GET", `/v1/batches?limit=${limit}`);
  if (values.json) {
    io.stdout(`${JSON.stringify(page.data, null, 2)}\n`);
    return 0;
  }
  const rows = page.data.map((b) => [
    b.id,
    b.status,
    b.endpoint,
    progress(b),
    formatAge(new Date(b.created_at * 1000).toISOString()),
  ]);
  io.stdout(`${formatTable(["ID", "STATUS", "ENDPOINT", "DONE/FAILED/TOTAL", "AGE"], rows)}\n`);
  return 0;
}

function oneBatchId(args: string[], command: string): { id: string; json: boolean } {
  return oneId(args, {
    command: `batch ${command}`,
    kind: "batch",
    pattern: /^batch_[0-9A-Z]{26}$/,
    shape: '"batch_" and 26 characters (as batch submit prints it)',
  });
}

function describe(batch: Batch): string {
  const lines: Array<[string, string]> = [
    ["id", batch.id],
    ["status", batch.status],
    ["endpoint", batch.endpoint],
    ["progress", `${progress(batch)} completed/failed/total`],
    ["created", new Date(batch.created_at * 1000).toISOString()],
    ["input", batch.input_file_id],
  ];
  if (batch.output_file_id) lines.push(["output", `${batch.output_file_id} (GET /v1/files/${batch.output_file_id}/content)`]);
  if (batch.error_file_id) lines.push(["errors", `${batch.error_file_id} (GET /v1/files/${batch.error_file_id}/content)`]);
  const problems = (batch.errors as { data?: Array<{ line: number | null; message: string }> } | null)?.data ?? [];
  for (const problem of problems)
    lines.push(["error", `${problem.line === null ? "" : `line ${problem.line}: `}${problem.message}`]);
  return lines.map(([k, v]) => `${`${k}:`.padEnd(10)}${v}`).join("\n");
}

async function get(api: ForemanApi, args: string[], io: Io): Promise<number> {
  const { id, json } = oneBatchId(args, "get");
  const batch = await api.request<Batch>("GET", `/v1/batches/${encodeURIComponent(id)}`);
  io.stdout(json ? `${JSON.stringify(batch, null, 2)}\n` : `${describe(batch)}\n`);
  return 0;
}

async function cancel(api: ForemanApi, args: string[], io: Io): Promise<number> {
  const { id } = oneBatchId(args, "cancel");
  const batch = await api.request<Batch>("POST", `/v1/batches/${encodeURIComponent(id)}/cancel`);
  io.stdout(`${batch.status} ${batch.id} (${progress(batch)} completed/failed/total)\n`);
  return 0;
}

/** `batch output`: the output (or error) file's JSONL, streamed, never whole in memory. */
async function output(api: ForemanApi, args: string[], io: Io): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    strict: true,
    allowPositionals: true,
    options: { errors: { type: "boolean" }, output: { type: "string", short: "o" } },
  });
  const { id } = oneBatchId(positionals, "output");
  if (values.output === "") usage("-o must name a file");
  const batch = await api.request<Batch>("GET", `/v1/batches/${encodeURIComponent(id)}`);
  const fileId = values.errors ? batch.error_file_id : batch.output_file_id;
  if (!fileId) {
    const which = values.errors ? "error file (no line failed, or it has not ended)" : "output file yet";
    throw new CliError(`batch ${id} (${batch.status}) has no ${which}`);
  }
  const body = await api.download(`/v1/files/${encodeURIComponent(fileId)}/content`);
  if (values.output !== undefined) {
    await Bun.write(values.output, new Response(body));
    return 0;
  }
  const decoder = new TextDecoder();
  for await (const chunk of body) io.stdout(decoder.decode(chunk, { stream: true }));
  io.stdout(decoder.decode());
  return 0;
}
