import { Elysia } from "elysia";
import type { DashboardFeed } from "../dashboard/feed";
import { keepOpen } from "./long-lived";
import { principalOf } from "../keys/principal";
import { uiAssets } from "../ui/assets" with { type: "macro" };

// Inlined when foreman is bundled (see src/ui/assets.ts): the page works offline, from the binary alone.
const UI = uiAssets();

/**
 * The page, its redirect from /ui/, its two assets and foreman's icon: public (GET and HEAD, these exact
 * paths), as they hold no data.
 */
export const DASHBOARD_PATHS = ["/ui", "/ui/", "/ui/app.js", "/ui/style.css", "/favicon.ico"];

/**
 * The page may load only what foreman serves, and talk only to foreman: an injected element could not
 * reach another origin even if escaping failed somewhere.
 */
const CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; " +
  "base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const asset =
  (body: string, contentType: string, extra: Record<string, string> = {}) =>
  () =>
    new Response(body, {
      headers: {
        "content-type": contentType,
        "cache-control": "no-cache",
        "x-content-type-options": "nosniff",
        "referrer-policy": "no-referrer",
        ...extra,
      },
    });

const page = asset(UI.html, "text/html; charset=utf-8", { "content-security-policy": CSP });

/**
 * /ui/ sends the browser to /ui: the page's URLs are relative (so it works behind a proxy that adds a path
 * prefix), and from /ui/ they would resolve under /ui/ui/. The Location is relative for the same reason.
 */
const toUi = () => new Response(null, { status: 308, headers: { location: "../ui", "cache-control": "no-cache" } });

/** The dashboard: the page at /ui (public) and its live feed at /ui/events (behind the token like the API). */
export function dashboardRoutes(feed: DashboardFeed) {
  return (
    new Elysia({ tags: ["queue"] })
      .get("/ui", ({ request }) => (new URL(request.url).pathname.endsWith("/") ? toUi() : page()), { detail: { hide: true } })
      .get("/ui/app.js", asset(UI.js, "text/javascript; charset=utf-8"), { detail: { hide: true } })
      .get("/ui/style.css", asset(UI.css, "text/css; charset=utf-8"), { detail: { hide: true } })
      // An SVG at the path browsers ask for by default: one icon for the dashboard and Swagger UI alike.
      .get("/favicon.ico", asset(UI.icon, "image/svg+xml"), { detail: { hide: true } })
      // HEAD (answered for every GET route) sends no body: a feed opened for it would never be read nor closed.
      .get(
        "/ui/events",
        ({ request }) => (request.method === "HEAD" ? feed.head() : (keepOpen(request), feed.connect(principalOf(request)))),
        {
          detail: {
            summary: "Dashboard feed (Server-Sent Events)",
            description:
              "What /ui shows, live: a `snapshot` event on connect and on each change (at most every 250 ms): Ollama's state and " +
              "why foreman is degraded (e.g. the queue held while Ollama is unreachable), the resident models, the running job " +
              "with its live token count, the queue grouped by model key (the first 20 jobs of each with their type, the first " +
              "words of their prompt and their expected start, and a count), recent jobs, the jobs that ran in the last ten " +
              "minutes (the GPU timeline), and jobs done and model swaps per minute over the last hour. Between snapshots, " +
              "`tokens` events carry the running job's count. Read it with fetch() to send the token (EventSource cannot).",
            responses: {
              200: { description: "text/event-stream", content: { "text/event-stream": { schema: { type: "string" } } } },
            },
          },
        },
      )
  );
}
