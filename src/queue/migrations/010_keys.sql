-- API keys: who is asking. The secret is never stored, only its SHA-256 (it is 256 random bits, so a fast
-- hash is enough: there is no dictionary to try, and a slow KDF would cost every request milliseconds).
CREATE TABLE keys (
  id           TEXT PRIMARY KEY,                  -- key_<ULID>
  name         TEXT NOT NULL UNIQUE,              -- what people, logs and metrics call it
  role         TEXT NOT NULL CHECK (role IN ('admin', 'client')),
  secret_hash  BLOB NOT NULL UNIQUE,              -- sha256 of the secret
  hint         TEXT NOT NULL,                     -- the secret's last 4 characters, to tell keys apart
  models       TEXT,                              -- JSON list of globs the key may use; null: every model
  apis         TEXT,                              -- JSON list of ollama, openai, anthropic, jobs, batches; null: all
  max_priority INTEGER,                           -- priorities asked above it are lowered to it
  max_jobs     INTEGER,                           -- queued plus running jobs at once
  daily_tokens INTEGER,                           -- prompt plus output tokens per UTC day
  created_at   INTEGER NOT NULL,
  rotated_at   INTEGER,
  revoked_at   INTEGER
) STRICT;

-- Tokens used per key per UTC day, charged in the transaction that ends each job done.
CREATE TABLE key_usage (
  key_id        TEXT NOT NULL,
  day           TEXT NOT NULL,                    -- YYYY-MM-DD, UTC
  prompt_tokens INTEGER NOT NULL DEFAULT 0,
  output_tokens INTEGER NOT NULL DEFAULT 0,
  jobs          INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (key_id, day)
) STRICT, WITHOUT ROWID;

-- Whose each row is: null for FOREMAN_TOKEN, an open foreman, and rows made before keys existed.
ALTER TABLE jobs ADD COLUMN key_id TEXT;
ALTER TABLE batches ADD COLUMN key_id TEXT;
ALTER TABLE files ADD COLUMN key_id TEXT;
ALTER TABLE webhook_deliveries ADD COLUMN key_id TEXT;

-- A client key's job list, and its job cap's count of queued and running jobs.
CREATE INDEX jobs_by_key ON jobs (key_id, state, id) WHERE key_id IS NOT NULL;
CREATE INDEX batches_by_key ON batches (key_id, id) WHERE key_id IS NOT NULL;
CREATE INDEX files_by_key ON files (key_id, id) WHERE key_id IS NOT NULL;
