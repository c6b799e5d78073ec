-- What a job's end leaves besides its row, as SQLite keeps it (src/queue/migrations/001, 009, 010, 012), each
-- written in the transaction that ends the job: its artifacts, its run's cost on its target, its key's usage.

-- A job's stored outputs (result.json, stream.ndjson, …), read back by a late reader's replay. Pruning a job
-- deletes them (the cascade seeks the primary key). EXTERNAL: stored out of line uncompressed, so a slice
-- (substring) reads the TOAST chunks it covers and no more; compressed, every slice would decompress the
-- value from its start, and a replay read slice by slice would cost the square of the stream's length.
CREATE TABLE artifacts (
  job_id       text COLLATE "C" NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
  name         text COLLATE "C" NOT NULL,
  content_type text NOT NULL,
  data         bytea NOT NULL,
  created_at   bigint NOT NULL,                     -- epoch ms, the end's (the database's clock)
  PRIMARY KEY (job_id, name)
);
ALTER TABLE artifacts ALTER COLUMN data SET STORAGE EXTERNAL;

-- What each model key costs on each target (a load on a big card is not a load on a laptop): learned beside
-- model_costs when the node runs several targets, read by its placement.
CREATE TABLE target_costs (
  target     text COLLATE "C" NOT NULL,
  model_key  text COLLATE "C" NOT NULL,
  load_ms    double precision,                      -- expected load time here when not resident (swapped jobs only)
  run_ms     double precision,                      -- expected run time of one job here with the model loaded
  jobs       integer NOT NULL DEFAULT 0,
  loads      integer NOT NULL DEFAULT 0,
  updated_at bigint NOT NULL,
  PRIMARY KEY (target, model_key)
);

-- Per key per UTC day: the tokens of its jobs done (and how many), charged at each job's end done, and what
-- its jobs held the GPU (start to end, the load too when one caused the swap), charged at any end of a job
-- that ran. Read by admission (the daily quota). No row for a day a key was charged nothing.
CREATE TABLE key_usage (
  key_id        text COLLATE "C" NOT NULL,
  day           text COLLATE "C" NOT NULL,          -- YYYY-MM-DD, UTC
  prompt_tokens bigint NOT NULL DEFAULT 0,
  output_tokens bigint NOT NULL DEFAULT 0,
  jobs          integer NOT NULL DEFAULT 0,
  gpu_ms        bigint NOT NULL DEFAULT 0,
  PRIMARY KEY (key_id, day)
);

-- A key's job cap counts its queued and running jobs: a range of this index, which holds active jobs alone
-- (the ended ones a queue keeps until pruning are in none of it), so the count is the few the cap allows
-- whatever the queue's length or the key's history (SQLite's count reads jobs_by_key, migration 010).
CREATE INDEX jobs_active_by_key ON jobs (key_id) WHERE key_id IS NOT NULL AND state IN ('queued', 'loading', 'working');

-- The job list filtered by state (GET /jobs?state=failed), newest first: a rare state is a seek, not a walk
-- of the whole table backwards (SQLite's jobs_by_state).
CREATE INDEX jobs_by_state ON jobs (state, id);

-- Who waits for a client's own request (sources ollama, openai, anthropic): the node holding its connection. A
-- node that stops beating (nodes.seen_at) took its connections with it, so its clients' jobs, queued or running
-- anywhere, are canceled by the nodes still alive and never run for nobody (SQLite's restart recovery does the
-- same for one process). Job API and batch jobs wait on no connection: no waiter.
ALTER TABLE jobs ADD COLUMN waiter text COLLATE "C";
CREATE INDEX jobs_active_by_waiter ON jobs (waiter) WHERE waiter IS NOT NULL AND state IN ('queued', 'loading', 'working');
CREATE TABLE nodes (
  name    text COLLATE "C" PRIMARY KEY,  -- FOREMAN_NODE, unique per process
  seen_at timestamptz NOT NULL           -- its last heartbeat, on the database's clock
);
