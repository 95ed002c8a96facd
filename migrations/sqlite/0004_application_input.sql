-- The application writes this table with whatever its language and ORM do. What it writes is
-- input: each time column takes epoch milliseconds or a date the way SQLite's own functions write
-- it, and what cannot be meant is refused at INSERT/UPDATE by a trigger whose name says what is
-- expected. (SQLite cannot add a CHECK constraint to an existing table without rebuilding it, and
-- a rebuild would refuse to copy any row that breaks the new rule; triggers guard new writes and
-- the statements below settle the rows already there.)
--
-- Accepted for delete_after, last_activity_at and finished_at:
--   * INTEGER epoch milliseconds (>= 0); digit-only text becomes INTEGER by the column's affinity;
--   * INTEGER epoch seconds, recognised as 1 .. 99,999,999,999 (before 1973-03-03 as
--     milliseconds, after 5138 as seconds): multiplied by 1000;
--   * TEXT dates as SQLite reads them (datetime('now'), CURRENT_TIMESTAMP, ISO-8601 with or
--     without 'T', fractional seconds, 'Z' or an offset), as unixepoch() interprets them (UTC
--     unless an offset is given): converted to epoch milliseconds.
-- Refused: REAL, BLOB, negative integers, text that is no date.

-- 1. Rows already there: dates become milliseconds, seconds become milliseconds.
UPDATE reaper_sessions
   SET delete_after = CAST(round(unixepoch(delete_after, 'subsec') * 1000) AS INTEGER)
 WHERE typeof(delete_after) = 'text' AND unixepoch(delete_after) IS NOT NULL;
UPDATE reaper_sessions
   SET last_activity_at = CAST(round(unixepoch(last_activity_at, 'subsec') * 1000) AS INTEGER)
 WHERE typeof(last_activity_at) = 'text' AND unixepoch(last_activity_at) IS NOT NULL;
UPDATE reaper_sessions
   SET finished_at = CAST(round(unixepoch(finished_at, 'subsec') * 1000) AS INTEGER)
 WHERE typeof(finished_at) = 'text' AND unixepoch(finished_at) IS NOT NULL;
UPDATE reaper_sessions SET delete_after = delete_after * 1000
 WHERE typeof(delete_after) = 'integer' AND delete_after BETWEEN 1 AND 99999999999;
UPDATE reaper_sessions SET last_activity_at = last_activity_at * 1000
 WHERE typeof(last_activity_at) = 'integer' AND last_activity_at BETWEEN 1 AND 99999999999;

-- 2. Open rows whose values cannot be meant are set aside, saying which column and why.
UPDATE reaper_sessions
   SET state = 'invalid',
       finished_at = CAST(unixepoch('now', 'subsec') * 1000 AS INTEGER),
       lease_owner = NULL, lease_expires_at = NULL,
       last_error = 'set aside by migration 0004: ' ||
         CASE
           WHEN typeof(session_id) <> 'text' THEN 'session_id is ' || typeof(session_id) || ', not text'
           WHEN typeof(attempts) <> 'integer' THEN 'attempts is ' || typeof(attempts) || ', not an integer'
           WHEN attempts NOT BETWEEN 0 AND 2147483647 THEN 'attempts = ' || attempts || ' is out of range (0 to 2147483647)'
           WHEN delete_after IS NOT NULL AND (typeof(delete_after) <> 'integer' OR delete_after < 0)
             THEN 'delete_after = ' || substr(quote(delete_after), 1, 40) || ' is no date or epoch milliseconds'
           ELSE 'last_activity_at = ' || substr(quote(last_activity_at), 1, 40) || ' is no date or epoch milliseconds'
         END
 WHERE state IN ('pending', 'retrying')
   AND (typeof(session_id) <> 'text'
        OR typeof(attempts) <> 'integer' OR attempts NOT BETWEEN 0 AND 2147483647
        OR (delete_after IS NOT NULL AND (typeof(delete_after) <> 'integer' OR delete_after < 0))
        OR (last_activity_at IS NOT NULL AND (typeof(last_activity_at) <> 'integer' OR last_activity_at < 0)));
UPDATE reaper_sessions SET attempts = 0
 WHERE typeof(attempts) <> 'integer' OR attempts NOT BETWEEN 0 AND 2147483647;
