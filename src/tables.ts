import type { Database } from "bun:sqlite";
import { BatchLedger } from "./batch/ledger";
import { JobStore } from "./queue/store";
import { WebhookDeliveries } from "./webhook/deliveries";

/**
 * The job store over one connection, with the owners of the other tables a job's end writes registered
 * on it: the job's webhook delivery, then its batch line (and its batch's end and webhook), each inside
 * the transaction that ends the job. The queue imports neither; each thread builds one of these over its
 * own connection, once per store (two would write every end twice).
 */
export interface JobTables {
  store: JobStore;
  /** `webhook_deliveries`: queued at a job's or a batch's end, worked by the dispatcher. */
  deliveries: WebhookDeliveries;
  /** The batch lines' output and progress, recorded at their jobs' ends. */
  batchLedger: BatchLedger;
}

export function openJobTables(db: Database, fairShare: "on" | "off" = "on"): JobTables {
  const store = new JobStore(db);
  // FOREMAN_FAIR_SHARE, on both threads' stores: the HTTP thread lifts counters at enqueue, the worker charges and orders.
  store.fair.enabled = fairShare === "on";
  const deliveries = new WebhookDeliveries(db);
  const batchLedger = new BatchLedger(db, deliveries);
  store.onJobEnd((job, now) => deliveries.queueTx(job, now));
  store.onJobEnd((job, now) => batchLedger.recordTx(job, now));
  return { store, deliveries, batchLedger };
}
