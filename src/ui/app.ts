/// <reference lib="dom" />
// The dashboard page: reads the feed (GET ui/events) and draws it. Everything from the server goes in
// as text nodes or attributes, never as HTML (see dom.ts): model names, prompts and errors are user input.
import type {
  DashboardSnapshot,
  KeyLine,
  QueueGroup,
  QueuedJob,
  RecentJob,
  RunningJob,
  TargetLane,
  TokenUpdate,
} from "../dashboard/types";
import { drawHour, drawTimeline, swatch } from "./charts";
import { h } from "./dom";
import { formatMs, formatStart, lastMinutes, modelColour, modelParts } from "./format";
import { readSse } from "./sse";

const TOKEN_KEY = "foreman.token";
const RETRY_MS = [500, 1000, 2000, 5000];

const $ = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T;

/** Where the page stands: the last snapshot, and the local time it arrived (to tick waits between snapshots). */
let snapshot: DashboardSnapshot | null = null;
let receivedAt = 0;
let failures = 0;

/** The server's clock now, from the last snapshot's `now` and the time passed here since. */
const serverNow = () => (snapshot ? snapshot.now + (Date.now() - receivedAt) : Date.now());

/** A time that keeps counting up from `since` (server epoch ms) between snapshots. */
const ticking = (since: number) => h("span", { class: "since", "data-since": String(since) }, formatMs(serverNow() - since));

/** An expected start that counts down between snapshots: "starts in ~12 s", then "next" (or "soon"). */
const startsIn = (at: number | null, first: boolean) =>
  h(
    "span",
    { class: "starts", "data-starts": at === null ? "held" : String(at), "data-first": String(first) },
    formatStart(at, serverNow(), first),
  );

/** A model by its key: the name, and its load options (num_ctx=…) when it has any. */
function modelName(key: string, withSwatch = false): HTMLElement {
  const { name, options } = modelParts(key);
  return h(
    "span",
    { class: "model-name", title: key },
    withSwatch && swatch(modelColour(key)),
    name,
    options && h("span", { class: "opts" }, ` ${options}`),
  );
}

const shortId = (id: string) => id.slice(-8);

/** What was asked, in its first words (text only), or nothing when the request has no text. */
const preview = (text: string) => (text ? h("span", { class: "preview", title: text }, `“${text}”`) : null);

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
      h(
        "div",
        { class: "what" },
        h("div", { class: "model" }, modelName(running.modelKey, true)),
        h(
          "div",
          { class: "meta" },
          h("code", { title: running.id }, shortId(running.id)),
          " ",
          h("span", { class: "type" }, running.type),
        ),
        preview(running.preview),
      ),
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

