-- Replicas that know each other: each daemon keeps its row fresh and removes it on a clean exit.
CREATE TABLE IF NOT EXISTS reaper_instances (
    instance_id      TEXT        PRIMARY KEY,
    host             TEXT        NOT NULL,
    pid              INTEGER     NOT NULL,
    version          TEXT        NOT NULL,
    started_at       TIMESTAMPTZ NOT NULL,
    heartbeat_at     TIMESTAMPTZ NOT NULL,
    in_flight        INTEGER     NOT NULL DEFAULT 0,
    rate_limit       INTEGER     NOT NULL DEFAULT 0,
    deleted          BIGINT      NOT NULL DEFAULT 0,
    gone             BIGINT      NOT NULL DEFAULT 0,
    failed           BIGINT      NOT NULL DEFAULT 0,
    invalid          BIGINT      NOT NULL DEFAULT 0,
    retry_scheduled  BIGINT      NOT NULL DEFAULT 0,
    released         BIGINT      NOT NULL DEFAULT 0
);

-- "Is it working?" in one query: SELECT * FROM reaper_status;
-- oldest_due_age_seconds counts rows due by delete_after or a retry time; rows waiting on
-- last_activity_at depend on worker.stale_after, which only the daemon knows.
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
    (SELECT EXTRACT(EPOCH FROM now() - MIN(CASE state WHEN 'retrying' THEN next_attempt_at ELSE delete_after END))
       FROM reaper_sessions
      WHERE state IN ('pending', 'retrying')
        AND CASE state WHEN 'retrying' THEN next_attempt_at ELSE delete_after END <= now()) AS oldest_due_age_seconds,
    (SELECT MAX(finished_at) FROM reaper_sessions WHERE state IN ('deleted', 'gone')) AS last_success,
    (SELECT last_error FROM reaper_sessions
      WHERE last_error IS NOT NULL AND last_attempt_at IS NOT NULL
      ORDER BY last_attempt_at DESC LIMIT 1) AS last_error,
    (SELECT MAX(last_attempt_at) FROM reaper_sessions WHERE last_error IS NOT NULL) AS last_error_at,
    (SELECT COUNT(*) FROM reaper_instances) AS instances;
