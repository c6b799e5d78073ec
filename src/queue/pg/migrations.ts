import queue from "./migrations/001_queue.sql" with { type: "text" };
import jobOutputs from "./migrations/002_job_outputs.sql" with { type: "text" };
import nodeRelay from "./migrations/003_node_relay.sql" with { type: "text" };
import webhooks from "./migrations/004_webhooks.sql" with { type: "text" };

/**
 * PostgreSQL's forward migrations, applied in order: migration i (from 0) is schema version i + 1 in
 * schema_migrations. Imported as text so `bun build --compile` embeds them in the binary, as SQLite's are
 * (src/queue/db.ts). Append only: a version once released never changes.
 */
export const PG_MIGRATIONS: readonly string[] = [queue, jobOutputs, nodeRelay, webhooks];
