-- An OpenAI stream not asked for its usage frame reports no tokens: foreman counts its output records
-- (one per token) and times them itself. 1 marks such a row's output_tokens and eval_ms as foreman's
-- estimate, 0 as the API's own figures; null before the job is done.
ALTER TABLE jobs ADD COLUMN tokens_estimated INTEGER;
