-- Webhook deliveries (src/queue/migrations/001, 002, 004, 010): SQLite's columns and meanings, times as epoch ms
-- in bigint (the database's clock), one row per ended job that has a webhook, queued in the transaction that ends
-- the job (PgJobStore), so an ended job always has its delivery and an end rolled back has none. batch_id is
-- SQLite's too, for a batch's own webhook; batches are not on PostgreSQL yet, so nothing references them here.
CREATE TABLE webhook_deliveries (
  id              text COLLATE "C" PRIMARY KEY,             -- msg_…, also the webhook-id header
  job_id          text COLLATE "C" UNIQUE REFERENCES jobs (id) ON DELETE CASCADE,
  batch_id        text COLLATE "C" UNIQUE,
  url             text NOT NULL,
  secret          text,
  state           text NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
  attempts        integer NOT NULL DEFAULT 0,
  -- When any node may attempt it next. A node's claim moves it forward by the claim's length (the lease), so
  -- no other node attempts it meanwhile, and one that died mid-attempt leaves it to the others when it passes.
  next_attempt_at bigint NOT NULL,
  last_status     integer,
  last_error      text,
  created_at      bigint NOT NULL,
  finished_at     bigint,
  key_id          text COLLATE "C",                         -- whose job or batch it tells of
  -- Claims made of it: each claim's token. An outcome is recorded only under the claim it was attempted
  -- under, so a node whose claim expired and was taken over cannot overwrite the newer attempt's.
  claims          integer NOT NULL DEFAULT 0,
  CHECK ((job_id IS NULL) <> (batch_id IS NULL))
);

-- The due rows, soonest first (the claim's seek and the next wake-up's min): pending ones alone, so the
-- delivered and failed rows a queue keeps until pruning are in none of it.
CREATE INDEX webhook_due ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';

-- Every node's dispatcher is woken by a new delivery, whichever node ended its job: an empty payload, so the
-- notifications of one transaction fold into one. Delivered on commit only, like the row.
CREATE FUNCTION webhook_deliveries_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('foreman_webhook_due', '');
  RETURN NULL;
END $$;

CREATE TRIGGER webhook_deliveries_queued AFTER INSERT ON webhook_deliveries
  FOR EACH ROW EXECUTE FUNCTION webhook_deliveries_notify();
