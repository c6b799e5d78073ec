-- What each model key has cost to run, learned from its finished jobs as rolling averages (EWMA), so
-- the scheduler's group choice and the start estimates survive a restart.
CREATE TABLE model_costs (
  model_key     TEXT PRIMARY KEY,
  load_ms       REAL,                       -- expected load time when not resident (swapped jobs only)
  run_ms        REAL,                       -- expected run time of one job with the model loaded
  total_ms      REAL,                       -- a job's start to finish, loads included
  output_tokens REAL,                       -- Ollama's eval_count, or the API's output tokens
  eval_ms       REAL,                       -- Ollama's eval_duration (native APIs only)
  jobs          INTEGER NOT NULL DEFAULT 0, -- finished jobs learned from
  loads         INTEGER NOT NULL DEFAULT 0, -- of which contributed a load time
  updated_at    INTEGER NOT NULL
) STRICT;
