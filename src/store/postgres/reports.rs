//! PostgreSQL: Reads for `status`, the idle poll and the backlog gauges.

use super::*;

impl PgStore {
    pub async fn status(&self, now: DateTime<Utc>, stale_after: Duration) -> anyhow::Result<StatusReport> {
        let counts = sqlx::query("SELECT editor, state, COUNT(*) AS n FROM reaper_sessions GROUP BY editor, state")
            .fetch_all(&self.pool)
            .await
            .context("Failed to count sessions")?;
        let summary = sqlx::query(
            "SELECT
               (SELECT COUNT(*) FROM reaper_sessions
                 WHERE lease_owner IS NOT NULL AND lease_expires_at > $1
                   AND state IN ('pending', 'retrying')) AS in_flight,
               -- The newest entry of the finished_at index, not a scan of every final row.
               (SELECT finished_at FROM reaper_sessions
                 WHERE finished_at IS NOT NULL AND state IN ('deleted', 'gone')
                 ORDER BY finished_at DESC LIMIT 1) AS last_success",
        )
        .bind(now)
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
    /// lease runs out (a crashed replica's rows). A retrying row is due at its retry time only
    /// while it is still wanted; a row due since `-infinity` counts from its insert, one due at
    /// `infinity` never.
    async fn earliest_due(&self, stale_after: Duration, leases: bool) -> anyhow::Result<Option<DateTime<Utc>>> {
        let row = sqlx::query(
            "SELECT MIN(CASE WHEN $2 AND lease_owner IS NOT NULL THEN GREATEST(lease_expires_at, due) ELSE due END) AS due
               FROM (SELECT lease_owner, lease_expires_at,
                            NULLIF(CASE WHEN due = '-infinity' THEN created_at ELSE due END, 'infinity') AS due
                       FROM (SELECT lease_owner, lease_expires_at, created_at,
                                    CASE WHEN state = 'pending' THEN wanted
                                         WHEN wanted IS NOT NULL THEN GREATEST(next_attempt_at, wanted) END AS due
                               FROM (SELECT lease_owner, lease_expires_at, created_at, state, next_attempt_at,
                                            LEAST(delete_after, last_activity_at + $1) AS wanted
                                       FROM reaper_sessions
                                      WHERE state IN ('pending', 'retrying')) open_rows) wanted_rows) due_rows",
        )
        .bind(chrono_duration(stale_after))
        .bind(leases)
        .fetch_one(&self.pool)
        .await
        .context("Failed to find the next due session")?;
        row.time("due")
    }

    pub async fn backlog(&self, stale_after: Duration) -> anyhow::Result<(i64, Option<DateTime<Utc>>)> {
        let open: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM reaper_sessions WHERE state IN ('pending', 'retrying')")
                .fetch_one(&self.pool)
                .await
                .context("Failed to count open sessions")?;
        Ok((open, self.earliest_due(stale_after, false).await?))
    }
}
