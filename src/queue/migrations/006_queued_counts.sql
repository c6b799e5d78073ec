-- Queued jobs counted per (model, priority), kept by triggers in the transaction of every change, so
-- the backpressure check on each enqueue, GET /queue and a job's queue position read a few rows
-- instead of counting the whole queue (O(queue): 2.8 ms per enqueue at 100,000 queued). Triggers,
-- not code, because both threads write `jobs`. A later migration that rebuilds `jobs` must recreate them.
CREATE TABLE queued_counts (
  model    TEXT NOT NULL,
  priority INTEGER NOT NULL,
  n        INTEGER NOT NULL,
  PRIMARY KEY (model, priority)
) STRICT, WITHOUT ROWID;

INSERT INTO queued_counts (model, priority, n)
  SELECT model, priority, count(*) FROM jobs WHERE state = 'queued' GROUP BY model, priority;

CREATE TRIGGER jobs_queued_insert AFTER INSERT ON jobs WHEN new.state = 'queued' BEGIN
  INSERT INTO queued_counts (model, priority, n) VALUES (new.model, new.priority, 1)
    ON CONFLICT (model, priority) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER jobs_queued_return AFTER UPDATE OF state ON jobs WHEN old.state <> 'queued' AND new.state = 'queued' BEGIN
  INSERT INTO queued_counts (model, priority, n) VALUES (new.model, new.priority, 1)
    ON CONFLICT (model, priority) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER jobs_queued_leave AFTER UPDATE OF state ON jobs WHEN old.state = 'queued' AND new.state <> 'queued' BEGIN
  UPDATE queued_counts SET n = n - 1 WHERE model = old.model AND priority = old.priority;
  DELETE FROM queued_counts WHERE model = old.model AND priority = old.priority AND n <= 0;
END;

CREATE TRIGGER jobs_queued_delete AFTER DELETE ON jobs WHEN old.state = 'queued' BEGIN
  UPDATE queued_counts SET n = n - 1 WHERE model = old.model AND priority = old.priority;
  DELETE FROM queued_counts WHERE model = old.model AND priority = old.priority AND n <= 0;
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
