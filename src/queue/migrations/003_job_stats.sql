-- What running a job cost, read from its row by the logs, metrics, dashboard and scheduler alike.
ALTER TABLE jobs ADD COLUMN swapped INTEGER;        -- 1 when its model was not loaded at its (last) claim
ALTER TABLE jobs ADD COLUMN prompt_tokens INTEGER;  -- tokens read, as its API reports usage
ALTER TABLE jobs ADD COLUMN output_tokens INTEGER;  -- tokens generated
ALTER TABLE jobs ADD COLUMN load_ms REAL;           -- Ollama's load_duration (native APIs only)
ALTER TABLE jobs ADD COLUMN eval_ms REAL;           -- Ollama's eval_duration (native APIs only)
