-- The cluster's one request budget and its one pause, shared by every replica on this database.
--
-- The budget is a GCRA (generic cell rate algorithm) over the database's clock: `tat_us` is the
-- theoretical arrival time of the next request. A replica reserves the next few send times in one
-- short transaction (its rows wait for them), so the API never sees more than
-- `worker.rate_per_second` + `worker.burst` requests in any one-second window, however many
-- replicas run. The pause (a 429, a spent quota, a rejected key) lives in the same row: every
-- replica sees it at its next reservation and one probe, for the whole cluster, ends it.
--
-- Times are microseconds since the Unix epoch (the rest of this schema uses milliseconds; a
-- request interval at 300/s is 3,333 us). Written only by the daemon; `reaper_status` shows it.
CREATE TABLE IF NOT EXISTS reaper_budget (
    id                    INTEGER PRIMARY KEY CHECK (id = 1),
    -- Raised by every change: a replica writes only over the version it read.
    version               INTEGER NOT NULL DEFAULT 0,
    -- The budget as configured by the replica that reserved last.
    rate_per_second       INTEGER NOT NULL DEFAULT 0,
    burst                 INTEGER NOT NULL DEFAULT 0,
    tat_us                INTEGER NOT NULL DEFAULT 0,
    -- Send times handed out in the current wall-clock minute, and in the whole minute before it.
    minute_start_us       INTEGER NOT NULL DEFAULT 0,
    minute_reserved       INTEGER NOT NULL DEFAULT 0,
    last_minute_reserved  INTEGER NOT NULL DEFAULT 0,
    -- The pause in effect (paused = 1), or the last one (paused = 0).
    paused                INTEGER NOT NULL DEFAULT 0,
    pause_reason          TEXT,
    paused_since_us       INTEGER,
    paused_until_us       INTEGER,
    -- 1: the pause ends with one successful probe request; 0 (a 429): at paused_until_us.
    pause_probe           INTEGER NOT NULL DEFAULT 0,
    paused_by             TEXT,
    pause_http_status     INTEGER,
    pause_api_code        INTEGER,
    -- The replica sending the probe, and until when it may (a dead one's probe passes on).
    probe_owner           TEXT,
    probe_until_us        INTEGER
);
INSERT INTO reaper_budget (id) VALUES (1) ON CONFLICT DO NOTHING;

-- The view gains the pause and the budget (SQLite cannot add columns to a view: it is rebuilt).
DROP VIEW IF EXISTS reaper_status;
CREATE VIEW reaper_status AS
SELECT
    (SELECT COUNT(*) FROM reaper_sessions WHERE state = 'pending')  AS pending,
    (SELECT COUNT(*) FROM reaper_sessions WHERE state = 'retrying') AS retrying,
    (SELECT COUNT(*) FROM reaper_sessions WHERE state = 'deleted')  AS deleted,
    (SELECT COUNT(*) FROM reaper_sessions WHERE state = 'gone')     AS gone,
    (SELECT COUNT(*) FROM reaper_sessions WHERE state = 'failed')   AS failed,
    (SELECT COUNT(*) FROM reaper_sessions WHERE state = 'invalid')  AS invalid,
    (SELECT COUNT(*) FROM reaper_sessions
      WHERE state IN ('pending', 'retrying')
        AND lease_expires_at > CAST(strftime('%s', 'now') AS INTEGER) * 1000) AS in_flight,
    (SELECT (CAST(strftime('%s', 'now') AS INTEGER) * 1000
             - MIN(CASE state WHEN 'retrying' THEN next_attempt_at ELSE delete_after END)) / 1000.0
       FROM reaper_sessions
      WHERE state IN ('pending', 'retrying')
        AND CASE state WHEN 'retrying' THEN next_attempt_at ELSE delete_after END
            <= CAST(strftime('%s', 'now') AS INTEGER) * 1000) AS oldest_due_age_seconds,
    (SELECT datetime(MAX(finished_at) / 1000, 'unixepoch') FROM reaper_sessions
      WHERE state IN ('deleted', 'gone')) AS last_success,
    (SELECT last_error FROM reaper_sessions
      WHERE last_error IS NOT NULL AND last_attempt_at IS NOT NULL
      ORDER BY last_attempt_at DESC LIMIT 1) AS last_error,
    (SELECT datetime(MAX(last_attempt_at) / 1000, 'unixepoch') FROM reaper_sessions
      WHERE last_error IS NOT NULL) AS last_error_at,
    (SELECT COUNT(*) FROM reaper_instances) AS instances,
    (SELECT CASE WHEN paused = 1 THEN pause_reason END FROM reaper_budget WHERE id = 1) AS pause_reason,
    (SELECT CASE WHEN paused = 1 THEN datetime(paused_since_us / 1000000, 'unixepoch') END
       FROM reaper_budget WHERE id = 1) AS paused_since,
    (SELECT CASE WHEN paused = 1 THEN datetime(paused_until_us / 1000000, 'unixepoch') END
       FROM reaper_budget WHERE id = 1) AS paused_until,
    (SELECT rate_per_second FROM reaper_budget WHERE id = 1) AS budget_per_second,
    (SELECT burst FROM reaper_budget WHERE id = 1) AS budget_burst,
    (SELECT last_minute_reserved FROM reaper_budget WHERE id = 1) AS budget_used_last_minute;
