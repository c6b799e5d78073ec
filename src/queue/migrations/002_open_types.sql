-- Job types and sources are no longer spelled in SQL: they come from one schema in the code (the
-- adapter registry), so adding an API adds no migration. SQLite cannot drop a CHECK in place, so the
-- table is rebuilt (foreign keys are off during migrations; see db.ts).
CREATE TABLE jobs_new (
  id              TEXT PRIMARY KEY,              -- ULID: sorts by creation time, the FIFO tie-break
  type            TEXT NOT NULL,                 -- the adapter: chat, generate, …
  model           TEXT NOT NULL,                 -- as the client sent it
  model_key       TEXT NOT NULL,                 -- model:tag plus the options that force a reload
  request         TEXT NOT NULL,                 -- the request body, JSON, in its API's format
  source          TEXT NOT NULL,                 -- who is waiting: the API a client called, or "jobs"
  state           TEXT NOT NULL CHECK (state IN ('queued', 'loading', 'working', 'done', 'failed', 'canceled')),
  priority        INTEGER NOT NULL DEFAULT 0,
  attempts        INTEGER NOT NULL DEFAULT 0,
  max_attempts    INTEGER NOT NULL,
  run_after       INTEGER NOT NULL,              -- epoch ms; retries back off by pushing it forward
  error           TEXT,
  error_status    INTEGER,                       -- the HTTP status a failure or cancel answers with
  created_at      INTEGER NOT NULL,
  started_at      INTEGER,
  finished_at     INTEGER,
  result          TEXT,                          -- the final answer as its API's non-streaming body
  idempotency_key TEXT UNIQUE,
  webhook_url     TEXT,
  webhook_secret  TEXT
) STRICT;

INSERT INTO jobs_new SELECT * FROM jobs;
DROP TABLE jobs;
ALTER TABLE jobs_new RENAME TO jobs;

CREATE INDEX jobs_by_priority ON jobs (state, priority, id);
CREATE INDEX jobs_by_model ON jobs (state, priority, model_key, id);
CREATE INDEX jobs_by_age ON jobs (state, priority, created_at);
CREATE INDEX jobs_by_finish ON jobs (finished_at) WHERE finished_at IS NOT NULL;

-- A webhook's body is built from the ended job when it is sent (the same bytes every attempt, as an
-- ended job no longer changes), so the worker that ends a job needs no API shapes.
ALTER TABLE webhook_deliveries DROP COLUMN payload;
