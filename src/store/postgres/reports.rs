//! PostgreSQL: Reads for `status`, the idle poll and the backlog gauges.

use super::*;

impl PgStore {
    pub async fn status(&self, now: DateTime<Utc>, stale_after: Duration) -> anyhow::Result<StatusReport> {
        let mut report = StatusReport::default();
        let counts = sqlx::query("SELECT state, COUNT(*) AS n FROM reaper_sessions GROUP BY state")
            .fetch_all(&self.pool)
            .await
            .context("Failed to count sessions")?;
        for row in counts {
            if let Some(state) = State::parse(row.get("state")) {
                report.counts.insert(state, row.get("n"));
            }
        }
        let row = sqlx::query(
            "SELECT
               (SELECT COUNT(*) FROM reaper_sessions
                 WHERE lease_owner IS NOT NULL AND lease_expires_at > $1
                   AND state IN ('pending', 'retrying')) AS in_flight,
               (SELECT MAX(finished_at) FROM reaper_sessions
                 WHERE state IN ('deleted', 'gone')) AS last_success",
        )
        .bind(now)
        .fetch_one(&self.pool)
        .await
        .context("Failed to read the status")?;
        report.in_flight = row.get("in_flight");
        report.last_success = row.get("last_success");
        report.earliest_due = self.earliest_due(stale_after, false).await?;
        let error = sqlx::query(
            "SELECT last_attempt_at, last_error FROM reaper_sessions
              WHERE last_error IS NOT NULL AND last_attempt_at IS NOT NULL
              ORDER BY last_attempt_at DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await
        .context("Failed to read the last error")?;
        report.last_error = error.map(|row| (row.get("last_attempt_at"), row.get("last_error")));
        Ok(report)
    }

    pub async fn next_due(&self, stale_after: Duration) -> anyhow::Result<Option<DateTime<Utc>>> {
        self.earliest_due(stale_after, true).await
    }

    /// Earliest due moment among open rows; with `leases`, a leased row counts as due when its
    /// lease runs out (a crashed replica's rows).
    async fn earliest_due(&self, stale_after: Duration, leases: bool) -> anyhow::Result<Option<DateTime<Utc>>> {
        sqlx::query_scalar(
            "SELECT MIN(CASE WHEN $2 AND lease_owner IS NOT NULL THEN GREATEST(lease_expires_at, due) ELSE due END)
               FROM (SELECT lease_owner, lease_expires_at,
                            CASE state
                              WHEN 'retrying' THEN next_attempt_at
                              ELSE LEAST(delete_after, last_activity_at + $1) END AS due
                       FROM reaper_sessions
                      WHERE state IN ('pending', 'retrying')) due_rows",
        )
        .bind(chrono_duration(stale_after))
        .bind(leases)
        .fetch_one(&self.pool)
        .await
        .context("Failed to find the next due session")
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
