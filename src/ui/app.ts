/// <reference lib="dom" />
// The dashboard page: reads the feed (GET ui/events) and draws it. Everything from the server goes in
// as text nodes or attributes, never as HTML: model names and errors are user input.
import type { DashboardSnapshot, QueueGroup, RecentJob, RunningJob, TokenUpdate } from "../dashboard/types";
import { readSse } from "./sse";

const TOKEN_KEY = "foreman.token";
const RETRY_MS = [500, 1000, 2000, 5000];

const $ = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T;

/** Where the page stands: the last snapshot, and the local time it arrived (to tick waits between snapshots). */
let snapshot: DashboardSnapshot | null = null;
let receivedAt = 0;
let failures = 0;

type Child = Node | string | null | undefined | false;

/** An element with attributes and children; strings become text nodes. */
function h(tag: string, attrs: Record<string, string> = {}, ...children: Child[]): HTMLElement {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) element.setAttribute(name, value);
  for (const child of children) if (child) element.append(child);
  return element;
}

function svg(tag: string, attrs: Record<string, string | number>, ...children: Child[]): SVGElement {
  const element = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attrs)) element.setAttribute(name, String(value));
  for (const child of children) if (child) element.append(child);
  return element;
}

/** A duration for people: 850 ms, 12.3 s, 4m 05s, 2h 03m. */
function formatMs(ms: number | null): string {
  if (ms === null) return "–";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  const s = Math.floor(ms / 1000);
  if (s < 3600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h ${String(Math.floor(s / 60) % 60).padStart(2, "0")}m`;
}

/** The server's clock now, from the last snapshot's `now` and the time passed here since. */
const serverNow = () => (snapshot ? snapshot.now + (Date.now() - receivedAt) : Date.now());

/** A time that keeps counting up from `since` (server epoch ms) between snapshots. */
const ticking = (since: number) => h("span", { class: "since", "data-since": String(since) }, formatMs(serverNow() - since));

const shortId = (id: string) => id.slice(-8);

function authHeaders(): Record<string, string> {
  const token = localStorage.getItem(TOKEN_KEY);
  return token ? { authorization: `Bearer ${token}` } : {};
}

function setPill(id: string, text: string, kind: "ok" | "bad" | "") {
  const pill = $(id);
  pill.textContent = text;
  pill.className = `pill ${kind}`;
}

function cancelButton(jobId: string): HTMLElement {
  const button = h(
    "button",
    { type: "button", class: "cancel", "data-job": jobId, "aria-label": `Cancel job ${jobId}` },
    "Cancel",
  );
  button.addEventListener("click", () => void cancelJob(jobId, button as HTMLButtonElement));
  return button;
}

async function cancelJob(jobId: string, button: HTMLButtonElement) {
  button.disabled = true;
  const notice = $("notice");
  try {
    const response = await fetch(`jobs/${encodeURIComponent(jobId)}`, { method: "DELETE", headers: authHeaders() });
    if (response.status === 401) return showLogin("The token was refused.");
    if (!response.ok) {
      const body = (await response.json().catch(() => ({}))) as { error?: string };
      notice.textContent = `Could not cancel ${shortId(jobId)}: ${body.error ?? response.status}`;
    } else notice.textContent = "";
  } catch (error) {
    notice.textContent = `Could not cancel ${shortId(jobId)}: ${String(error)}`;
    button.disabled = false;
  }
}

function renderRunning(running: RunningJob | null) {
  const box = $("running");
  if (!running) return box.replaceChildren(h("p", { class: "empty" }, "Nothing running."));
  const stat = (label: string, value: Node | string, attrs: Record<string, string> = {}) =>
    h("div", { class: "stat" }, h("b", attrs, value), label);
  box.replaceChildren(
    h(
      "div",
      { class: "running", "data-id": running.id, "data-model": running.modelKey, "data-state": running.state },
      h("div", {}, h("div", { class: "model" }, running.modelKey), h("code", { title: running.id }, shortId(running.id))),
      // A claim that had to load its model spends its loading phase on the swap.
      stat("phase", running.state === "loading" && running.swapped ? "loading model" : running.state, {
        class: `phase-${running.state}`,
      }),
      stat("tokens", String(running.tokens), { id: "tokens" }),
      stat("tokens/s", running.tokensPerS === null ? "–" : String(running.tokensPerS), { id: "tokens-per-s" }),
      stat("running", running.startedAt === null ? "–" : ticking(running.startedAt)),
      h("div", {}, cancelButton(running.id)),
    ),
  );
}

function renderTokens(update: TokenUpdate) {
  const running = $("running").querySelector<HTMLElement>(".running");
  if (!running || running.dataset.id !== update.id) return;
  $("tokens").textContent = String(update.tokens);
  $("tokens-per-s").textContent = update.tokensPerS === null ? "–" : String(update.tokensPerS);
  if (snapshot?.running?.id === update.id) Object.assign(snapshot.running, update);
}

function renderGroup(group: QueueGroup): HTMLElement {
  return h(
    "div",
    { class: "group", "data-model": group.model, "data-count": String(group.count) },
    h("h3", {}, group.model, " ", h("span", { class: "count" }, `${group.count} waiting`)),
    h(
      "ul",
      {},
      ...group.jobs.map((job) =>
        h(
          "li",
          { class: "job", "data-id": job.id },
          h("code", { title: job.id }, shortId(job.id)),
          h("span", { title: "waiting" }, "waits ", ticking(job.createdAt)),
          h("span", { title: "priority" }, `prio ${job.priority}`),
          h("span", { title: "source: the API it came through" }, `via ${job.source}`),
          cancelButton(job.id),
        ),
      ),
    ),
    group.more > 0 && h("p", { class: "more muted" }, `and ${group.more.toLocaleString("en")} more`),
  );
}

function renderRecent(recent: RecentJob[]) {
  const rows = recent.map((job) =>
    h(
      "tr",
      { "data-id": job.id, "data-state": job.state },
      h("td", {}, h("code", { title: job.id }, shortId(job.id))),
      h("td", {}, job.model),
      h("td", { class: `state-${job.state}`, title: job.error ?? "" }, job.state),
      h("td", {}, formatMs(job.waitMs)),
      h("td", {}, formatMs(job.runMs)),
      h("td", {}, job.tokensPerS === null ? "–" : String(job.tokensPerS)),
    ),
  );
  $("recent")
    .querySelector("tbody")!
    .replaceChildren(...rows);
}

/** Bars of jobs done per minute over the last hour, swaps in red over them; inline SVG, drawn here. */
function renderChart(hour: DashboardSnapshot["hour"]) {
  const width = 600;
  const height = 100;
  const bar = width / hour.done.length;
  const top = Math.max(1, ...hour.done, ...hour.swaps);
  const scale = (n: number) => (n / top) * (height - 4);
  const bars = hour.done.flatMap((done, i) => {
    const swaps = hour.swaps[i] ?? 0;
    const minutesAgo = hour.done.length - 1 - i;
    const label = `${minutesAgo === 0 ? "this minute" : `${minutesAgo} min ago`}: ${done} done, ${swaps} swaps`;
    return [
      done > 0 &&
        svg(
          "rect",
          { class: "done", x: i * bar + 1, y: height - scale(done), width: bar - 2, height: scale(done) },
          svg("title", {}, label),
        ),
      swaps > 0 &&
        svg(
          "rect",
          { class: "swap", x: i * bar + bar / 4, y: height - scale(swaps), width: bar / 2, height: scale(swaps) },
          svg("title", {}, label),
        ),
    ];
  });
  const doneTotal = hour.done.reduce((a, b) => a + b, 0);
  const swapTotal = hour.swaps.reduce((a, b) => a + b, 0);
  $("chart").replaceChildren(
    svg(
      "svg",
      {
        class: "chart",
        viewBox: `0 0 ${width} ${height}`,
        preserveAspectRatio: "none",
        role: "img",
        "aria-label": "Jobs done and model swaps per minute",
      },
      svg("line", { class: "axis", x1: 0, y1: height - 0.5, x2: width, y2: height - 0.5 }),
      ...bars,
    ),
    h(
      "p",
      { class: "muted", id: "hour-totals" },
      `${doneTotal} done, ${swapTotal} model swaps in the last hour (per minute; swaps in red)`,
    ),
  );
}

function render(next: DashboardSnapshot) {
  snapshot = next;
  receivedAt = Date.now();
  if (!next.ollama) return; // The server could not read its database (shutting down).
  setPill("ollama", next.ollama.reachable ? "Ollama reachable" : "Ollama unreachable", next.ollama.reachable ? "ok" : "bad");
  $("resident").textContent = next.ollama.resident.length ? `Loaded: ${next.ollama.resident.join(", ")}` : "No model loaded.";
  renderRunning(next.running);
  $("queue-total").textContent = `${next.queue.total} waiting`;
  $("queue").replaceChildren(
    ...(next.queue.groups.length ? next.queue.groups.map(renderGroup) : [h("p", { class: "empty" }, "The queue is empty.")]),
  );
  renderRecent(next.recent);
  renderChart(next.hour);
}

/** Keeps the waiting and running times counting between snapshots (no request: the clock only). */
function tick() {
  const now = serverNow();
  for (const element of document.querySelectorAll<HTMLElement>("[data-since]")) {
    element.textContent = formatMs(now - Number(element.dataset.since));
  }
}

function showLogin(message = "") {
  localStorage.removeItem(TOKEN_KEY);
  $("board").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message;
  setPill("connection", "token needed", "bad");
  $<HTMLInputElement>("token").focus();
}

/** Reads the feed until it ends, then reconnects after a pause; a 401 asks for the token. */
async function connect() {
  setPill("connection", "connecting…", "");
  try {
    const response = await fetch("ui/events", { headers: { ...authHeaders(), accept: "text/event-stream" }, cache: "no-store" });
    if (response.status === 401) {
      return showLogin(localStorage.getItem(TOKEN_KEY) ? "The token was refused." : "");
    }
    if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
    failures = 0;
    $("login").hidden = true;
    $("board").hidden = false;
    setPill("connection", "live", "ok");
    for await (const event of readSse(response.body)) {
      if (event.event === "snapshot") render(JSON.parse(event.data) as DashboardSnapshot);
      else if (event.event === "tokens") renderTokens(JSON.parse(event.data) as TokenUpdate);
    }
  } catch {
    // Dropped or refused: try again below.
  }
  setPill("connection", "reconnecting…", "bad");
  setTimeout(() => void connect(), RETRY_MS[Math.min(failures++, RETRY_MS.length - 1)]);
}

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  const token = $<HTMLInputElement>("token").value.trim();
  if (!token) return;
  localStorage.setItem(TOKEN_KEY, token);
  $("login").hidden = true;
  void connect();
});
setInterval(tick, 1000);
void connect();
