-- How many process starts in a row resumed a run, saw it do work, and died before it came to rest (a step ended, or
-- the run only waited): a run whose process keeps dying under it is failed instead of resumed again.
ALTER TABLE runs ADD COLUMN resumes INTEGER NOT NULL DEFAULT 0;