/** Several Ollama targets: a lane per GPU, what it has loaded and what runs on it (hidden with one). */
function renderLanes(lanes: TargetLane[] | undefined) {
  const section = $("lanes-section");
  section.hidden = !lanes;
  if (!lanes) return;
  $("lanes").replaceChildren(
    ...lanes.map((lane) =>
      h(
        "div",
        { class: "lane", "data-target": lane.name, "data-reachable": String(lane.reachable) },
        h(
          "div",
          { class: "lane-head" },
          h("b", {}, lane.name),
          " ",
          h("span", { class: `pill ${lane.reachable ? "ok" : "bad"}` }, lane.reachable ? "up" : "unreachable"),
          " ",
          h("span", { class: "muted slots" }, `${lane.running.length}/${lane.slots} slots`),
          " ",
          h(
            "span",
            { class: "muted" },
            ...(lane.resident.length
              ? [
                  "loaded: ",
                  ...lane.resident.flatMap((key, i) => (i > 0 ? [", ", modelName(key, true)] : [modelName(key, true)])),
                ]
              : ["nothing loaded"]),
          ),
        ),
        lane.running.length
          ? h(
              "ul",
              {},
              ...lane.running.map((job) =>
                h(
                  "li",
                  { "data-id": job.id, "data-model": job.modelKey },
                  modelName(job.modelKey, true),
                  " ",
                  h("code", { title: job.id }, shortId(job.id)),
                  ` ${job.state} · `,
                  job.startedAt === null ? "–" : ticking(job.startedAt),
                ),
              ),
            )
          : h("p", { class: "empty" }, "Idle."),
      ),
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

/** A waiting job; `first`: the first in line (its group is first, and it is first in its group). */
function renderJob(job: QueuedJob, first: boolean): HTMLElement {
  return h(
    "li",
    { class: "job", "data-id": job.id },
    h("code", { title: job.id }, shortId(job.id)),
    h("span", { class: "type", title: "job type" }, job.type),
    preview(job.preview) ?? h("span", { class: "preview" }),
    h(
      "span",
      { class: "when" },
      startsIn(job.estimatedStartAt, first),
      h("span", { class: "muted", title: "time it has waited so far" }, " · waited ", ticking(job.createdAt)),
    ),
    h(
      "span",
      { class: "muted src", title: "priority; source: the API it came through" },
      `prio ${job.priority} · via ${job.source}`,
    ),
    cancelButton(job.id),
  );
}

function renderGroup(group: QueueGroup, index: number): HTMLElement {
  return h(
    "div",
    { class: "group", "data-model": group.model, "data-count": String(group.count) },
    h(
      "h3",
      {},
      modelName(group.model, true),
      " ",
      h("span", { class: "count" }, `${group.count} waiting · `, startsIn(group.estimatedStartAt, index === 0)),
    ),
    h("ul", {}, ...group.jobs.map((job, i) => renderJob(job, index === 0 && i === 0))),
    group.more > 0 && h("p", { class: "more muted" }, `and ${group.more.toLocaleString("en")} more`),
  );
}

function renderRecent(recent: RecentJob[]) {
  const rows = recent.map((job) =>
    h(
      "tr",
      { "data-id": job.id, "data-state": job.state },
      h("td", {}, h("code", { title: job.id }, shortId(job.id))),
      h("td", {}, modelName(job.modelKey)),
      h("td", {}, job.type),
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

/** Who uses the GPU today (UTC): shown only when the feed sends key lines (keys exist; a client sees its own). */
function renderKeys(keys: KeyLine[] | undefined) {
  $("keys-section").hidden = !keys?.length;
  const rows = (keys ?? []).map((key) =>
    h(
      "tr",
      { "data-key": key.name },
      h("td", {}, key.name),
      h("td", {}, key.tokens.toLocaleString("en")),
      h("td", {}, formatMs(key.gpuMs)),
      h("td", {}, key.waiting.toLocaleString("en")),
      h("td", {}, key.done.toLocaleString("en")),
    ),
  );
  $("keys")
    .querySelector("tbody")!
    .replaceChildren(...rows);
}

function renderDegraded(next: DashboardSnapshot) {
  const banner = $("degraded");
  banner.replaceChildren(...next.degraded.map((reason) => h("p", { "data-reason": reason.reason }, reason.message)));
  banner.hidden = next.degraded.length === 0;
}

/** The pictures, at the width of their boxes: on each snapshot, each second (the timeline moves), each resize. */
function drawCharts() {
  if (!snapshot?.timeline) return;
  const minutes = drawTimeline($("timeline"), snapshot.timeline, snapshot.running, serverNow());
  $("timeline-title").textContent = `GPU, last ${lastMinutes(minutes)}`;
  drawHour($("chart"), snapshot.hour);
}

function render(next: DashboardSnapshot) {
  snapshot = next;
  receivedAt = Date.now();
  if (!next.ollama) return; // The server could not read its database (shutting down).
  setPill(
    "ollama",
    next.ollama.reachable ? "Ollama reachable" : "Ollama unreachable: queue held",
    next.ollama.reachable ? "ok" : "bad",
  );
  renderDegraded(next);
  const resident = next.ollama.resident;
  $("resident").replaceChildren(
    ...(resident.length
      ? [
          next.ollama.reachable ? "Loaded: " : "Loaded when last seen: ",
          ...resident.flatMap((key, i) => (i > 0 ? [", ", modelName(key, true)] : [modelName(key, true)])),
        ]
      : ["No model loaded."]),
  );
  renderRunning(next.running);
  renderLanes(next.targets);
  $("queue-total").textContent = `${next.queue.total} waiting`;
  $("queue").replaceChildren(
    ...(next.queue.groups.length ? next.queue.groups.map(renderGroup) : [h("p", { class: "empty" }, "The queue is empty.")]),
  );
  renderKeys(next.keys);
  renderRecent(next.recent);
  drawCharts();
}

/** Keeps the times counting between snapshots (no request: the clock only), and the timeline moving. */
function tick() {
  const now = serverNow();
  for (const element of document.querySelectorAll<HTMLElement>("[data-since]")) {
    element.textContent = formatMs(now - Number(element.dataset.since));
  }
  for (const element of document.querySelectorAll<HTMLElement>("[data-starts]")) {
    const at = element.dataset.starts!;
    element.textContent = formatStart(at === "held" ? null : Number(at), now, element.dataset.first === "true");
  }
  if (!$("board").hidden) drawCharts();
}

/** Asks for the token; `refused` (the token a refused request sent) is forgotten, unless another was stored since. */
function showLogin(message = "", refused: string | null = localStorage.getItem(TOKEN_KEY)) {
  if (refused !== null && localStorage.getItem(TOKEN_KEY) === refused) localStorage.removeItem(TOKEN_KEY);
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
    const sent = localStorage.getItem(TOKEN_KEY);
    const response = await fetch("ui/events", { headers: { ...authHeaders(), accept: "text/event-stream" }, cache: "no-store" });
    // A token stored while this request was on its way (another tab's login) is not the one refused.
    if (response.status === 401) return showLogin(sent ? "The token was refused." : "", sent);
    if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
    failures = 0;
    $("login").hidden = true;
    $("board").hidden = false;
    setPill("connection", "live", "ok");
    for await (const event of readSse(response.body)) {
      // A picture that fails to draw is a bug to see in the console, not a reason to drop the feed
      // (reconnecting would only draw it again, and the page would stand still without a word).
      try {
        if (event.event === "snapshot") render(JSON.parse(event.data) as DashboardSnapshot);
        else if (event.event === "tokens") renderTokens(JSON.parse(event.data) as TokenUpdate);
      } catch (error) {
        console.error("dashboard: could not draw the feed's", event.event, error);
      }
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
window.addEventListener("resize", drawCharts);
void connect();
