/// <reference lib="dom" />
// The page's two pictures, drawn as inline SVG at the width of their box (so text stays sharp and
// readable on a phone; redrawn when the window resizes): the GPU timeline, one bar per job, and the
// hour's jobs and swaps per minute. Colours are attributes, not styles: the page's CSP allows no inline style.
import type { HourChart, RunningJob, Timeline } from "../dashboard/types";
import { h, svg } from "./dom";
import { clock, formatMs, lastMinutes, modelColour, modelParts } from "./format";

const MINUTE_MS = 60_000;
/** A gap between jobs at least this long (and a hundredth of the window) is marked idle. */
const IDLE_MIN_MS = 1000;
/** Below this width (px) the axes label every other step. */
const NARROW = 520;

/** One job's stretch on the timeline. */
interface Span {
  id: string;
  modelKey: string;
  type: string;
  state: string;
  start: number;
  end: number;
  swapped: boolean;
  loadMs: number | null;
  /** The running job still loading its model: its whole bar so far is the load. */
  loading: boolean;
}

const widthOf = (box: HTMLElement) => Math.max(280, Math.floor(box.clientWidth || 600));

/** A small square of a model's colour, for legends (an SVG: a styled span would need an inline style). */
export const swatch = (colour: string) =>
  svg(
    "svg",
    { class: "swatch", viewBox: "0 0 10 10", "aria-hidden": "true" },
    svg("rect", { width: 10, height: 10, rx: 2, fill: colour }),
  );

/** Clock labels under a time axis from `from` to `now`, every `step` ms, "now" at the right end. */
function timeAxis(from: number, now: number, step: number, x: (t: number) => number, y: number, width: number): SVGElement[] {
  const parts: SVGElement[] = [svg("line", { class: "axis", x1: 0, y1: y, x2: width, y2: y })];
  for (let t = Math.ceil(from / step) * step; t <= now; t += step) {
    const at = x(t);
    parts.push(svg("line", { class: "tick", x1: at, y1: y, x2: at, y2: y + 4 }));
    // No label crowding the ends: "now" has the right one.
    if (at > 16 && at < width - 48)
      parts.push(svg("text", { class: "tick-label", x: at, y: y + 16, "text-anchor": "middle" }, clock(t)));
  }
  parts.push(svg("text", { class: "tick-label now", x: width, y: y + 16, "text-anchor": "end" }, "now"));
  return parts;
}

/** A downward triangle above `x`: where a model was loaded (a swap). */
const swapMark = (x: number, top: number, attrs: Record<string, string>, label: string) =>
  svg(
    "path",
    { class: "swap-mark", d: `M${x - 5} ${top} L${x + 5} ${top} L${x} ${top + 9} Z`, ...attrs },
    svg("title", {}, label),
  );

/**
 * What the GPU did over the timeline's window up to `now`: a bar per job in its model's colour (the
 * running one growing), a red mark where a model was loaded with the load itself shaded when Ollama
 * reported it, the idle gaps shaded, a clock axis; then a legend and the share of the window busy.
 * The window is the timeline's (ten minutes) unless every job in it is younger: then it narrows to them,
 * a minute at least, so a fresh server's first jobs are not a sliver at the right. Returns its minutes.
 */
