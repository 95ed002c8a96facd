-- Claims look only at rows nobody holds. With every open row in one index, a claim stepped over
-- each row in flight or queued (hundreds at full speed) before reaching a free one; a leased row
-- now leaves this index when it is claimed and an outcome never touches it.
DROP INDEX IF EXISTS reaper_sessions_open;
CREATE INDEX IF NOT EXISTS reaper_sessions_free
    ON reaper_sessions (id) WHERE state IN ('pending', 'retrying') AND lease_owner IS NULL;

-- Leased rows by expiry: a claim finds a crashed replica's rows by range instead of reading
-- every lease; renewal and release find an owner's rows in the same (small) index.
DROP INDEX IF EXISTS reaper_sessions_lease;
CREATE INDEX IF NOT EXISTS reaper_sessions_leased
    ON reaper_sessions (lease_expires_at, lease_owner) WHERE lease_owner IS NOT NULL;
