-- GPU time per key per UTC day (who uses the GPU): what each of its jobs held the GPU, its start to its end
-- (the load too when it caused the swap), charged in the transaction that ends it done, failed or canceled.
ALTER TABLE key_usage ADD COLUMN gpu_ms INTEGER NOT NULL DEFAULT 0;
