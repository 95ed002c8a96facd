//! SQLite: Outcomes written back, a batch per transaction, each only while the writer holds the lease.

use super::*;

/// A chunk's rows, padded with rows that match nothing (`NULL` ids) to the next power of two.
/// The statement's text follows its row count, and sqlx keeps each text prepared on the writer
/// for good (up to a hundred, thousands of parameters each: 16 MiB of a million-row run's
/// memory). Padded, at most ten texts exist, and each is prepared once.
fn padded<T>(chunk: &[T]) -> impl Iterator<Item = Option<&T>> {
    let padding = chunk.len().next_power_of_two() - chunk.len();
    chunk.iter().map(Some).chain(std::iter::repeat_n(None, padding))
}

impl SqliteStore {
    /// Locks: the database for writing, for one transaction per batch.
    pub(super) async fn write_outcome_rows(&self, owner: &str, outcomes: &[OutcomeWrite]) -> anyhow::Result<u64> {
        let (finished, released) = types::split_outcomes(outcomes);
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .context("Failed to begin an outcome batch")?;
        let mut written = 0;
        // One statement per chunk, not per row: the statement count is what costs here.
        for chunk in finished.chunks(OUTCOME_CHUNK) {
            let mut update = QueryBuilder::new(
                "WITH u (id, state, charge, http_status, api_code, error, attempted_at, finished_at, next_attempt_at) AS (",
            );
            update.push_values(padded(chunk), |mut row, f| {
                row.push_bind(f.map(|f| f.id))
                    .push_bind(f.map(|f| f.state.as_str()))
                    .push_bind(f.map(|f| i32::from(f.charge)))
                    .push_bind(f.and_then(|f| f.http_status))
                    .push_bind(f.and_then(|f| f.api_code))
                    .push_bind(f.and_then(|f| f.error))
                    .push_bind(f.and_then(|f| f.attempted_at).map(ms))
                    .push_bind(f.and_then(|f| f.finished_at).map(ms))
                    .push_bind(f.and_then(|f| f.next_attempt_at).map(ms));
            });
            update.push(
                ") UPDATE reaper_sessions
                    SET state = u.state, attempts = attempts + u.charge, last_http_status = u.http_status,
                        last_api_code = u.api_code, last_error = u.error,
                        first_attempt_at = COALESCE(first_attempt_at, u.attempted_at),
                        last_attempt_at = COALESCE(u.attempted_at, last_attempt_at),
                        finished_at = u.finished_at, next_attempt_at = u.next_attempt_at,
                        lease_owner = NULL, lease_expires_at = NULL
                   FROM u
                  WHERE reaper_sessions.id = u.id AND reaper_sessions.lease_owner = ",
            );
            update.push_bind(owner);
            update.push(" AND reaper_sessions.state IN ('pending', 'retrying')");
            let done = update
                .build()
                .execute(&mut *tx)
                .await
                .context("Failed to write outcomes")?;
            written += done.rows_affected();
        }
        for chunk in released.chunks(OUTCOME_CHUNK) {
            let mut release = QueryBuilder::new(
                "UPDATE reaper_sessions SET lease_owner = NULL, lease_expires_at = NULL WHERE lease_owner = ",
            );
            release.push_bind(owner).push(" AND id IN (");
            let mut ids = release.separated(", ");
            for id in padded(chunk) {
                ids.push_bind(id.copied());
            }
            release.push(")");
            let done = release
                .build()
                .execute(&mut *tx)
                .await
                .context("Failed to release leases")?;
            written += done.rows_affected();
        }
        if written < outcomes.len() as u64 && !finished.is_empty() {
            // Some rows were not ours to write: taken over, or made final by the application
            // while we held them. The latter must not keep our lease forever.
            let ids = serde_json::to_string(&finished.iter().map(|f| f.id).collect::<Vec<_>>())?;
            sqlx::query(
                "UPDATE reaper_sessions SET lease_owner = NULL, lease_expires_at = NULL
                  WHERE id IN (SELECT value FROM json_each(?1)) AND lease_owner = ?2
                    AND state NOT IN ('pending', 'retrying')",
            )
            .bind(ids)
            .bind(owner)
            .execute(&mut *tx)
            .await
            .context("Failed to release rows made final meanwhile")?;
        }
        tx.commit().await.context("Failed to commit an outcome batch")?;
        Ok(written)
    }
}
