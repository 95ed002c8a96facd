//! SQLite: The replicas table: heartbeats, the live count, clean exits.

use super::*;

impl SqliteStore {
    pub async fn beat(
        &self,
        beat: &InstanceBeat,
        now: DateTime<Utc>,
        live_within: Duration,
        forget_after: Duration,
    ) -> anyhow::Result<(i64, crate::store::budget::BudgetRow)> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .context("Failed to begin a heartbeat")?;
        let counts = &beat.counts;
        sqlx::query(
            "INSERT INTO reaper_instances (instance_id, host, pid, version, started_at, heartbeat_at, in_flight,
                                           rate_limit, deleted, gone, failed, invalid, retry_scheduled, released)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
             ON CONFLICT (instance_id) DO UPDATE SET
                 heartbeat_at = excluded.heartbeat_at, in_flight = excluded.in_flight,
                 rate_limit = excluded.rate_limit, deleted = excluded.deleted, gone = excluded.gone,
                 failed = excluded.failed, invalid = excluded.invalid,
                 retry_scheduled = excluded.retry_scheduled, released = excluded.released",
        )
        .bind(&beat.instance_id)
        .bind(&beat.host)
        .bind(beat.pid)
        .bind(&beat.version)
        .bind(ms(beat.started_at))
        .bind(ms(now))
        .bind(beat.in_flight)
        .bind(beat.rate_limit)
        .bind(counts.deleted)
        .bind(counts.gone)
        .bind(counts.failed)
        .bind(counts.invalid)
        .bind(counts.retry_scheduled)
        .bind(counts.released)
        .execute(&mut *tx)
        .await
        .context("Failed to record the heartbeat")?;
        sqlx::query("DELETE FROM reaper_instances WHERE heartbeat_at < ?1")
            .bind(ms(now - chrono_duration(forget_after)))
            .execute(&mut *tx)
            .await
            .context("Failed to forget dead instances")?;
        let live: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM reaper_instances WHERE heartbeat_at >= ?1")
            .bind(ms(now - chrono_duration(live_within)))
            .fetch_one(&mut *tx)
            .await
            .context("Failed to count live instances")?;
        // The cluster's pause, for a replica with nothing to send (it reserves no send times).
        let budget = sqlx::query(super::budget::READ)
            .fetch_optional(&mut *tx)
            .await
            .context("Failed to read the budget row")?;
        let budget = budget.map_or_else(|| Ok(Default::default()), |row| rows::budget_row(&row))?;
        tx.commit().await.context("Failed to commit the heartbeat")?;
        Ok((live, budget))
    }

    pub async fn remove_instance(&self, instance_id: &str) -> anyhow::Result<()> {
        sqlx::query("DELETE FROM reaper_instances WHERE instance_id = ?1")
            .bind(instance_id)
            .execute(&self.writer)
            .await
            .context("Failed to remove the instance")?;
        Ok(())
    }

    pub async fn instances(&self) -> anyhow::Result<Vec<InstanceRow>> {
        let found = sqlx::query("SELECT * FROM reaper_instances ORDER BY started_at")
            .fetch_all(&self.pool)
            .await
            .context("Failed to list instances")?;
        found.iter().map(rows::instance_row).collect()
    }
}
