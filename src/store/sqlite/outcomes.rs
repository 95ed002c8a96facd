//! SQLite: Outcomes written back, a batch per transaction, each only while the writer holds the lease.

use super::*;

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
            update.push_values(chunk, |mut row, f| {
                row.push_bind(f.id)
                    .push_bind(f.state.as_str())
                    .push_bind(i32::from(f.charge))
                    .push_bind(f.http_status)
                    .push_bind(f.api_code)
                    .push_bind(f.error)
                    .push_bind(f.attempted_at.map(ms))
                    .push_bind(f.finished_at.map(ms))
                    .push_bind(f.next_attempt_at.map(ms));
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
            // Not kept prepared: the text differs with the batch's size, and sqlx would keep up
            // to a hundred of these statements (thousands of parameters each) on the writer for
            // good, which was most of a long run's memory (16 MiB at a million-row backlog).
            let done = update
                .build()
                .persistent(false)
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
            for id in chunk {
                ids.push_bind(*id);
            }
            release.push(")");
            let done = release
                .build()
                .persistent(false)
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
