-- The queue on PostgreSQL (FOREMAN_DB=postgres://…): the jobs table has SQLite's final columns with their
-- meanings (src/queue/migrations/001–012), times as epoch ms in bigint, so a row reads the same on either
-- engine and copying a database between them is a column-for-column copy. Ids, model keys and key ids
-- compare in byte order (COLLATE "C") whatever the database's locale: the claim compares ids in SQL and in
-- the code alike, and ULIDs sort by age only in byte order.
CREATE TABLE jobs (
  id               text COLLATE "C" PRIMARY KEY,  -- ULID: sorts by creation time, the FIFO tie-break
  type             text NOT NULL,                 -- the adapter: chat, generate, …
  model            text NOT NULL,                 -- as the client sent it
  model_key        text COLLATE "C" NOT NULL,     -- model:tag plus the options that force a reload
  request          text NOT NULL,                 -- the request body, JSON, in its API's format
  source           text NOT NULL,                 -- who is waiting: the API a client called, "jobs" or "batch"
  state            text NOT NULL CHECK (state IN ('queued', 'loading', 'working', 'done', 'failed', 'canceled')),
  priority         integer NOT NULL DEFAULT 0,
  attempts         integer NOT NULL DEFAULT 0,
  max_attempts     integer NOT NULL,
  run_after        bigint NOT NULL,               -- epoch ms; retries back off by pushing it forward
  error            text,
  error_status     integer,                       -- the HTTP status a failure or cancel answers with
  created_at       bigint NOT NULL,
  started_at       bigint,
  finished_at      bigint,
  result           text,                          -- the final answer as its API's non-streaming body
  idempotency_key  text UNIQUE,
  webhook_url      text,
  webhook_secret   text,
  swapped          integer,                       -- 1 when its model was not loaded at its (last) claim
  prompt_tokens    integer,
  output_tokens    integer,
  load_ms          double precision,              -- Ollama's load_duration (native APIs only)
  eval_ms          double precision,              -- Ollama's eval_duration (native APIs only)
  tokens_estimated integer,                       -- 1: output_tokens and eval_ms are foreman's count and timing
  key_id           text COLLATE "C",              -- the API key that made it; null for none
  target           text                           -- the Ollama target that runs or last ran it
);

-- The claim's seeks, one per (priority, model key) group and per caller in it: partial on 'queued', so the
-- finished jobs a queue keeps until pruning are in none of them.
CREATE INDEX jobs_queued_by_model ON jobs (priority, model_key, id) WHERE state = 'queued';
-- The starvation guard's oldest job per group; batch lines are never promoted, so they are left out.
CREATE INDEX jobs_queued_overdue ON jobs (priority, model_key, created_at, id) WHERE state = 'queued' AND source <> 'batch';
CREATE INDEX jobs_queued_by_caller ON jobs (key_id, priority, model_key, id) WHERE state = 'queued';
CREATE INDEX jobs_queued_run_after ON jobs (run_after) WHERE state = 'queued';
-- Recovery by target: the jobs a dead node left running on the targets whose leases were taken over.
CREATE INDEX jobs_running_by_target ON jobs (target) WHERE state IN ('loading', 'working');
CREATE INDEX jobs_by_finish ON jobs (finished_at) WHERE finished_at IS NOT NULL;

-- Queued jobs counted per (model key, model, priority, batch or not, caller), kept by triggers in the
-- transaction of every change, as SQLite's migration 006 does: the backpressure check and the claim read a
-- few rows instead of the queue. One column more than SQLite's: the caller ('' for the anonymous one), so
-- fair share's "which callers wait at this priority" is these rows too. A row that reaches 0 stays (an
-- update in place, where deleting it and inserting it again would race concurrent claims and enqueues);
-- readers skip n = 0, and pruning deletes such rows.
CREATE TABLE queued_counts (
  model_key text COLLATE "C" NOT NULL,
  model     text NOT NULL,
  priority  integer NOT NULL,
  batch     integer NOT NULL,              -- 1 for batch lines, which the FOREMAN_MAX_QUEUE check leaves out
  key_id    text COLLATE "C" NOT NULL,     -- '' for the anonymous caller
  n         integer NOT NULL,
  PRIMARY KEY (model_key, priority, model, batch, key_id)
);

