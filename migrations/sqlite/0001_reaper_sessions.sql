-- The table the application writes to: one row per Office Integrator session id.
-- Times are Unix epoch milliseconds (INTEGER), so comparisons never depend on text formats.
CREATE TABLE IF NOT EXISTS reaper_sessions (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id         TEXT    NOT NULL UNIQUE,
    -- pending | retrying | deleted | gone | failed | invalid
    state              TEXT    NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'retrying', 'deleted', 'gone', 'failed', 'invalid')),
    -- Delete from this moment on. Defaults to the insert time ("delete now"); NULL leaves the
    -- decision to last_activity_at + worker.stale_after.
    delete_after       INTEGER DEFAULT (CAST(strftime('%s', 'now') AS INTEGER) * 1000),
    last_activity_at   INTEGER,
    attempts           INTEGER NOT NULL DEFAULT 0,
    next_attempt_at    INTEGER,
    lease_owner        TEXT,
    lease_expires_at   INTEGER,
    taken_over_from    TEXT,
    last_http_status   INTEGER,
    last_api_code      INTEGER,
    last_error         TEXT,
    first_attempt_at   INTEGER,
    last_attempt_at    INTEGER,
    finished_at        INTEGER,
    created_at         INTEGER NOT NULL DEFAULT (CAST(strftime('%s', 'now') AS INTEGER) * 1000)
);

-- The claim scans open rows in id order; finished rows never enter this index.
CREATE INDEX IF NOT EXISTS reaper_sessions_open
    ON reaper_sessions (id) WHERE state IN ('pending', 'retrying');

-- Leases held by one owner: renewal and release.
CREATE INDEX IF NOT EXISTS reaper_sessions_lease
    ON reaper_sessions (lease_owner) WHERE lease_owner IS NOT NULL;

-- Status ("last success") and prune of finished rows.
CREATE INDEX IF NOT EXISTS reaper_sessions_finished
    ON reaper_sessions (finished_at) WHERE finished_at IS NOT NULL;
