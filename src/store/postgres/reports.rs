//! PostgreSQL: Reads for `status`, the idle poll and the backlog gauges.

use super::*;

impl PgStore {
    /// Earliest due moment among open rows; with `leases`, a leased row counts as due when its
    /// lease runs out (a crashed replica's rows). A retrying row is due at its retry time only
    /// while it is still wanted; a row due since `-infinity` counts from its insert, one due at
    /// `infinity` never.
    pub(super) async fn earliest_open_due(
        &self,
        stale_after: Duration,
        leases: bool,
    ) -> anyhow::Result<Option<DateTime<Utc>>> {
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
        Ok((open, self.earliest_open_due(stale_after, false).await?))
    }
}