-- Final rows without a usable finished_at: the last attempt, else the insert time (so prune sees them).
UPDATE reaper_sessions
   SET finished_at = COALESCE(CASE WHEN typeof(last_attempt_at) = 'integer' THEN last_attempt_at END, created_at)
 WHERE state NOT IN ('pending', 'retrying')
   AND (finished_at IS NULL OR typeof(finished_at) <> 'integer' OR finished_at < 0);
-- A row the application marked final keeps no lease.
UPDATE reaper_sessions SET lease_owner = NULL, lease_expires_at = NULL
 WHERE state NOT IN ('pending', 'retrying') AND lease_owner IS NOT NULL;

-- 3. New writes: refuse what cannot be meant, each rule under a name that says what it expects.
CREATE TRIGGER IF NOT EXISTS reaper_sessions_times_are_epoch_ms_or_dates_on_insert
BEFORE INSERT ON reaper_sessions
WHEN (NEW.delete_after IS NOT NULL AND (typeof(NEW.delete_after) IN ('real', 'blob') OR NEW.delete_after < 0
        OR (typeof(NEW.delete_after) = 'text' AND unixepoch(NEW.delete_after) IS NULL)))
  OR (NEW.last_activity_at IS NOT NULL AND (typeof(NEW.last_activity_at) IN ('real', 'blob') OR NEW.last_activity_at < 0
        OR (typeof(NEW.last_activity_at) = 'text' AND unixepoch(NEW.last_activity_at) IS NULL)))
  OR (NEW.finished_at IS NOT NULL AND (typeof(NEW.finished_at) IN ('real', 'blob') OR NEW.finished_at < 0
        OR (typeof(NEW.finished_at) = 'text' AND unixepoch(NEW.finished_at) IS NULL)))
BEGIN
    SELECT RAISE(ABORT, 'reaper_sessions_times_are_epoch_ms_or_dates: delete_after, last_activity_at and finished_at take INTEGER epoch milliseconds >= 0 or a date SQLite reads (datetime(''now''), CURRENT_TIMESTAMP, ISO-8601)');
END;
-- On UPDATE only the values that change are judged: a row that already holds an odd value (it
-- predates these rules) can still be set aside or finished.
CREATE TRIGGER IF NOT EXISTS reaper_sessions_times_are_epoch_ms_or_dates_on_update
BEFORE UPDATE OF delete_after, last_activity_at, finished_at ON reaper_sessions
WHEN (NEW.delete_after IS NOT OLD.delete_after AND NEW.delete_after IS NOT NULL
        AND (typeof(NEW.delete_after) IN ('real', 'blob') OR NEW.delete_after < 0
             OR (typeof(NEW.delete_after) = 'text' AND unixepoch(NEW.delete_after) IS NULL)))
  OR (NEW.last_activity_at IS NOT OLD.last_activity_at AND NEW.last_activity_at IS NOT NULL
        AND (typeof(NEW.last_activity_at) IN ('real', 'blob') OR NEW.last_activity_at < 0
             OR (typeof(NEW.last_activity_at) = 'text' AND unixepoch(NEW.last_activity_at) IS NULL)))
  OR (NEW.finished_at IS NOT OLD.finished_at AND NEW.finished_at IS NOT NULL
        AND (typeof(NEW.finished_at) IN ('real', 'blob') OR NEW.finished_at < 0
             OR (typeof(NEW.finished_at) = 'text' AND unixepoch(NEW.finished_at) IS NULL)))
BEGIN
    SELECT RAISE(ABORT, 'reaper_sessions_times_are_epoch_ms_or_dates: delete_after, last_activity_at and finished_at take INTEGER epoch milliseconds >= 0 or a date SQLite reads (datetime(''now''), CURRENT_TIMESTAMP, ISO-8601)');
END;
CREATE TRIGGER IF NOT EXISTS reaper_sessions_session_id_is_text
BEFORE INSERT ON reaper_sessions
WHEN typeof(NEW.session_id) <> 'text'
BEGIN
    SELECT RAISE(ABORT, 'reaper_sessions_session_id_is_text: session_id must be TEXT, not a BLOB or a number');
END;
CREATE TRIGGER IF NOT EXISTS reaper_sessions_attempts_not_negative
BEFORE INSERT ON reaper_sessions
WHEN typeof(NEW.attempts) <> 'integer' OR NEW.attempts NOT BETWEEN 0 AND 2147483647
BEGIN
    SELECT RAISE(ABORT, 'reaper_sessions_attempts_not_negative: attempts must be an INTEGER from 0 to 2147483647');
