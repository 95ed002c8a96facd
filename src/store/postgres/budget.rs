//! PostgreSQL: the cluster's budget row. A change is two statements and no transaction: read the
//! row with the clock, let `store::budget` decide, write it back only over the version read. When
//! another replica wrote in between, the write changes nothing and the change starts again from a
//! fresh read, so every change that goes through was decided on the row as it stood, in the
//! order of the clock.

use super::*;
use crate::store::budget::BudgetRow;

/// Changes retried this many times in a row before the reservation fails (and is retried later).
const MOST_RACES: u32 = 50;

/// The row's columns for `rows::budget_row` (booleans as integers), and the clock.
macro_rules! columns {
    () => {
        "version, rate_per_second, burst, tat_us, minute_start_us, minute_reserved, last_minute_reserved,
                       paused::int AS paused, pause_reason, paused_since_us, paused_until_us,
                       pause_probe::int AS pause_probe, paused_by, pause_http_status, pause_api_code::bigint,
                       probe_owner, probe_until_us,
                       (EXTRACT(EPOCH FROM clock_timestamp()) * 1000000)::bigint AS now_us"
    };
}
pub(super) const READ: &str = concat!("SELECT ", columns!(), " FROM reaper_budget WHERE id = 1");

impl PgStore {
    /// Reads the budget row, lets `decide` change it, writes it back if nobody wrote since;
    /// returns what `decide` said about the row that was written.
    pub async fn with_budget<T>(&self, decide: impl Fn(&mut BudgetRow) -> T) -> anyhow::Result<T> {
        for _ in 0..MOST_RACES {
            let found = sqlx::query(READ)
                .fetch_optional(&self.pool)
                .await
                .context("Failed to read the budget row")?;
            let Some(found) = found else {
                // Someone deleted it: the budget starts afresh (an empty row holds no debt).
                sqlx::query("INSERT INTO reaper_budget (id) VALUES (1) ON CONFLICT DO NOTHING")
                    .execute(&self.pool)
                    .await
                    .context("Failed to recreate the budget row")?;
                continue;
            };
            let mut row = rows::budget_row(&found)?;
            row.read_at = Some(std::time::Instant::now());
            row.read_at = Some(std::time::Instant::now());
            let read = row.version;
            let decided = decide(&mut row);
            let written = rows::bind_budget(
                sqlx::query(
                    "UPDATE reaper_budget SET rate_per_second = $1, burst = $2, tat_us = $3, minute_start_us = $4,
                        minute_reserved = $5, last_minute_reserved = $6, paused = $7, pause_reason = $8,
                        paused_since_us = $9, paused_until_us = $10, pause_probe = $11, paused_by = $12,
                        pause_http_status = $13, pause_api_code = $14, probe_owner = $15, probe_until_us = $16,
                        version = version + 1
                  WHERE id = 1 AND version = $17",
                ),
                &row,
            )
            .bind(read)
            .execute(&self.pool)
            .await
            .context("Failed to write the budget row")?;
            if written.rows_affected() == 1 {
                return Ok(decided);
            }
        }
        anyhow::bail!("the budget row changed under {MOST_RACES} reads in a row")
    }

    /// Ends `instance_id`'s probe: on success the cluster's pause is over and the budget resumes
    /// from now, paced (no burst). Returns whether this replica still held the probe (a newer
    /// pause took it otherwise).
    pub async fn end_probe(&self, instance_id: &str, succeeded: bool, tolerance_us: i64) -> anyhow::Result<bool> {
        let done = sqlx::query(
            "UPDATE reaper_budget SET paused = paused AND NOT $2,
                    tat_us = CASE WHEN $2
                             THEN LEAST(tat_us, (EXTRACT(EPOCH FROM clock_timestamp()) * 1000000)::bigint + $3)
                             ELSE tat_us END,
                    probe_owner = NULL, probe_until_us = NULL, version = version + 1
              WHERE id = 1 AND probe_owner = $1",
        )
        .bind(instance_id)
        .bind(succeeded)
        .bind(tolerance_us)
        .execute(&self.pool)
        .await
        .context("Failed to end the probe")?;
        Ok(done.rows_affected() > 0)
    }
}
