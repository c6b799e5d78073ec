-- A batch's lines are queued in slices (a transaction of a few hundred each, the HTTP thread free between
-- them) while it stays validating: the input line number each slice reached is kept with it, so a restart
-- resumes after it and a line is never queued twice nor lost.
ALTER TABLE batches ADD COLUMN admitted_through INTEGER NOT NULL DEFAULT 0;
