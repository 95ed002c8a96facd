//! SQLite: Claims and lease renewal: which rows a replica takes, and how it keeps them.

use super::*;

impl SqliteStore {
    /// Locks: the whole database for writing (`BEGIN IMMEDIATE`), for one short statement.
    pub async fn claim(&self, r: &ClaimRequest<'_>) -> anyhow::Result<Vec<ClaimedRow>> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .context("Failed to begin a claim")?;
        // The picked rows come back as one JSON array rather than as one result row each: sqlx
        // hands every row across threads on its own, which cost more than picking it.
        let picked: String = sqlx::query_scalar(
            // A bare `LIMIT ?` makes SQLite re-prepare the statement whenever the bound limit
            // changes (it plans small constant limits specially); the CAST keeps one plan.
            "SELECT json_group_array(json_array(id, CAST(session_id AS TEXT), attempts, lease_owner IS NOT NULL))
               FROM reaper_sessions
              WHERE id IN (
                    -- Free rows, through the index of rows nobody holds.
                    SELECT id FROM (
                        SELECT id FROM reaper_sessions
                         WHERE state IN ('pending', 'retrying') AND lease_owner IS NULL
                           AND ((state = 'pending' AND (delete_after <= ?3 OR last_activity_at <= ?4))
                             OR (state = 'retrying' AND next_attempt_at <= ?3))
                         ORDER BY id
                         LIMIT CAST(?5 AS INTEGER))
                    UNION ALL
                    -- Someone else's expired leases (a crashed replica), by a range of expiry.
                    SELECT id FROM (
                        SELECT id FROM reaper_sessions
                         WHERE lease_owner IS NOT NULL AND lease_expires_at <= ?2 AND lease_owner <> ?1
                           AND state IN ('pending', 'retrying')
                           AND ((state = 'pending' AND (delete_after <= ?3 OR last_activity_at <= ?4))
                             OR (state = 'retrying' AND next_attempt_at <= ?3))
                         LIMIT CAST(?5 AS INTEGER))
                    ORDER BY id
                    LIMIT CAST(?5 AS INTEGER))",
        )
        .bind(r.instance_id)
        .bind(ms(r.now))
        .bind(ms(r.due_by))
        .bind(ms(r.due_by - chrono_duration(r.stale_after)))
        .bind(i64::from(r.limit))
        .fetch_one(&mut *tx)
        .await
        .context("Failed to pick due sessions")?;
        let picked: Vec<(i64, String, i32, i64)> =
            serde_json::from_str(&picked).context("Failed to read the picked sessions")?;
        if !picked.is_empty() {
            let ids = serde_json::to_string(&picked.iter().map(|row| row.0).collect::<Vec<_>>())?;
            // Still inside the same write transaction: nobody else can have taken them since.
            sqlx::query(
                "UPDATE reaper_sessions
                    SET lease_owner = ?1, lease_expires_at = ?2, taken_over_from = lease_owner
                  WHERE id IN (SELECT value FROM json_each(?3))",
            )
            .bind(r.instance_id)
            .bind(ms(r.now + chrono_duration(r.lease)))
            .bind(ids)
            .execute(&mut *tx)
            .await
            .context("Failed to lease due sessions")?;
        }
        tx.commit().await.context("Failed to commit a claim")?;
        let mut claimed: Vec<ClaimedRow> = picked
            .into_iter()
            .map(|(id, session_id, attempts, leased)| ClaimedRow {
                id,
                session_id,
                attempts,
                taken_over: leased != 0,
            })
            .collect();
        claimed.sort_by_key(|row| row.id);
        Ok(claimed)
    }

    /// Locks: the database for writing; renews the listed rows still leased to `owner`.
    pub async fn renew_leases(&self, owner: &str, ids: &[i64], until: DateTime<Utc>) -> anyhow::Result<u64> {
        let done = sqlx::query(
            "UPDATE reaper_sessions SET lease_expires_at = ?1
              WHERE id IN (SELECT value FROM json_each(?3))
                AND lease_owner = ?2 AND state IN ('pending', 'retrying')",
        )
        .bind(ms(until))
        .bind(owner)
        .bind(serde_json::to_string(ids)?)
        .execute(&self.writer)
        .await
        .context("Failed to renew leases")?;
        Ok(done.rows_affected())
    }
}
