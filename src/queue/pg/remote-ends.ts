import type { SQL } from "bun";
import { TERMINAL_STATES } from "../job-states";
import type { JobEventHub } from "../../worker/job-events";
import { JobEndListener } from "./notify";

/** The safety net's period (ms): watched jobs are re-read this often, whatever the channel delivers. */
const REMOTE_END_POLL_MS = 5000;

export interface RemoteEndsOptions {
  pollMs?: number;
  /** Ends told otherwise: a job whose records are being relayed here ends when its relay does (src/nodes/relay-sink.ts). */
  toldElsewhere?: (id: string) => boolean;
  /** Every end heard, watched here or not (what this node keeps for running jobs is let go: src/nodes/relay-source.ts). */
  heard?: (ids: string[]) => void;
  /** More jobs to re-check on the poll and after a reconnect than the watched ones (those `heard` lets go of). */
  alsoCheck?: () => Iterable<string>;
}

/**
 * Wakes this node's waiters (a client holding its connection, an SSE watch) when their job ends on another
 * node: each end's id arrives on JOB_END_CHANNEL, and a watched one is told `ended` on this node's hub, whose
 * watcher then reads the row for how it ended. Only waking: the node that ended a job reports it (log line,
 * metrics, webhook), as it did before there were several. After a reconnect, and on a slow poll, the watched
 * jobs are read in one query and the ended ones told, so a notification lost in between costs a delay, never
 * a client left waiting. An end this node made itself is told twice; a watcher hears its end once (it stops).
 */
export function remoteJobEnds(hub: JobEventHub, sql: SQL, options: RemoteEndsOptions = {}): JobEndListener {
  const { pollMs = REMOTE_END_POLL_MS, toldElsewhere = () => false, heard = () => {}, alsoCheck = () => [] } = options;
  const tell = (ids: string[]) => {
    heard(ids);
    for (const id of ids) if (hub.isWatched(id) && !toldElsewhere(id)) hub.emit(id, { type: "ended" });
  };
  const recheck = async () => {
    const ids = [...new Set([...hub.watched(), ...alsoCheck()])];
    if (ids.length === 0) return;
    const rows: Array<{ id: string }> = await sql.unsafe(
      `SELECT id FROM jobs WHERE id = ANY($1::text[]) AND state = ANY($2::text[])`,
      [ids, [...TERMINAL_STATES]],
    );
    if (rows.length > 0) tell(rows.map((row) => row.id));
  };
  const safely = () => void recheck().catch(() => {}); // the next poll tries again
  return new JobEndListener({ sql, onEnded: tell, onResync: safely, pollMs, onPoll: safely });
}
