-- Jobs are the queue: one row per generation request, whichever route it came from.
CREATE TABLE jobs (
  id              TEXT PRIMARY KEY,              -- ULID: sorts by creation time, the FIFO tie-break
  type            TEXT NOT NULL CHECK (type IN ('chat', 'generate')),
  model           TEXT NOT NULL,                 -- as the client sent it
  model_key       TEXT NOT NULL,                 -- model:tag plus the options that force a reload
  request         TEXT NOT NULL,                 -- the Ollama request body, JSON
  source          TEXT NOT NULL CHECK (source IN ('ollama', 'jobs')),
  state           TEXT NOT NULL CHECK (state IN ('queued', 'loading', 'working', 'done', 'failed', 'canceled')),
  priority        INTEGER NOT NULL DEFAULT 0,
  attempts        INTEGER NOT NULL DEFAULT 0,
  max_attempts    INTEGER NOT NULL,
  run_after       INTEGER NOT NULL,              -- epoch ms; retries back off by pushing it forward
  error           TEXT,
  error_status    INTEGER,                       -- Ollama's HTTP status, or 502 when it was unreachable
  created_at      INTEGER NOT NULL,
  started_at      INTEGER,
  finished_at     INTEGER,
  result          TEXT,                          -- the final answer as Ollama's non-streaming body, JSON
  idempotency_key TEXT UNIQUE,
  webhook_url     TEXT,
  webhook_secret  TEXT
) STRICT;

-- The claim reads these three in order: highest priority, overdue first, then the loaded model, then oldest.
CREATE INDEX jobs_by_priority ON jobs (state, priority, id);
CREATE INDEX jobs_by_model ON jobs (state, priority, model_key, id);
CREATE INDEX jobs_by_age ON jobs (state, priority, created_at);
CREATE INDEX jobs_by_finish ON jobs (finished_at) WHERE finished_at IS NOT NULL;

CREATE TABLE artifacts (
  job_id       TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
  name         TEXT NOT NULL,
  content_type TEXT NOT NULL,
  data         BLOB NOT NULL,
  created_at   INTEGER NOT NULL,
  PRIMARY KEY (job_id, name)
) STRICT;

-- Webhook deliveries are rows too, so a restart resumes them.
CREATE TABLE webhook_deliveries (
  id              TEXT PRIMARY KEY,              -- ULID, also the webhook-id header
  job_id          TEXT NOT NULL UNIQUE REFERENCES jobs (id) ON DELETE CASCADE,
  url             TEXT NOT NULL,
  secret          TEXT,
  payload         TEXT NOT NULL,                 -- the exact body sent each attempt
  state           TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
  attempts        INTEGER NOT NULL DEFAULT 0,
  next_attempt_at INTEGER NOT NULL,
  last_status     INTEGER,
  last_error      TEXT,
  created_at      INTEGER NOT NULL,
  finished_at     INTEGER
) STRICT;

CREATE INDEX webhook_due ON webhook_deliveries (state, next_attempt_at);
