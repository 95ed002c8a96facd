//! PostgreSQL: Claims and lease renewal: which rows a replica takes, and how it keeps them.

use super::*;

impl PgStore {
    /// Locks: the claimed rows (`FOR UPDATE SKIP LOCKED`), skipping rows other replicas hold.
    pub async fn claim(&self, r: &ClaimRequest<'_>) -> anyhow::Result<Vec<ClaimedRow>> {
        let rows = sqlx::query(
            "WITH picked AS (
                 -- Open rows in id order: free ones, and someone else's expired leases (a crashed
                 -- replica). Rows in flight are stepped over; rows another claim or outcome holds
                 -- locked are skipped.
                 SELECT id, lease_owner AS previous_owner FROM reaper_sessions
                  WHERE state IN ('pending', 'retrying')
                    AND (lease_owner IS NULL OR (lease_expires_at <= $3 AND lease_owner <> $1))
                    AND ((state = 'pending' AND (delete_after <= $4 OR last_activity_at <= $5))
                      OR (state = 'retrying' AND next_attempt_at <= $4))
                  ORDER BY id
                  LIMIT $6
                  FOR UPDATE SKIP LOCKED)
             UPDATE reaper_sessions r
                SET lease_owner = $1, lease_expires_at = $2, taken_over_from = picked.previous_owner
               FROM picked
              WHERE r.id = picked.id
          RETURNING r.id, r.session_id, r.attempts, picked.previous_owner",
        )
        .bind(r.instance_id)
        .bind(r.now + chrono_duration(r.lease))
        .bind(r.now)
        .bind(r.due_by)
        .bind(r.due_by - chrono_duration(r.stale_after))
        .bind(i64::from(r.limit))
        .fetch_all(&self.claims)
        .await
        .context("Failed to claim due sessions")?;
        let mut claimed: Vec<ClaimedRow> = rows
            .into_iter()
            .map(|row| ClaimedRow {
                id: row.get("id"),
                session_id: row.get("session_id"),
                attempts: row.get("attempts"),
                taken_over: row.get::<Option<String>, _>("previous_owner").is_some(),
            })
            .collect();
        claimed.sort_by_key(|row| row.id);
        Ok(claimed)
    }

    /// Locks: the listed rows still leased to `owner`, in id order (as outcomes lock them).
    pub async fn renew_leases(&self, owner: &str, ids: &[i64], until: DateTime<Utc>) -> anyhow::Result<u64> {
        let done = sqlx::query(
            "UPDATE reaper_sessions SET lease_expires_at = $1
              WHERE id = ANY($2) AND lease_owner = $3 AND state IN ('pending', 'retrying')",
        )
        .bind(until)
        .bind(ids)
        .bind(owner)
        .execute(&self.pool)
        .await
        .context("Failed to renew leases")?;
        Ok(done.rows_affected())
    }
}
