// How the page words times and names models.
import { LOAD_OPTIONS as LOAD_OPTION_NAMES } from "../ollama/model-key";

/** A duration for people: 850 ms, 12.3 s, 4m 05s, 2h 03m. */
export function formatMs(ms: number | null): string {
  if (ms === null) return "–";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  const s = Math.floor(ms / 1000);
  if (s < 3600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h ${String(Math.floor(s / 60) % 60).padStart(2, "0")}m`;
}

/** A forecast, rounded as one: ~12 s, ~4 min, ~2 h 10 min. */
export function formatAbout(ms: number): string {
  const s = Math.max(1, Math.round(ms / 1000));
  if (s < 60) return `~${s} s`;
  const min = Math.round(s / 60);
  if (min < 60) return `~${min} min`;
  return `~${Math.floor(min / 60)} h${min % 60 ? ` ${min % 60} min` : ""}`;
}

/**
 * When a queued job or group is expected to start, from the snapshot's ExpectedStart: "held" while the
 * queue is (null); when due (0, or the time has come) "next" for the first in line and "soon" for the
 * others (a plan that says several start now is not worth a countdown); else "starts in ~12 s".
 */
export function formatStart(at: number | null, now: number, first: boolean): string {
  if (at === null) return "held";
  if (at === 0 || at - now < 1000) return first ? "next" : "soon";
  return `starts in ${formatAbout(at - now)}`;
}

/** "minute" or "10 minutes", as in "the last …". */
export const lastMinutes = (n: number) => (n === 1 ? "minute" : `${n} minutes`);

/** A clock time on the page's clock: 14:05. */
export const clock = (t: number) => new Date(t).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hour12: false });

/**
 * A model key's parts: the model as Ollama names it (llama3.2:latest) and the load options that make it a
 * model of its own (num_ctx=8192), shown beside it only when it has them.
 */
export function modelParts(key: string): { name: string; options: string } {
  const options = LOAD_OPTIONS.exec(key);
  return options ? { name: key.slice(0, options.index), options: options[0].trim() } : { name: key, options: "" };
}

/** The load options modelKey appends to a key, each ` name=value`, at its end. */
const LOAD_OPTIONS = new RegExp(`(?: (?:${LOAD_OPTION_NAMES.join("|")})=[^ ]+)+$`);

/**
 * Colours told apart in light and dark themes alike (Tableau 10 without its red and grey: red marks
 * swaps and failures, grey is idle).
 */
const PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#9c755f", "#ff9da7", "#a0cbe8"];

/** The colours given out on this page, by model key. */
const colours = new Map<string, string>();

/**
 * A model key's colour, the same for the life of the page: a hash of the key into the palette, moving on
 * to the next colour no other model on the page has yet, so that models shown together are told apart
 * (9 colours: three models collided on a plain hash about one time in three).
 */
export function modelColour(key: string): string {
  const known = colours.get(key);
  if (known) return known;
  let hash = 2166136261;
  for (let i = 0; i < key.length; i++) hash = Math.imul(hash ^ key.charCodeAt(i), 16777619);
  const start = (hash >>> 0) % PALETTE.length;
  const taken = new Set(colours.values());
  let slot = start;
  for (let step = 0; step < PALETTE.length && taken.has(PALETTE[slot]!); step++) slot = (start + step + 1) % PALETTE.length;
  const colour = PALETTE[slot]!;
  colours.set(key, colour);
  return colour;
}
