-- A claim, a renewal and a release now change only columns that no index reads, so PostgreSQL
-- writes the new row version on the same page without touching any index (a HOT update). Before,
-- each claim wrote a new entry into every index (the session id's unique index included, with its
-- uniqueness check) and each outcome did it again; index maintenance was the largest part (41 %)
-- of the server's work per deletion in the profile.
--
-- The price: a claim steps over the rows in flight (its own and other replicas') in the open
-- index, reading each from the heap to see its lease, and a crashed replica's rows are found by
-- that same walk. In flight is bounded per replica (worker.concurrency + 5 × worker.batch_size).
--
-- Like every migration this runs in one transaction: building reaper_sessions_open holds off the
-- application's writes to the table for as long as the build takes (seconds for millions of rows).
DROP INDEX IF EXISTS reaper_sessions_free;
DROP INDEX IF EXISTS reaper_sessions_leased;
CREATE INDEX IF NOT EXISTS reaper_sessions_open
    ON reaper_sessions (id) WHERE state IN ('pending', 'retrying');

-- A HOT update needs room on the row's page. A claim leases consecutive rows, often a whole page
-- at once, so half of each new page stays free for their next versions. Pages written before this
-- migration stay full until the table is rewritten (VACUUM FULL or pg_repack), and their claims
-- are ordinary updates as before.
ALTER TABLE reaper_sessions SET (fillfactor = 50);
