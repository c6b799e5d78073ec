-- Several Ollama hosts (targets) behind one queue. `target` is the host that runs, or last ran, the job's
-- attempt: set by the claim, in the same statement that takes the job, so two runners never share one.
ALTER TABLE jobs ADD COLUMN target TEXT;

-- What each model key costs on each target (a load on a big card is not a load on a laptop): learned
-- beside model_costs, in the transaction that ends a job done, and read by the placement of a runner.
CREATE TABLE target_costs (
  target     TEXT NOT NULL,
  model_key  TEXT NOT NULL,
  load_ms    REAL,                       -- expected load time here when not resident (swapped jobs only)
  run_ms     REAL,                       -- expected run time of one job here with the model loaded
  jobs       INTEGER NOT NULL DEFAULT 0,
  loads      INTEGER NOT NULL DEFAULT 0,
  updated_at INTEGER NOT NULL,
  PRIMARY KEY (target, model_key)
) STRICT;
