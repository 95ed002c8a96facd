//! SQLite: Reads for `status`, the idle poll and the backlog gauges.

use super::*;

impl SqliteStore {
    /// Earliest due moment among open rows; with `leases`, a leased row counts as due when its
    /// lease runs out (a crashed replica's rows).
    pub(super) async fn earliest_open_due(
        &self,
        stale_after: Duration,
        leases: bool,
    ) -> anyhow::Result<Option<DateTime<Utc>>> {
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
        Ok((open, self.earliest_open_due(stale_after, false).await?))
    }
}
