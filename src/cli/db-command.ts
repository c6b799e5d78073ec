// `foreman db copy SQLITE-FILE POSTGRES-URL`: moves a stopped foreman's SQLite queue to PostgreSQL
// (src/queue/pg/copy.ts does the copy; this is its command line and its summary).
import { parseArgs } from "node:util";
import { type CopyReport, CopyError, copySqliteToPg, redactUrl } from "../queue/pg/copy";
import { isPostgresUrl } from "../queue/pg/url";
import { CliError } from "./api-client";
import { usage } from "./args";
import { formatBytes, formatTable } from "./format";

/** Usage lines of `foreman db`, for `foreman --help`. */
export const DB_USAGE = `  foreman db copy SQLITE-FILE POSTGRES-URL [--skip-batches] [--skip-webhooks]
                                copy a stopped foreman's SQLite queue into an empty PostgreSQL one, in one transaction:
                                jobs, artifacts, learned costs, API keys and their usage (the file is left as it was)`;

type Io = { stdout: (text: string) => void; stderr: (text: string) => void };

const defaultIo: Io = { stdout: (text) => process.stdout.write(text), stderr: (text) => process.stderr.write(text) };

/** Runs `foreman db …`; errors are one line on stderr and a non-zero exit code. */
export async function runDbCommand(args: string[], io: Io = defaultIo): Promise<number> {
  try {
    const [action, ...rest] = args;
    if (!action || !ACTIONS[action]) usage(`db takes one of ${Object.keys(ACTIONS).join(", ")}`);
    return await ACTIONS[action]!(rest, io);
  } catch (error) {
    if (error instanceof CliError) {
      io.stderr(`foreman db: ${error.message}\n`);
      if (error.exitCode === 2) io.stderr("run `foreman --help` for usage\n");
      return error.exitCode;
    }
    if (error instanceof CopyError) {
      io.stderr(`foreman db: ${error.message}\n`);
      return 1;
    }
    if (error instanceof TypeError && "code" in error && String(error.code).startsWith("ERR_PARSE_ARGS")) {
      io.stderr(`foreman db: ${error.message}\nrun \`foreman --help\` for usage\n`);
      return 2;
    }
    io.stderr(`foreman db: ${error instanceof Error ? error.message : String(error)}\n`);
    return 1;
  }
}

const ACTIONS: Record<string, (args: string[], io: Io) => Promise<number>> = { copy };

async function copy(args: string[], io: Io): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    strict: true,
    allowPositionals: true,
    options: { "skip-batches": { type: "boolean" }, "skip-webhooks": { type: "boolean" } },
  });
  if (positionals.length !== 2) usage("db copy takes a SQLite file and a PostgreSQL URL");
  const [sqlitePath, pgUrl] = positionals as [string, string];
  if (isPostgresUrl(sqlitePath)) usage("db copy takes the SQLite file first, then the PostgreSQL URL");
  if (!isPostgresUrl(pgUrl)) usage(`db copy copies into a postgres:// or postgresql:// URL, not "${redactUrl(pgUrl)}"`);
  const report = await copySqliteToPg({
    sqlitePath,
    pgUrl,
    skipBatches: Boolean(values["skip-batches"]),
    skipWebhooks: Boolean(values["skip-webhooks"]),
  });
  io.stdout(summary(sqlitePath, pgUrl, report));
  for (const warning of warnings(report)) io.stderr(`foreman db: warning: ${warning}\n`);
  return 0;
}

const plural = (n: number, one: string, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

/** What was copied, table by table, and what the restart recovery did on the way. */
export function summary(sqlitePath: string, pgUrl: string, report: CopyReport): string {
  const rows = Object.entries(report.rows).map(([table, n]) => [
    table,
    String(n),
    table === "artifacts" && n > 0 ? formatBytes(report.artifactBytes) : "",
  ]);
  const lines = [
    `copied ${sqlitePath} to ${redactUrl(pgUrl)} in ${(report.ms / 1000).toFixed(1)}s`,
    formatTable(["TABLE", "ROWS", "SIZE"], rows),
  ];
  const { requeued, failed, canceledRunning, canceledQueued } = report.recovery;
  if (requeued + failed + canceledRunning > 0) {
    const parts = [
      requeued ? `${requeued} re-queued` : "",
      failed ? `${failed} failed (out of attempts)` : "",
      canceledRunning ? `${plural(canceledRunning, "client request")} canceled` : "",
    ].filter(Boolean);
    lines.push(`running when foreman stopped, as a restart treats them: ${parts.join(", ")}`);
  }
  if (canceledQueued > 0) {
    lines.push(`queued client requests canceled (their connections closed with foreman): ${canceledQueued}`);
  }
  if (report.batchLinesCanceled > 0) {
    lines.push(`batch lines canceled (--skip-batches: their batches stay in SQLite): ${report.batchLinesCanceled}`);
  }
  lines.push(`queued on PostgreSQL: ${report.queued}`);
  lines.push("the SQLite file is unchanged: do not serve it again, or its queued jobs would run twice");
  return `${lines.join("\n")}\n`;
}

/** What the copy left out or cannot carry over, each a line for stderr. */
export function warnings(report: CopyReport): string[] {
  const out: string[] = [];
  const left = report.leftInSqlite;
  const stays = [
    left.batches ? plural(left.batches, "batch", "batches") : "",
    left.files ? `${plural(left.files, "file")} (${formatBytes(left.fileBytes)})` : "",
    left.webhookDeliveries ? plural(left.webhookDeliveries, "webhook delivery record", "webhook delivery records") : "",
  ].filter(Boolean);
  if (stays.length)
    out.push(`not copied, PostgreSQL having no place for them yet: ${stays.join(", ")}; they stay in the SQLite file`);
  if (left.pendingDeliveries > 0 || left.webhookJobs > 0) {
    const lost = [
      left.pendingDeliveries ? `${plural(left.pendingDeliveries, "webhook")} not yet delivered will never be` : "",
      left.webhookJobs ? `${plural(left.webhookJobs, "job")} with a webhook will run without calling it` : "",
    ].filter(Boolean);
    out.push(`--skip-webhooks: ${lost.join("; ")}`);
  }
  return out;
}
