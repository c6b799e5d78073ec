-- Queued jobs counted per (model key, model, priority, batch or not), kept by triggers in the transaction of every change, so
-- the backpressure check on each enqueue, GET /queue, a job's queue position, the scheduler's choice of the
-- next model and the start estimates read a few rows
-- instead of counting the whole queue (O(queue): 2.8 ms per enqueue at 100,000 queued). Triggers,
-- not code, because both threads write `jobs`. A later migration that rebuilds `jobs` must recreate them.
CREATE TABLE queued_counts (
  model_key TEXT NOT NULL,    -- what drains together: the scheduler's groups and the start estimates
  model     TEXT NOT NULL,    -- as clients named it: GET /queue's by_model
  priority  INTEGER NOT NULL,
  batch     INTEGER NOT NULL, -- 1 for batch lines, which the FOREMAN_MAX_QUEUE check leaves out
  n         INTEGER NOT NULL,
  PRIMARY KEY (model_key, priority, model, batch)
) STRICT, WITHOUT ROWID;

INSERT INTO queued_counts (model_key, model, priority, batch, n)
  SELECT model_key, model, priority, source = 'batch', count(*) FROM jobs WHERE state = 'queued'
  GROUP BY model_key, model, priority, source = 'batch';

CREATE TRIGGER jobs_queued_insert AFTER INSERT ON jobs WHEN new.state = 'queued' BEGIN
  INSERT INTO queued_counts (model_key, model, priority, batch, n)
    VALUES (new.model_key, new.model, new.priority, new.source = 'batch', 1)
    ON CONFLICT (model_key, priority, model, batch) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER jobs_queued_return AFTER UPDATE OF state ON jobs WHEN old.state <> 'queued' AND new.state = 'queued' BEGIN
  INSERT INTO queued_counts (model_key, model, priority, batch, n)
    VALUES (new.model_key, new.model, new.priority, new.source = 'batch', 1)
    ON CONFLICT (model_key, priority, model, batch) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER jobs_queued_leave AFTER UPDATE OF state ON jobs WHEN old.state = 'queued' AND new.state <> 'queued' BEGIN
  UPDATE queued_counts SET n = n - 1
    WHERE model_key = old.model_key AND priority = old.priority AND model = old.model AND batch = (old.source = 'batch');
  DELETE FROM queued_counts
    WHERE model_key = old.model_key AND priority = old.priority AND model = old.model AND batch = (old.source = 'batch')
      AND n <= 0;
END;

CREATE TRIGGER jobs_queued_delete AFTER DELETE ON jobs WHEN old.state = 'queued' BEGIN
  UPDATE queued_counts SET n = n - 1
    WHERE model_key = old.model_key AND priority = old.priority AND model = old.model AND batch = (old.source = 'batch');
  DELETE FROM queued_counts
    WHERE model_key = old.model_key AND priority = old.priority AND model = old.model AND batch = (old.source = 'batch')
      AND n <= 0;
END;

-- Queued jobs per priority and creation time slot (the first 9 characters of the ULID: 32 ms), so a job's place
-- in the queue is the slots before its own, summed, plus the few jobs ahead of it in its own slot: about a
-- hundred rows at 100,000 queued, where counting the jobs ahead walked up to all of them (11 ms mid-queue).
CREATE TABLE queued_slots (
  priority INTEGER NOT NULL,
  slot     TEXT NOT NULL,
  n        INTEGER NOT NULL,
  PRIMARY KEY (priority, slot)
) STRICT, WITHOUT ROWID;

INSERT INTO queued_slots (priority, slot, n)
  SELECT priority, substr(id, 1, 9), count(*) FROM jobs WHERE state = 'queued' GROUP BY priority, substr(id, 1, 9);

CREATE TRIGGER jobs_slot_insert AFTER INSERT ON jobs WHEN new.state = 'queued' BEGIN
  INSERT INTO queued_slots (priority, slot, n) VALUES (new.priority, substr(new.id, 1, 9), 1)
    ON CONFLICT (priority, slot) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER jobs_slot_return AFTER UPDATE OF state ON jobs WHEN old.state <> 'queued' AND new.state = 'queued' BEGIN
  INSERT INTO queued_slots (priority, slot, n) VALUES (new.priority, substr(new.id, 1, 9), 1)
    ON CONFLICT (priority, slot) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER jobs_slot_leave AFTER UPDATE OF state ON jobs WHEN old.state = 'queued' AND new.state <> 'queued' BEGIN
  UPDATE queued_slots SET n = n - 1 WHERE priority = old.priority AND slot = substr(old.id, 1, 9);
  DELETE FROM queued_slots WHERE priority = old.priority AND slot = substr(old.id, 1, 9) AND n <= 0;
END;

CREATE TRIGGER jobs_slot_delete AFTER DELETE ON jobs WHEN old.state = 'queued' BEGIN
  UPDATE queued_slots SET n = n - 1 WHERE priority = old.priority AND slot = substr(old.id, 1, 9);
  DELETE FROM queued_slots WHERE priority = old.priority AND slot = substr(old.id, 1, 9) AND n <= 0;
END;

-- GET /jobs?state=… pages newest first: without this, SQLite sorted every job in that state per page.
CREATE INDEX jobs_by_state ON jobs (state, id);
