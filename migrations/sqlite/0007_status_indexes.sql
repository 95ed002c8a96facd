-- Counts per state for `reaper_status` and `status` without reading the whole table.
--
-- Measured on 1,000,000 rows (90% deleted, SQLite 3.51, with or without ANALYZE): the view took
-- 720-1080 ms, every state count and `last_success` a scan of the table. With (state,
-- finished_at) every part of the view is a search of this index (covering for the counts and
-- for MAX(finished_at) of deleted and gone): 41-56 ms. (state, editor) serves `status`'s
-- counts per editor and state: 1.3 s -> 0.25 s. `(state)` alone was worse for `status` (its
-- last-success lookup switched to it and sorted).
--
-- The price: every outcome write moves the row's entries in both (its state and finished_at
-- change once). At full speed, 50,000 rows, three alternating runs of bench/profile/prof.sh:
-- 0.066-0.070 ms of CPU per deletion without them, 0.104-0.109 ms with them.
CREATE INDEX IF NOT EXISTS reaper_sessions_state_finished ON reaper_sessions (state, finished_at);
CREATE INDEX IF NOT EXISTS reaper_sessions_state_editor ON reaper_sessions (state, editor);
