import { framingFor, splitRecords } from "../adapters/framing";
import type { JobService } from "../job-service";
import type { DashboardQueries } from "../queue/dashboard-queries";
import type { JobEvent } from "../worker/job-events";
import {
  DEFAULT_LIMITS,
  type DashboardReads,
  type LiveCount,
  type SnapshotLimits,
  SnapshotBuilder,
  sqliteDashboardReads,
} from "./snapshot";
import type { TokenUpdate } from "./types";
import { OPEN_ADMIN, type Principal, sees } from "../keys/principal";
import type { JobStore } from "../queue/store";
import { type MaybePromise, after, allOf, isPromise, present } from "../queue/maybe-promise";

/** What a snapshot for `viewer` at `now` reads (see DashboardReads), fetched ahead where the store is a server. */
export type DashboardSource = (now: number, viewer: Principal) => MaybePromise<DashboardReads>;

/** Viewers who see the same snapshot: every admin alike, each client key on its own. */
function scopeOf(viewer: Principal): string {
  return viewer.role === "admin" ? "*" : `key:${viewer.keyId}`;
}

/** How often the feed may push at most, in ms: changes within it are sent together. */
export const FEED_INTERVAL_MS = 250;
/** A snapshot is rebuilt this often (ms) even without an event, for changes no event announces. */
const REFRESH_MS = 2_000;
/** Running jobs' counts kept at most (one runs, the next may be claimed ahead; the rest are stale). */
const MAX_LIVE = 4;
/** A comment line this often (ms) keeps idle proxies from closing the stream. */
const HEARTBEAT_MS = 15_000;

/** The running job's stream as the feed counts it. */
interface Live {
  contentType: string;
  tokens: number;
  firstAt: number | null;
}

const encoder = new TextEncoder();
const FEED_HEADERS = { "content-type": "text/event-stream", "cache-control": "no-cache", "x-accel-buffering": "no" };
const sse = (event: string, data: string) => encoder.encode(`event: ${event}\ndata: ${data}\n\n`);

/**
 * The dashboard's live feed (GET /ui/events): a full snapshot on connect, then a new one whenever a
 * job is queued, changes state or ends, the inventory changes or storage turns degraded or healthy, at most every {@link FEED_INTERVAL_MS};
 * between snapshots, `tokens` events with the running job's live count. Unchanged snapshots are not
 * sent again. Snapshots are built only while someone watches; the token count is kept always (cheap),
 * so a page opened mid-job shows the whole count.
 */
export class DashboardFeed {
  readonly #jobs: JobService;
  readonly #builder: SnapshotBuilder;
  readonly #source: DashboardSource;
  /** Each watcher and who it is: a client key's snapshot holds its own jobs and the anonymous aggregate. */
  readonly #clients = new Map<ReadableStreamDefaultController<Uint8Array>, Principal>();
  readonly #live = new Map<string, Live>();
  readonly #decoder = new TextDecoder();
  #timer: Timer | undefined;
  #refresh: Timer | undefined;
  #heartbeat: Timer | undefined;
  #lastFlush = 0;
  #snapshotDue = false;
  /** A snapshot is being read from the database (PostgreSQL): the next flush waits for it. */
  #building = false;
  #tokensDue: string | null = null;
  /** The last snapshot broadcast, per viewer scope (see {@link scopeOf}). */
  #lastSnapshot = new Map<string, string>();

