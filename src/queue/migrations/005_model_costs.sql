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

-- Queued jobs per (model key, priority), kept by triggers in the transaction that changes a job, so
-- the group choice and the estimates read a handful of rows instead of counting 100,000 queued ones.
CREATE TABLE queue_groups (
  model_key TEXT NOT NULL,
  priority  INTEGER NOT NULL,
  queued    INTEGER NOT NULL,
  PRIMARY KEY (model_key, priority)
) STRICT, WITHOUT ROWID;

INSERT INTO queue_groups (model_key, priority, queued)
  SELECT model_key, priority, count(*) FROM jobs WHERE state = 'queued' GROUP BY model_key, priority;

CREATE TRIGGER queue_groups_insert AFTER INSERT ON jobs WHEN new.state = 'queued' BEGIN
  INSERT INTO queue_groups (model_key, priority, queued) VALUES (new.model_key, new.priority, 1)
    ON CONFLICT (model_key, priority) DO UPDATE SET queued = queued + 1;
END;

CREATE TRIGGER queue_groups_requeue AFTER UPDATE OF state ON jobs WHEN old.state <> 'queued' AND new.state = 'queued' BEGIN
  INSERT INTO queue_groups (model_key, priority, queued) VALUES (new.model_key, new.priority, 1)
    ON CONFLICT (model_key, priority) DO UPDATE SET queued = queued + 1;
END;

CREATE TRIGGER queue_groups_leave AFTER UPDATE OF state ON jobs WHEN old.state = 'queued' AND new.state <> 'queued' BEGIN
  UPDATE queue_groups SET queued = queued - 1 WHERE model_key = old.model_key AND priority = old.priority;
END;

CREATE TRIGGER queue_groups_delete AFTER DELETE ON jobs WHEN old.state = 'queued' BEGIN
  UPDATE queue_groups SET queued = queued - 1 WHERE model_key = old.model_key AND priority = old.priority;
END;
