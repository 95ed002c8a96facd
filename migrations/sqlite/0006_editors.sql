-- Which Office Integrator editor a session belongs to: its DELETE goes to that editor's path and
-- its answer is read by that editor's codes. Rows already there are Writer sessions (the only
-- editor before this migration).
--
-- SQLite allows ADD COLUMN with NOT NULL and a CHECK when the default is a constant; since 3.37
-- it also tests the CHECK against the rows already there (all 'writer' here). A value outside
-- the four is refused at INSERT and UPDATE, by name. A row that escaped it (PRAGMA
-- ignore_check_constraints) is set aside at claim time as `invalid`, naming the column.
ALTER TABLE reaper_sessions ADD COLUMN editor TEXT NOT NULL DEFAULT 'writer'
    CONSTRAINT reaper_sessions_editor_is_known CHECK (editor IN ('writer', 'sheet', 'show', 'pdf'));
