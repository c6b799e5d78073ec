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
