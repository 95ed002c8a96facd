//! SQLite: the cluster's budget row. Each change is one `BEGIN IMMEDIATE` transaction on the
//! writer (SQLite's write lock serialises the processes sharing the file); the decision is
//! `store::budget`'s.

use super::*;
use crate::store::budget::BudgetRow;

/// The row and the database's clock in microseconds (SQLite's `now` has millisecond steps).
pub(super) const READ: &str = "SELECT *, CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER) AS now_us
                    FROM reaper_budget WHERE id = 1";

impl SqliteStore {
    /// Locks the budget row, lets `decide` change it, writes it back; returns what `decide` said.
    pub async fn with_budget<T>(&self, decide: impl Fn(&mut BudgetRow) -> T) -> anyhow::Result<T> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .context("Failed to begin a budget reservation")?;
        let found = sqlx::query(READ)
            .fetch_optional(&mut *tx)
            .await
            .context("Failed to read the budget row")?;
        let found = match found {
            Some(found) => found,
            // Someone deleted it: the budget starts afresh (an empty row holds no debt).
            None => {
                sqlx::query("INSERT INTO reaper_budget (id) VALUES (1) ON CONFLICT DO NOTHING")
                    .execute(&mut *tx)
                    .await
                    .context("Failed to recreate the budget row")?;
                sqlx::query(READ)
                    .fetch_one(&mut *tx)
                    .await
                    .context("Failed to read the budget row")?
            }
        };
        let mut row = rows::budget_row(&found)?;
        row.read_at = Some(std::time::Instant::now());
        let decided = decide(&mut row);
        rows::bind_budget(
            sqlx::query(
                "UPDATE reaper_budget SET rate_per_second = ?1, burst = ?2, tat_us = ?3, minute_start_us = ?4,
                    minute_reserved = ?5, last_minute_reserved = ?6, paused = ?7, pause_reason = ?8,
                    paused_since_us = ?9, paused_until_us = ?10, pause_probe = ?11, paused_by = ?12,
                    pause_http_status = ?13, pause_api_code = ?14, probe_owner = ?15, probe_until_us = ?16,
                    version = version + 1
              WHERE id = 1",
            ),
            &row,
        )
        .execute(&mut *tx)
        .await
        .context("Failed to write the budget row")?;
        tx.commit().await.context("Failed to commit the budget row")?;
        Ok(decided)
    }

    /// Ends `instance_id`'s probe: on success the cluster's pause is over and the budget resumes
    /// from now, paced (no burst). Returns whether this replica still held the probe (a newer
    /// pause took it otherwise).
    pub async fn end_probe(&self, instance_id: &str, succeeded: bool, tolerance_us: i64) -> anyhow::Result<bool> {
        let done = sqlx::query(
            "UPDATE reaper_budget SET paused = CASE WHEN ?2 THEN 0 ELSE paused END,
                    tat_us = CASE WHEN ?2
                             THEN MIN(tat_us, CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER) + ?3)
                             ELSE tat_us END,
                    probe_owner = NULL, probe_until_us = NULL, version = version + 1
              WHERE id = 1 AND probe_owner = ?1",
        )
        .bind(instance_id)
        .bind(succeeded)
        .bind(tolerance_us)
        .execute(&self.writer)
        .await
        .context("Failed to end the probe")?;
        Ok(done.rows_affected() > 0)
    }
}
