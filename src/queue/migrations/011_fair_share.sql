-- Fair share between callers (VTC, Sheng et al., OSDI 2024): each caller's service received, in GPU-ms over
-- its weight, charged in the transaction that ends each job that ran; the claim serves the waiting caller
-- with the least. A key's weight: twice the weight, twice the GPU time for the same counter.
ALTER TABLE keys ADD COLUMN weight REAL NOT NULL DEFAULT 1 CHECK (weight > 0);

CREATE TABLE key_counters (
  key_id     TEXT PRIMARY KEY,                    -- '' for the anonymous caller (FOREMAN_TOKEN, open, rows before keys)
  counter    REAL NOT NULL,                       -- GPU-ms received / weight, lifted on return (idleness banks no credit)
  updated_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- Callers with jobs waiting when this migration runs start level.
INSERT INTO key_counters (key_id, counter, updated_at)
  SELECT DISTINCT coalesce(key_id, ''), 0, 0 FROM jobs WHERE state IN ('queued', 'loading', 'working');

-- The claim's seeks per caller: does it wait at this priority, and its oldest job of one model key. Not partial,
-- so the anonymous caller (key_id NULL) is found with `key_id IS NULL` as every key is.
CREATE INDEX jobs_by_caller ON jobs (key_id, state, priority, model_key, id);
