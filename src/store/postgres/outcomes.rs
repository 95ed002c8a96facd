//! PostgreSQL: Outcomes written back, a batch per transaction, each only while the writer holds the lease.

use super::*;

impl PgStore {
    /// Locks: the rows written, each only while `owner` still holds its lease (a takeover
    /// never gets overwritten by the replica it rescued from).
    pub async fn write_outcomes(&self, owner: &str, outcomes: &[OutcomeWrite]) -> anyhow::Result<u64> {
        let (mut finished, released) = types::split_outcomes(outcomes);
        // Rows locked in id order, as claims lock them, so two writers never deadlock.
        finished.sort_unstable_by_key(|f| f.id);
        let mut tx = self.pool.begin().await.context("Failed to begin an outcome batch")?;
        let mut written = 0;
        for chunk in finished.chunks(OUTCOME_CHUNK) {
            let done = sqlx::query(
                "UPDATE reaper_sessions r
                    SET state = u.state, attempts = LEAST(r.attempts, 2147483646) + u.charge,
                        last_http_status = u.http_status, last_api_code = u.api_code,
                        last_error = u.error,
                        first_attempt_at = COALESCE(r.first_attempt_at, u.attempted_at),
                        last_attempt_at = COALESCE(u.attempted_at, r.last_attempt_at),
                        finished_at = u.finished_at, next_attempt_at = u.next_attempt_at,
                        lease_owner = NULL, lease_expires_at = NULL
                   FROM UNNEST($1::bigint[], $2::text[], $3::int[], $4::int[], $5::bigint[],
                               $6::text[], $7::timestamptz[], $8::timestamptz[], $9::timestamptz[])
                        AS u(id, state, charge, http_status, api_code, error, attempted_at,
                             finished_at, next_attempt_at)
                  WHERE r.id = u.id AND r.lease_owner = $10 AND r.state IN ('pending', 'retrying')",
            )
            .bind(chunk.iter().map(|f| f.id).collect::<Vec<_>>())
            .bind(chunk.iter().map(|f| f.state.as_str()).collect::<Vec<_>>())
            .bind(chunk.iter().map(|f| i32::from(f.charge)).collect::<Vec<_>>())
            .bind(chunk.iter().map(|f| f.http_status).collect::<Vec<_>>())
            .bind(chunk.iter().map(|f| f.api_code).collect::<Vec<_>>())
            .bind(chunk.iter().map(|f| f.error).collect::<Vec<_>>())
            .bind(chunk.iter().map(|f| f.attempted_at).collect::<Vec<_>>())
            .bind(chunk.iter().map(|f| f.finished_at).collect::<Vec<_>>())
            .bind(chunk.iter().map(|f| f.next_attempt_at).collect::<Vec<_>>())
            .bind(owner)
            .execute(&mut *tx)
            .await
            .context("Failed to write outcomes")?;
            written += done.rows_affected();
        }
        if !released.is_empty() {
            let done = sqlx::query(
                "UPDATE reaper_sessions SET lease_owner = NULL, lease_expires_at = NULL
                  WHERE id = ANY($1) AND lease_owner = $2",
            )
            .bind(&released)
            .bind(owner)
            .execute(&mut *tx)
            .await
            .context("Failed to release leases")?;
            written += done.rows_affected();
        }
        if written < outcomes.len() as u64 && !finished.is_empty() {
            // Some rows were not ours to write: taken over, or made final by the application
            // while we held them. The latter must not keep our lease forever.
            sqlx::query(
                "UPDATE reaper_sessions SET lease_owner = NULL, lease_expires_at = NULL
                  WHERE id = ANY($1) AND lease_owner = $2 AND state NOT IN ('pending', 'retrying')",
            )
            .bind(finished.iter().map(|f| f.id).collect::<Vec<_>>())
            .bind(owner)
            .execute(&mut *tx)
            .await
            .context("Failed to release rows made final meanwhile")?;
        }
        tx.commit().await.context("Failed to commit an outcome batch")?;
        Ok(written)
    }
}