export function drawTimeline(box: HTMLElement, timeline: Timeline, running: RunningJob | null, now: number): number {
  const width = widthOf(box);
  const lane = { top: 16, height: 30 };
  const axisY = lane.top + lane.height + 6;

  const spans: Span[] = timeline.jobs
    .filter((job) => job.finishedAt > now - timeline.windowMs)
    .map((job) => ({ ...job, start: job.startedAt, end: job.finishedAt, loading: false }));
  if (running?.startedAt != null) {
    spans.push({
      id: running.id,
      modelKey: running.modelKey,
      type: running.type,
      state: "running",
      start: running.startedAt,
      end: now,
      swapped: running.swapped === true,
      loadMs: null,
      loading: running.state === "loading" && running.swapped === true,
    });
  }
  spans.sort((a, b) => a.start - b.start);
  const earliest = spans[0]?.start ?? now - timeline.windowMs;
  const windowMs = timeline.truncated
    ? timeline.windowMs
    : Math.min(timeline.windowMs, Math.max(MINUTE_MS, Math.ceil(((now - earliest) * 1.15) / MINUTE_MS) * MINUTE_MS));
  const from = now - windowMs;
  const x = (t: number) => ((Math.min(now, Math.max(from, t)) - from) / windowMs) * width;

  // Idle: the gaps between jobs, and before the first when nothing older was left out.
  const idle: Array<[number, number]> = [];
  const idleMin = Math.max(IDLE_MIN_MS, windowMs / 100);
  let cursor = timeline.truncated && spans.length ? spans[0]!.start : from;
  for (const span of spans) {
    if (span.start - cursor >= idleMin) idle.push([cursor, span.start]);
    cursor = Math.max(cursor, span.end);
  }
  if (now - cursor >= idleMin) idle.push([cursor, now]);

  const parts: SVGElement[] = [];
  for (const [start, end] of idle) {
    const x1 = x(start);
    const w = x(end) - x1;
    parts.push(
      svg(
        "rect",
        { class: "idle", x: x1, y: lane.top, width: w, height: lane.height },
        svg("title", {}, `idle ${formatMs(end - start)} (${clock(start)}–${end >= now ? "now" : clock(end)})`),
      ),
    );
    if (w > 36)
      parts.push(
        svg("text", { class: "idle-label", x: x1 + w / 2, y: lane.top + lane.height / 2 + 4, "text-anchor": "middle" }, "idle"),
      );
  }
  let busy = 0;
  for (const span of spans) {
    const x1 = x(span.start);
    const w = Math.max(1.5, x(span.end) - x1);
    busy += Math.max(0, Math.min(now, span.end) - Math.max(from, span.start));
    const load = span.loadMs ? ` (model load ${formatMs(span.loadMs)})` : span.swapped ? " (model load)" : "";
    const label = `${span.modelKey} · ${span.type} · ${formatMs(span.end - span.start)}${load} · ${span.state}`;
    parts.push(
      svg(
        "rect",
        {
          class: `bar state-${span.state}`,
          x: x1,
          y: lane.top,
          width: w,
          height: lane.height,
          fill: modelColour(span.modelKey),
          "data-id": span.id,
          "data-model": span.modelKey,
          "data-swapped": String(span.swapped),
        },
        svg("title", {}, label),
      ),
    );
    const loadEnd = span.loading ? span.end : span.loadMs ? span.start + span.loadMs : null;
    if (loadEnd !== null) {
      parts.push(svg("rect", { class: "load", x: x1, y: lane.top, width: Math.max(1, x(loadEnd) - x1), height: lane.height }));
    }
    if (span.swapped && span.start >= from) {
      parts.push(
        swapMark(
          x1,
          3,
          { "data-id": span.id },
          `model load (swap): ${span.modelKey}${span.loadMs ? `, ${formatMs(span.loadMs)}` : ""}`,
        ),
      );
    }
  }
  const minutes = Math.round(windowMs / MINUTE_MS);
  // A label a minute; every other one on a narrow screen.
  const step = (width < NARROW && minutes > 4 ? 2 : 1) * MINUTE_MS;
  parts.push(...timeAxis(from, now, step, x, axisY, width));

  const shown = spans.filter((span) => span.end > from);
  const models = [...new Set(shown.map((span) => span.modelKey))].sort();
  const swaps = spans.filter((span) => span.swapped && span.start >= from).length;
  box.replaceChildren(
    svg(
      "svg",
      {
        class: "timeline",
        width,
        height: axisY + 20,
        viewBox: `0 0 ${width} ${axisY + 20}`,
        role: "img",
        "aria-label": `What the GPU ran over the last ${lastMinutes(minutes)}`,
      },
      ...parts,
    ),
    h(
      "p",
      { class: "legend" },
      ...models.map((key) =>
        h(
          "span",
          { class: "key" },
          swatch(modelColour(key)),
          modelParts(key).name,
          modelParts(key).options && h("span", { class: "opts" }, ` ${modelParts(key).options}`),
        ),
      ),
      h(
        "span",
        { class: "key" },
        svg(
          "svg",
          { class: "swatch", viewBox: "0 0 10 10", "aria-hidden": "true" },
          svg("path", { class: "swap-mark", d: "M0 1 L10 1 L5 10 Z" }),
        ),
        "model load (swap)",
      ),
      h(
        "span",
        { class: "key" },
        svg(
          "svg",
          { class: "swatch", viewBox: "0 0 10 10", "aria-hidden": "true" },
          svg("rect", { class: "idle", width: 10, height: 10 }),
        ),
        "idle",
      ),
    ),
    h(
      "p",
      { class: "muted", id: "timeline-totals" },
      `${shown.length} jobs, ${swaps} model ${swaps === 1 ? "load" : "loads"}; GPU busy ${Math.round((busy / windowMs) * 100)}% of the last ${lastMinutes(minutes)}` +
        (timeline.truncated ? ` (the newest ${timeline.jobs.length} jobs shown)` : ""),
    ),
  );
  return minutes;
}

