import { formatDuration } from "../duration";

/** Rows as columns padded to their widest cell, three spaces apart, like `ollama ps`. */
export function formatTable(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => (row[i] ?? "").length)));
  const line = (cells: string[]) =>
    cells
      .map((cell, i) => (i === cells.length - 1 ? cell : cell.padEnd(widths[i]!)))
      .join("   ")
      .trimEnd();
  return [line(header), ...rows.map(line)].join("\n");
}

/** "12s ago", "3m4s ago" from an ISO time. */
export function formatAge(iso: string, now = Date.now()): string {
  return `${formatDuration(Math.max(0, now - Date.parse(iso)))} ago`;
}

/** How long a job ran (or has been running), "-" before it started. */
export function formatRunTime(startedAt: string | null, finishedAt: string | null, now = Date.now()): string {
  if (!startedAt) return "-";
  return formatDuration((finishedAt ? Date.parse(finishedAt) : now) - Date.parse(startedAt));
}

/** Bytes as ollama shows them: "2.0 GB", "512 MB". */
export function formatBytes(bytes: number): string {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) ((value /= 1000), unit++);
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}

/** Longer than this ahead is "forever": Ollama's keep_alive -1 sets expires_at centuries away (2099, 2318…). */
const FOREVER_MS = 10 * 365 * 86_400_000;

const UNITS: Array<[number, string]> = [
  [86_400_000, "day"],
  [3_600_000, "hour"],
  [60_000, "minute"],
  [1000, "second"],
];

/** When an ISO time comes, in words: "in 4 minutes", "in 1 hour"; "forever" for the far future; "now" once past. */
export function formatUntil(iso: string, now = Date.now()): string {
  const ms = Date.parse(iso) - now;
  if (Number.isNaN(ms)) return "-";
  if (ms > FOREVER_MS) return "forever";
  if (ms <= 0) return "now";
  for (const [size, name] of UNITS) {
    if (ms >= size) {
      const n = Math.floor(ms / size);
      return `in ${n} ${name}${n === 1 ? "" : "s"}`;
    }
  }
  return "in less than a second";
}

/** A queued job's estimated start (an ISO time), coarsely: "starts in ~2m", "starts in ~40s", "starts any moment". */
export function formatEstimatedStart(iso: string, now = Date.now()): string {
  const ms = Date.parse(iso) - now;
  if (Number.isNaN(ms)) return "";
  if (ms < 1000) return "starts any moment";
  if (ms < 60_000) return `starts in ~${Math.ceil(ms / 1000)}s`;
  if (ms < 3_600_000) return `starts in ~${Math.round(ms / 60_000)}m`;
  const minutes = Math.round(ms / 60_000);
  return `starts in ~${Math.floor(minutes / 60)}h${minutes % 60}m`;
}
