-- Which Office Integrator editor a session belongs to: its DELETE goes to that editor's path and
-- its answer is read by that editor's codes. Rows already there are Writer sessions (the only
-- editor before this migration).
--
-- A constant default adds the column without rewriting the table (PostgreSQL 11+); the CHECK is
-- validated against the existing rows in the same statement, under a short exclusive lock.
ALTER TABLE reaper_sessions
    ADD COLUMN editor TEXT NOT NULL DEFAULT 'writer'
        CONSTRAINT reaper_sessions_editor_is_known CHECK (editor IN ('writer', 'sheet', 'show', 'pdf'));