CREATE FUNCTION queued_counts_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO queued_counts AS c (model_key, model, priority, batch, key_id, n)
    VALUES (NEW.model_key, NEW.model, NEW.priority, (NEW.source = 'batch')::integer, coalesce(NEW.key_id, ''), 1)
    ON CONFLICT (model_key, priority, model, batch, key_id) DO UPDATE SET n = c.n + 1;
  RETURN NULL;
END $$;

CREATE FUNCTION queued_counts_remove() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE queued_counts SET n = n - 1
    WHERE model_key = OLD.model_key AND priority = OLD.priority AND model = OLD.model
      AND batch = (OLD.source = 'batch')::integer AND key_id = coalesce(OLD.key_id, '');
  RETURN NULL;
END $$;

CREATE TRIGGER jobs_queued_insert AFTER INSERT ON jobs
  FOR EACH ROW WHEN (NEW.state = 'queued') EXECUTE FUNCTION queued_counts_add();
CREATE TRIGGER jobs_queued_return AFTER UPDATE OF state ON jobs
  FOR EACH ROW WHEN (OLD.state <> 'queued' AND NEW.state = 'queued') EXECUTE FUNCTION queued_counts_add();
CREATE TRIGGER jobs_queued_leave AFTER UPDATE OF state ON jobs
  FOR EACH ROW WHEN (OLD.state = 'queued' AND NEW.state <> 'queued') EXECUTE FUNCTION queued_counts_remove();
CREATE TRIGGER jobs_queued_delete AFTER DELETE ON jobs
  FOR EACH ROW WHEN (OLD.state = 'queued') EXECUTE FUNCTION queued_counts_remove();

-- What each model key has cost to run (src/queue/migrations/005), learned at every job's end done.
CREATE TABLE model_costs (
  model_key     text COLLATE "C" PRIMARY KEY,
  load_ms       double precision,
  run_ms        double precision,
  total_ms      double precision,
  output_tokens double precision,
  eval_ms       double precision,
  jobs          integer NOT NULL DEFAULT 0,
  loads         integer NOT NULL DEFAULT 0,
  updated_at    bigint NOT NULL
);

-- API keys (src/queue/migrations/010 and 011's weight): what fair share reads (does any key exist, a
-- key's weight). The keys' own routes and limits come with a later migration.
CREATE TABLE keys (
  id           text COLLATE "C" PRIMARY KEY,
  name         text NOT NULL UNIQUE,
  role         text NOT NULL CHECK (role IN ('admin', 'client')),
  secret_hash  bytea NOT NULL UNIQUE,
  hint         text NOT NULL,
  models       text,
  apis         text,
  max_priority integer,
  max_jobs     integer,
  daily_tokens bigint,
  created_at   bigint NOT NULL,
  rotated_at   bigint,
  revoked_at   bigint,
  weight       double precision NOT NULL DEFAULT 1 CHECK (weight > 0)
);

-- Fair share's virtual counters (src/queue/migrations/011): GPU-ms received over weight, per caller.
CREATE TABLE key_counters (
  key_id     text COLLATE "C" PRIMARY KEY,   -- '' for the anonymous caller
  counter    double precision NOT NULL,
  updated_at bigint NOT NULL
);

-- Each target (Ollama host) is run by one node at a time: the node holding its row until expires_at (the
-- database's clock). token grows at every takeover; a claim or an end made under an older token is refused.
CREATE TABLE target_leases (target text PRIMARY KEY, node text NOT NULL, token bigint NOT NULL, expires_at timestamptz NOT NULL);
