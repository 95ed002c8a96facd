-- The table the application writes to: one row per Office Integrator session id.
CREATE TABLE IF NOT EXISTS reaper_sessions (
    id                 BIGSERIAL PRIMARY KEY,
    session_id         TEXT        NOT NULL UNIQUE,
    -- pending | retrying | deleted | gone | failed | invalid
    state              TEXT        NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'retrying', 'deleted', 'gone', 'failed', 'invalid')),
    -- Delete from this moment on. Defaults to the insert time ("delete now"); NULL leaves the
    -- decision to last_activity_at + worker.stale_after.
    delete_after       TIMESTAMPTZ DEFAULT now(),
    last_activity_at   TIMESTAMPTZ,
    attempts           INTEGER     NOT NULL DEFAULT 0,
    next_attempt_at    TIMESTAMPTZ,
    lease_owner        TEXT,
    lease_expires_at   TIMESTAMPTZ,
    taken_over_from    TEXT,
    last_http_status   INTEGER,
    last_api_code      BIGINT,
    last_error         TEXT,
    first_attempt_at   TIMESTAMPTZ,
    last_attempt_at    TIMESTAMPTZ,
    finished_at        TIMESTAMPTZ,
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now()
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
