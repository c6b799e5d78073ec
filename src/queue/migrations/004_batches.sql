-- OpenAI's Files and Batch APIs. A file's bytes are rows of file_chunks: an upload is written in
-- chunks as it streams in (never whole in memory), and a batch's output and error files grow one
-- line per row inside the transaction that ends the line's job, so a crash can neither lose a
-- finished line nor write it twice.
CREATE TABLE files (
  id         TEXT PRIMARY KEY,                   -- file-<ULID>
  purpose    TEXT NOT NULL,                      -- batch (uploaded), batch_output (made by a batch), …
  filename   TEXT NOT NULL,
  bytes      INTEGER NOT NULL DEFAULT 0,
  status     TEXT NOT NULL CHECK (status IN ('uploading', 'processed')),
  created_at INTEGER NOT NULL
) STRICT;

CREATE TABLE file_chunks (
  id      INTEGER PRIMARY KEY,                   -- the order of the file's bytes
  file_id TEXT NOT NULL REFERENCES files (id) ON DELETE CASCADE,
  data    BLOB NOT NULL
) STRICT;

CREATE INDEX file_chunks_by_file ON file_chunks (file_id, id);

CREATE TABLE batches (
  id                TEXT PRIMARY KEY,            -- batch_<ULID>
  endpoint          TEXT NOT NULL,
  input_file_id     TEXT NOT NULL,
  completion_window TEXT NOT NULL,
  status            TEXT NOT NULL CHECK (status IN ('validating', 'failed', 'in_progress', 'finalizing', 'completed',
                      'expired', 'cancelling', 'cancelled')),
  metadata          TEXT,                        -- JSON object, as given
  errors            TEXT,                        -- JSON list of validation errors, when failed
  output_file_id    TEXT NOT NULL,
  error_file_id     TEXT NOT NULL,
  -- Counters kept in the transaction that ends each line's job, so progress is never a scan.
  total             INTEGER NOT NULL DEFAULT 0,
  completed         INTEGER NOT NULL DEFAULT 0,
  failed            INTEGER NOT NULL DEFAULT 0,
  canceled          INTEGER NOT NULL DEFAULT 0,
  priority          INTEGER NOT NULL,
  max_attempts      INTEGER NOT NULL,
  ending            TEXT CHECK (ending IN ('cancel', 'expire')), -- why unstarted lines are being canceled
  webhook_url       TEXT,
  webhook_secret    TEXT,
  created_at        INTEGER NOT NULL,
  in_progress_at    INTEGER,
  expires_at        INTEGER NOT NULL,
  finalizing_at     INTEGER,
  completed_at      INTEGER,
  failed_at         INTEGER,
  expired_at        INTEGER,
  cancelling_at     INTEGER,
  cancelled_at      INTEGER
) STRICT;

CREATE INDEX batches_open ON batches (expires_at) WHERE status IN ('validating', 'in_progress', 'cancelling');

-- A batch line's job until it ends (the row goes in that transaction): no foreign key, as jobs are pruned.
CREATE TABLE batch_requests (
  job_id    TEXT PRIMARY KEY,
  batch_id  TEXT NOT NULL REFERENCES batches (id) ON DELETE CASCADE,
  custom_id TEXT NOT NULL
) STRICT;

CREATE INDEX batch_requests_by_batch ON batch_requests (batch_id);

-- The starvation guard's lookup skips batch lines (they are never promoted): this index holds only the others,
-- so a large batch waiting at its priority costs that lookup nothing.
CREATE INDEX jobs_overdue ON jobs (state, priority, created_at) WHERE source != 'batch';

-- A webhook delivery is now a job's or a batch's.
CREATE TABLE webhook_deliveries_new (
  id              TEXT PRIMARY KEY,              -- ULID, also the webhook-id header
  job_id          TEXT UNIQUE REFERENCES jobs (id) ON DELETE CASCADE,
  batch_id        TEXT UNIQUE REFERENCES batches (id) ON DELETE CASCADE,
  url             TEXT NOT NULL,
  secret          TEXT,
  state           TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
  attempts        INTEGER NOT NULL DEFAULT 0,
  next_attempt_at INTEGER NOT NULL,
  last_status     INTEGER,
  last_error      TEXT,
  created_at      INTEGER NOT NULL,
  finished_at     INTEGER,
  CHECK ((job_id IS NULL) <> (batch_id IS NULL))
) STRICT;

INSERT INTO webhook_deliveries_new (id, job_id, url, secret, state, attempts, next_attempt_at, last_status, last_error,
  created_at, finished_at)
SELECT id, job_id, url, secret, state, attempts, next_attempt_at, last_status, last_error, created_at, finished_at
FROM webhook_deliveries;
DROP TABLE webhook_deliveries;
ALTER TABLE webhook_deliveries_new RENAME TO webhook_deliveries;
CREATE INDEX webhook_due ON webhook_deliveries (state, next_attempt_at);