  /**
   * `source`: SQLite's dashboard queries (each snapshot reads the store at once), or a function that fetches
   * what a snapshot for a viewer reads (PostgreSQL: PgDashboardQueries.prefetch).
   */
  constructor(jobs: JobService, source: DashboardQueries | DashboardSource, limits: SnapshotLimits = DEFAULT_LIMITS) {
    this.#jobs = jobs;
    const reads =
      typeof source === "function"
        ? null
        : sqliteDashboardReads(jobs.store as JobStore, source, () => present(jobs.queuePlan(), "the dashboard"));
    this.#source = typeof source === "function" ? source : () => reads!;
    this.#builder = new SnapshotBuilder(reads, jobs.inventory, limits, jobs.storage, (keyId) => jobs.keyName(keyId));
    jobs.link.subscribeAll((jobId, event) => this.#onJobEvent(jobId, event));
    jobs.onQueued = () => this.#changed();
    jobs.inventory.onChange(() => this.#changed());
    // A full disk, or space back: the banner says so at once, not at the next job event.
    jobs.storage.onChange(() => this.#changed());
  }

  /** The feed's headers alone, for HEAD: no watcher is added (nothing would ever read or close it). */
  head(): Response {
    return new Response(null, { headers: FEED_HEADERS });
  }

  /** The SSE response of one watcher, who sees what `viewer` may (see SnapshotBuilder.build). */
  connect(viewer: Principal = OPEN_ADMIN): Response {
    let self: ReadableStreamDefaultController<Uint8Array>;
    const body = new ReadableStream<Uint8Array>({
      start: (controller) => {
        self = controller;
        this.#clients.set(controller, viewer);
        this.#startTimers();
        // Built for this watcher alone: the others are compared with what they were last sent.
        return after(this.#snapshotJson(Date.now(), viewer, false), ({ full }) => {
          try {
            controller.enqueue(sse("snapshot", full));
          } catch {
            this.#drop(controller); // gone while its snapshot was read
          }
        });
      },
      cancel: () => this.#drop(self),
    });
    return new Response(body, {
      headers: FEED_HEADERS,
    });
  }

  #drop(controller: ReadableStreamDefaultController<Uint8Array>): void {
    this.#clients.delete(controller);
    if (this.#clients.size > 0) return;
    clearTimeout(this.#timer);
    clearInterval(this.#refresh);
    clearInterval(this.#heartbeat);
    this.#timer = this.#refresh = this.#heartbeat = undefined;
  }

  /** Unref'd, like every timer here: an open dashboard never holds up the process's exit. */
  #startTimers(): void {
    this.#refresh ??= setInterval(() => this.#changed(), REFRESH_MS).unref();
    this.#heartbeat ??= setInterval(() => this.#broadcast(() => encoder.encode(": keep-alive\n\n")), HEARTBEAT_MS).unref();
  }

  #onJobEvent(jobId: string, event: JobEvent): void {
    if (event.type === "gap") return;
    if (event.type === "chunk") {
      const text = this.#decoder.decode(event.bytes);
      // A job already running when the feed began (recovered at start) is counted from its next record;
      // its framing is read off the bytes, as its content type went by unseen.
      const live = this.#live.get(jobId) ?? this.#track(jobId, /^(data|event):/.test(text) ? "text/event-stream" : "ndjson");
      live.tokens += splitRecords(text, framingFor(live.contentType)).length;
      live.firstAt ??= Date.now();
      this.#tokensDue = jobId;
      return this.#schedule();
    }
    if (event.type === "state" && (event.state === "loading" || event.state === "working")) {
      const live = event.state === "loading" ? undefined : this.#live.get(jobId);
      if (!live) this.#track(jobId, event.contentType ?? "");
      else if (event.contentType) live.contentType = event.contentType;
    } else {
      this.#live.delete(jobId);
    }
    this.#changed();
  }

  /**
   * Starts counting a job's records (afresh, for a new attempt). Two jobs overlap for a moment: the next
   * is claimed as the last one's body ends, while the last is still the running job shown, so its count
   * must stay until it ends. A count whose end went unseen goes once a few newer ones are kept.
   */
  #track(jobId: string, contentType: string): Live {
    const live: Live = { contentType, tokens: 0, firstAt: null };
    this.#live.delete(jobId);
    this.#live.set(jobId, live);
    while (this.#live.size > MAX_LIVE) this.#live.delete(this.#live.keys().next().value!);
    return live;
  }

  #liveCount(jobId: string, now: number): LiveCount {
    const live = this.#live.get(jobId);
    if (!live) return { tokens: 0, tokensPerS: null };
    const seconds = live.firstAt === null ? 0 : (now - live.firstAt) / 1000;
    return { tokens: live.tokens, tokensPerS: seconds >= 0.2 ? Math.round((live.tokens / seconds) * 10) / 10 : null };
  }

  #changed(): void {
    this.#snapshotDue = true;
    this.#schedule();
  }

  #schedule(): void {
    if (this.#timer !== undefined || this.#building || this.#clients.size === 0) return;
    const delay = Math.max(0, this.#lastFlush + FEED_INTERVAL_MS - Date.now());
    this.#timer = setTimeout(() => this.#flush(), delay).unref();
  }

  #flush(): void {
    this.#timer = undefined;
    this.#lastFlush = Date.now();
    if (this.#snapshotDue) {
      this.#snapshotDue = false;
      this.#tokensDue = null;
      // One snapshot per viewer scope (admins share one, each client key has its own), each sent only if it changed.
      const viewers = new Map<string, Principal>();
      for (const viewer of this.#clients.values()) if (!viewers.has(scopeOf(viewer))) viewers.set(scopeOf(viewer), viewer);
      const scopes = [...viewers.keys()];
      const snapshots = allOf(scopes.map((scope) => this.#snapshotJson(this.#lastFlush, viewers.get(scope)!)));
      const send = (list: Array<{ full: string; changed: boolean }>) => {
        const built = new Map(scopes.map((scope, i) => [scope, list[i]!]));
        this.#broadcast((viewer) => {
          const snapshot = built.get(scopeOf(viewer));
          return snapshot?.changed ? sse("snapshot", snapshot.full) : undefined;
        });
      };
      if (!isPromise(snapshots)) return send(snapshots);
      // Read from a server: flushes wait for it, one at a time, so a slow read never stacks snapshots up.
      this.#building = true;
      void snapshots
        .then(send, () => {})
        .finally(() => {
          this.#building = false;
          if (this.#snapshotDue || this.#tokensDue !== null) this.#schedule();
        });
      return;
    }
    if (this.#tokensDue !== null) {
      const id = this.#tokensDue;
      this.#tokensDue = null;
      const update: TokenUpdate = { id, ...this.#liveCount(id, this.#lastFlush) };
      const bytes = sse("tokens", JSON.stringify(update));
      // The running job's id goes only to who may see it (its snapshot names it; the others' show it anonymous).
      const head = this.#jobs.store.getJobHead(id);
      const tell = (job: { keyId: string | null } | null) => {
        const owner = job?.keyId ?? null;
        this.#broadcast((viewer) => (sees(viewer, owner) ? bytes : undefined));
      };
      if (isPromise(head)) void head.then(tell, () => {});
      else tell(head);
    }
  }

  /**
   * The snapshot as JSON with `now`, and whether it differs (apart from `now`) from the last one broadcast;
   * `broadcast` marks it as the one every watcher now has.
   */
  #snapshotJson(now: number, viewer: Principal, broadcast = true): MaybePromise<{ full: string; changed: boolean }> {
    const scope = scopeOf(viewer);
    const failed = (error: unknown) => {
      // The database is closing (shutdown), or away: keep the last picture, if there is one.
      this.#jobs.log.warn("dashboard snapshot failed", { error });
      const last = this.#lastSnapshot.get(scope) ?? "";
      return last ? this.#answer(now, scope, last, broadcast) : { full: JSON.stringify({ now }), changed: false };
    };
    const build = (reads: DashboardReads) => {
      try {
        const snapshot = this.#builder.build((id) => this.#liveCount(id, now), now, viewer, reads);
        return this.#answer(now, scope, JSON.stringify(snapshot), broadcast);
      } catch (error) {
        return failed(error);
      }
    };
    try {
      const reads = this.#source(now, viewer);
      return isPromise(reads) ? reads.then(build, failed) : build(reads);
    } catch (error) {
      return failed(error);
    }
  }

  /** A built snapshot with `now`, and whether it changed since the scope's last broadcast. */
  #answer(now: number, scope: string, json: string, broadcast: boolean): { full: string; changed: boolean } {
    const changed = json !== (this.#lastSnapshot.get(scope) ?? "");
    if (broadcast) this.#lastSnapshot.set(scope, json);
    return { full: `{"now":${now},${json.slice(1)}`, changed };
  }

  /** Sends each watcher what `bytesFor` gives for it (undefined: nothing). */
  #broadcast(bytesFor: (viewer: Principal) => Uint8Array | undefined): void {
    for (const [controller, viewer] of [...this.#clients]) {
      try {
        const bytes = bytesFor(viewer);
        if (bytes) controller.enqueue(bytes);
      } catch {
        this.#drop(controller); // Its client is gone.
      }
    }
  }
}