END;
CREATE TRIGGER IF NOT EXISTS reaper_sessions_final_state_has_finished_at
BEFORE INSERT ON reaper_sessions
WHEN NEW.state NOT IN ('pending', 'retrying') AND NEW.finished_at IS NULL
BEGIN
    SELECT RAISE(ABORT, 'reaper_sessions_final_state_has_finished_at: a row inserted as final (deleted, gone, failed, invalid) needs finished_at');
END;

-- 4. New writes: dates and epoch seconds become epoch milliseconds, right after they are written.
CREATE TRIGGER IF NOT EXISTS reaper_sessions_times_to_epoch_ms_on_insert
AFTER INSERT ON reaper_sessions
WHEN typeof(NEW.delete_after) = 'text' OR typeof(NEW.last_activity_at) = 'text' OR typeof(NEW.finished_at) = 'text'
  OR NEW.delete_after BETWEEN 1 AND 99999999999 OR NEW.last_activity_at BETWEEN 1 AND 99999999999
BEGIN
    UPDATE reaper_sessions SET
        delete_after = CASE
            WHEN typeof(delete_after) = 'text' AND unixepoch(delete_after) IS NOT NULL
                THEN CAST(round(unixepoch(delete_after, 'subsec') * 1000) AS INTEGER)
            WHEN delete_after BETWEEN 1 AND 99999999999 THEN delete_after * 1000
            ELSE delete_after END,
        last_activity_at = CASE
            WHEN typeof(last_activity_at) = 'text' AND unixepoch(last_activity_at) IS NOT NULL
                THEN CAST(round(unixepoch(last_activity_at, 'subsec') * 1000) AS INTEGER)
            WHEN last_activity_at BETWEEN 1 AND 99999999999 THEN last_activity_at * 1000
            ELSE last_activity_at END,
        finished_at = CASE
            WHEN typeof(finished_at) = 'text' AND unixepoch(finished_at) IS NOT NULL
                THEN CAST(round(unixepoch(finished_at, 'subsec') * 1000) AS INTEGER)
            ELSE finished_at END
     WHERE id = NEW.id;
END;
CREATE TRIGGER IF NOT EXISTS reaper_sessions_times_to_epoch_ms_on_update
AFTER UPDATE OF delete_after, last_activity_at, finished_at ON reaper_sessions
WHEN typeof(NEW.delete_after) = 'text' OR typeof(NEW.last_activity_at) = 'text' OR typeof(NEW.finished_at) = 'text'
  OR NEW.delete_after BETWEEN 1 AND 99999999999 OR NEW.last_activity_at BETWEEN 1 AND 99999999999
BEGIN
    UPDATE reaper_sessions SET
        delete_after = CASE
            WHEN typeof(delete_after) = 'text' AND unixepoch(delete_after) IS NOT NULL
                THEN CAST(round(unixepoch(delete_after, 'subsec') * 1000) AS INTEGER)
            WHEN delete_after BETWEEN 1 AND 99999999999 THEN delete_after * 1000
            ELSE delete_after END,
        last_activity_at = CASE
            WHEN typeof(last_activity_at) = 'text' AND unixepoch(last_activity_at) IS NOT NULL
                THEN CAST(round(unixepoch(last_activity_at, 'subsec') * 1000) AS INTEGER)
            WHEN last_activity_at BETWEEN 1 AND 99999999999 THEN last_activity_at * 1000
            ELSE last_activity_at END,
        finished_at = CASE
            WHEN typeof(finished_at) = 'text' AND unixepoch(finished_at) IS NOT NULL
                THEN CAST(round(unixepoch(finished_at, 'subsec') * 1000) AS INTEGER)
            ELSE finished_at END
     WHERE id = NEW.id;
END;

-- 5. The status view and `status` find the latest error through an index instead of reading
-- every row (1.2 s on a million finished rows before). Rows without an error never enter it.
CREATE INDEX IF NOT EXISTS reaper_sessions_last_error
    ON reaper_sessions (last_attempt_at) WHERE last_error IS NOT NULL;
CREATE TRIGGER IF NOT EXISTS reaper_sessions_final_state_has_finished_at_on_update
BEFORE UPDATE OF state ON reaper_sessions
WHEN NEW.state NOT IN ('pending', 'retrying') AND NEW.finished_at IS NULL
BEGIN
    SELECT RAISE(ABORT, 'reaper_sessions_final_state_has_finished_at: a row made final (deleted, gone, failed, invalid) needs finished_at');
END;
