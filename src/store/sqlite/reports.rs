//! SQLite: Reads for `status`, the idle poll and the backlog gauges.

use super::*;

impl SqliteStore {
    pub async fn status(&self, now: DateTime<Utc>, stale_after: Duration) -> anyhow::Result<StatusReport> {
        let counts = sqlx::query("SELECT editor, state, COUNT(*) AS n FROM reaper_sessions GROUP BY editor, state")
            .fetch_all(&self.pool)
            .await
            .context("Failed to count sessions")?;
        let summary = sqlx::query(
            "SELECT
               (SELECT COUNT(*) FROM reaper_sessions
                 WHERE lease_owner IS NOT NULL AND lease_expires_at > ?1
                   AND state IN ('pending', 'retrying')) AS in_flight,
               -- The newest entry of the finished_at index, not a scan of every final row.
               (SELECT finished_at FROM reaper_sessions
                 WHERE finished_at IS NOT NULL AND state IN ('deleted', 'gone')
                 ORDER BY finished_at DESC LIMIT 1) AS last_success",
        )
        .bind(ms(now))
        .fetch_one(&self.pool)
        .await
        .context("Failed to read the status")?;
        // Through the partial index of rows with an error (migrations 0004/0005).
        let last_error = sqlx::query(
            "SELECT last_attempt_at, last_error FROM reaper_sessions
              WHERE last_error IS NOT NULL AND last_attempt_at IS NOT NULL
              ORDER BY last_attempt_at DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await
        .context("Failed to read the last error")?;
        let earliest_due = self.earliest_due(stale_after, false).await?;
        rows::status_report(&counts, &summary, last_error.as_ref(), earliest_due)
    }

    pub async fn next_due(&self, stale_after: Duration) -> anyhow::Result<Option<DateTime<Utc>>> {
        self.earliest_due(stale_after, true).await
    }

    /// Earliest due moment among open rows; with `leases`, a leased row counts as due when its
    /// lease runs out (a crashed replica's rows).
    async fn earliest_due(&self, stale_after: Duration, leases: bool) -> anyhow::Result<Option<DateTime<Utc>>> {
        let stale_ms = i64::try_from(stale_after.as_millis()).unwrap_or(i64::MAX / 2);
        // CAST: a value the guards would refuse (REAL, text, a blob: written around them) still
        // reads as an integer (saturating), and the claim then sets its row aside.
        let due: Option<i64> = sqlx::query_scalar(
            "SELECT CAST(MIN(CASE
                          WHEN ?2 = 1 AND lease_owner IS NOT NULL THEN MAX(lease_expires_at, due)
                          ELSE due END) AS INTEGER)
               FROM (SELECT lease_owner, lease_expires_at,
                            -- A retrying row is due at its retry time only while it is still wanted.
                            CASE state
                              WHEN 'retrying' THEN MAX(next_attempt_at, MIN(IFNULL(delete_after, 9000000000000000000),
                                                   IFNULL(last_activity_at + ?1, 9000000000000000000)))
                              ELSE MIN(IFNULL(delete_after, 9000000000000000000),
                                       IFNULL(last_activity_at + ?1, 9000000000000000000)) END AS due
                       FROM (SELECT * FROM reaper_sessions
                              WHERE state IN ('pending', 'retrying') AND lease_owner IS NULL
                             UNION ALL
                             SELECT * FROM reaper_sessions
                              WHERE lease_owner IS NOT NULL AND state IN ('pending', 'retrying')))",
        )
        .bind(stale_ms)
        .bind(i32::from(leases))
        .fetch_one(&self.pool)
        .await
        .context("Failed to find the next due session")?;
        Ok(due.filter(|d| *d < 9_000_000_000_000_000_000).map(from_ms))
    }

    pub async fn backlog(&self, stale_after: Duration) -> anyhow::Result<(i64, Option<DateTime<Utc>>)> {
        // Open rows are free or leased; each kind has its own partial index.
        let open: i64 = sqlx::query_scalar(
            "SELECT (SELECT COUNT(*) FROM reaper_sessions
                      WHERE state IN ('pending', 'retrying') AND lease_owner IS NULL)
                  + (SELECT COUNT(*) FROM reaper_sessions
                      WHERE lease_owner IS NOT NULL AND state IN ('pending', 'retrying'))",
        )
        .fetch_one(&self.pool)
        .await
        .context("Failed to count open sessions")?;
        Ok((open, self.earliest_due(stale_after, false).await?))
    }
}