/**
 * Jobs done per minute over the last hour as bars, a red mark over each minute with model swaps (with
 * their count when more than one), a clock axis every ten minutes.
 */
export function drawHour(box: HTMLElement, hour: HourChart): void {
  const width = widthOf(box);
  const plot = { top: 26, height: 66 };
  const axisY = plot.top + plot.height;
  const n = hour.done.length;
  const slot = width / n;
  const top = Math.max(1, ...hour.done);
  const scale = (count: number) => (count / top) * (plot.height - 2);
  const parts: SVGElement[] = [];
  hour.done.forEach((done, i) => {
    const swaps = hour.swaps[i] ?? 0;
    const start = hour.since + i * hour.bucketMs;
    const label = `${clock(start)}: ${done} done, ${swaps} ${swaps === 1 ? "swap" : "swaps"}`;
    if (done > 0) {
      const height = Math.max(1, scale(done));
      parts.push(
        svg(
          "rect",
          { class: "done", x: i * slot + 0.5, y: axisY - height, width: Math.max(1, slot - 1), height },
          svg("title", {}, label),
        ),
      );
    }
    if (swaps > 0) {
      const centre = i * slot + slot / 2;
      parts.push(swapMark(centre, 13, { "data-swaps": String(swaps) }, label));
      if (swaps > 1) parts.push(svg("text", { class: "swap-count", x: centre, y: 10, "text-anchor": "middle" }, String(swaps)));
    }
  });
  if (hour.done.some((done) => done > 0)) parts.push(svg("text", { class: "tick-label", x: 2, y: plot.top + 10 }, `${top}/min`));
  const end = hour.since + n * hour.bucketMs;
  const x = (t: number) => ((t - hour.since) / (n * hour.bucketMs)) * width;
  parts.push(...timeAxis(hour.since, end, (width < NARROW ? 20 : 10) * MINUTE_MS, x, axisY, width));
  const doneTotal = hour.done.reduce((a, b) => a + b, 0);
  const swapTotal = hour.swaps.reduce((a, b) => a + b, 0);
  box.replaceChildren(
    svg(
      "svg",
      {
        class: "chart",
        width,
        height: axisY + 20,
        viewBox: `0 0 ${width} ${axisY + 20}`,
        role: "img",
        "aria-label": "Jobs done and model swaps per minute over the last hour",
      },
      ...parts,
    ),
    h(
      "p",
      { class: "muted", id: "hour-totals" },
      `${doneTotal} done, ${swapTotal} model swaps in the last hour (per minute; swaps marked in red)`,
    ),
  );
}
