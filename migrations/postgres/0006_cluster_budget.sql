-- The cluster's one request budget and its one pause, shared by every replica on this database.
--
-- The budget is a GCRA (generic cell rate algorithm) over the database's clock: `tat_us` is the
-- theoretical arrival time of the next request. A replica reads the row, decides, and writes it
-- back only if `version` is still what it read (else it reads again), so the API never sees more
-- than `worker.rate_per_second` + `worker.burst` requests in any one-second window, however many
-- replicas run. The pause (a 429, a spent quota, a rejected key) lives in the same row: every
-- replica sees it at its next reservation and one probe, for the whole cluster, ends it.
--
-- Times are microseconds since the Unix epoch (a request interval at 300/s is 3,333 us).
-- Written only by the daemon; `reaper_status` shows it.
CREATE TABLE IF NOT EXISTS reaper_budget (
    id                    INTEGER PRIMARY KEY CHECK (id = 1),
    -- Raised by every change: a replica writes only over the version it read (no lock held
    -- between the read and the write, so a reservation is two statements).
    version               BIGINT  NOT NULL DEFAULT 0,
    rate_per_second       BIGINT  NOT NULL DEFAULT 0,
    burst                 BIGINT  NOT NULL DEFAULT 0,
    tat_us                BIGINT  NOT NULL DEFAULT 0,
    minute_start_us       BIGINT  NOT NULL DEFAULT 0,
    minute_reserved       BIGINT  NOT NULL DEFAULT 0,
    last_minute_reserved  BIGINT  NOT NULL DEFAULT 0,
    paused                BOOLEAN NOT NULL DEFAULT false,
    pause_reason          TEXT,
    paused_since_us       BIGINT,
    paused_until_us       BIGINT,
    pause_probe           BOOLEAN NOT NULL DEFAULT false,
    paused_by             TEXT,
    pause_http_status     BIGINT,
    pause_api_code        BIGINT,
    probe_owner           TEXT,
    probe_until_us        BIGINT
);
INSERT INTO reaper_budget (id) VALUES (1) ON CONFLICT DO NOTHING;

-- New columns at the end, so CREATE OR REPLACE keeps the view's other columns as they were.
CREATE OR REPLACE VIEW reaper_status AS
SELECT
    (SELECT COUNT(*) FROM reaper_sessions WHERE state = 'pending')  AS pending,
    (SELECT COUNT(*) FROM reaper_sessions WHERE state = 'retrying') AS retrying,
    (SELECT COUNT(*) FROM reaper_sessions WHERE state = 'deleted')  AS deleted,
    (SELECT COUNT(*) FROM reaper_sessions WHERE state = 'gone')     AS gone,
    (SELECT COUNT(*) FROM reaper_sessions WHERE state = 'failed')   AS failed,
    (SELECT COUNT(*) FROM reaper_sessions WHERE state = 'invalid')  AS invalid,
    (SELECT COUNT(*) FROM reaper_sessions
      WHERE state IN ('pending', 'retrying') AND lease_expires_at > now()) AS in_flight,
    (SELECT EXTRACT(EPOCH FROM now() - MIN(CASE WHEN isfinite(due) THEN due ELSE created_at END))
       FROM (SELECT created_at, CASE state WHEN 'retrying' THEN next_attempt_at ELSE delete_after END AS due
               FROM reaper_sessions WHERE state IN ('pending', 'retrying')) open_rows
      WHERE due <= now()) AS oldest_due_age_seconds,
    (SELECT MAX(finished_at) FROM reaper_sessions WHERE state IN ('deleted', 'gone')) AS last_success,
    (SELECT last_error FROM reaper_sessions
      WHERE last_error IS NOT NULL AND last_attempt_at IS NOT NULL
      ORDER BY last_attempt_at DESC LIMIT 1) AS last_error,
    (SELECT MAX(last_attempt_at) FROM reaper_sessions WHERE last_error IS NOT NULL) AS last_error_at,
    (SELECT COUNT(*) FROM reaper_instances) AS instances,
    (SELECT CASE WHEN paused THEN pause_reason END FROM reaper_budget WHERE id = 1) AS pause_reason,
    (SELECT CASE WHEN paused THEN to_timestamp(paused_since_us / 1e6) END FROM reaper_budget WHERE id = 1)
        AS paused_since,
    (SELECT CASE WHEN paused THEN to_timestamp(paused_until_us / 1e6) END FROM reaper_budget WHERE id = 1)
        AS paused_until,
    (SELECT rate_per_second FROM reaper_budget WHERE id = 1) AS budget_per_second,
    (SELECT burst FROM reaper_budget WHERE id = 1) AS budget_burst,
    (SELECT last_minute_reserved FROM reaper_budget WHERE id = 1) AS budget_used_last_minute;
