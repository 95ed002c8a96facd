//! PostgreSQL: Claims and lease renewal: which rows a replica takes, and how it keeps them.

use super::*;

impl PgStore {
    /// Locks: the claimed rows (`FOR UPDATE SKIP LOCKED`), skipping rows other replicas hold.
    pub async fn claim(&self, r: &ClaimRequest<'_>) -> anyhow::Result<Claimed> {
        let rows = sqlx::query(
            "WITH picked AS (
                 -- Open rows in id order: free ones, and someone else's expired leases (a crashed
                 -- replica). Rows in flight are stepped over; rows another claim or outcome holds
                 -- locked are skipped.
                 SELECT id, lease_owner AS previous_owner FROM reaper_sessions
                  WHERE state IN ('pending', 'retrying')
                    AND (lease_owner IS NULL OR (lease_expires_at <= $3 AND lease_owner <> $1))
                    AND (delete_after <= $4 OR last_activity_at <= $5)
                    AND (state = 'pending' OR next_attempt_at <= $4)
                  ORDER BY id
                  LIMIT $6
                  FOR UPDATE SKIP LOCKED)
             UPDATE reaper_sessions r
                SET lease_owner = $1, lease_expires_at = $2, taken_over_from = picked.previous_owner
               FROM picked
              WHERE r.id = picked.id
          RETURNING r.id, r.session_id, r.editor, r.attempts, picked.previous_owner",
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
        // Every column read here is typed by the schema (TEXT, INTEGER) and the constraints of
        // migrations 0005 and 0007, so no row can fail to decode; infinite times are never read.
        // An editor this build does not know (only if the CHECK was changed by hand) is set aside.
        let claimed_at = tokio::time::Instant::now();
        let mut claimed = Claimed::default();
        for row in &rows {
            let id = row.required_int("id")?;
            let editor = row.required_text("editor")?;
            let Some(known) = Editor::parse(&editor) else {
                let shown: String = editor.chars().take(40).collect();
                claimed.set_aside.push(SetAside {
                    id: RowId(id),
                    problem: format!("editor = {shown:?} is not one of writer, sheet, show, pdf"),
                });
                continue;
            };
            claimed.rows.push(ClaimedRow {
                id: RowId(id),
                session_id: row.required_text("session_id")?,
                editor: known,
                attempts: i32::try_from(row.required_int("attempts")?).unwrap_or(i32::MAX),
                taken_over: row.text("previous_owner")?.is_some(),
                claimed_at,
            });
        }
        for aside in &claimed.set_aside {
            sqlx::query(
                "UPDATE reaper_sessions
                    SET state = 'invalid', last_error = $2, finished_at = $3, attempts = 0,
                        lease_owner = NULL, lease_expires_at = NULL
                  WHERE id = $1 AND lease_owner = $4",
            )
            .bind(aside.id)
            .bind(format!("set aside: {}", aside.problem))
            .bind(r.now)
            .bind(r.instance_id)
            .execute(&self.claims)
            .await
            .context("Failed to set aside an unreadable row")?;
        }
        claimed.rows.sort_by_key(|row| row.id);
        Ok(claimed)
    }

    /// Locks: the listed rows still leased to `owner`, in id order (as outcomes lock them).
    /// Rows the application holds locked are skipped (`SKIP LOCKED`) rather than waited on, so
    /// one locked row cannot stall the renewal of all the others; they are counted as `locked`.
    pub async fn renew_leases(&self, owner: &str, ids: &[RowId], until: DateTime<Utc>) -> anyhow::Result<Renewal> {
        let row = sqlx::query(
            "WITH mine AS (
                 SELECT id FROM reaper_sessions
                  WHERE id = ANY($2) AND lease_owner = $3 AND state IN ('pending', 'retrying')),
             free AS (
                 SELECT id FROM reaper_sessions WHERE id IN (SELECT id FROM mine)
                  ORDER BY id FOR UPDATE SKIP LOCKED),
             renewed AS (
                 UPDATE reaper_sessions r SET lease_expires_at = $1 FROM free WHERE r.id = free.id RETURNING r.id)
             SELECT (SELECT COUNT(*) FROM renewed) AS renewed, (SELECT COUNT(*) FROM mine) AS mine",
        )
        .bind(until)
        .bind(ids)
        .bind(owner)
        .fetch_one(&self.pool)
        .await
        .context("Failed to renew leases")?;
        let (renewed, mine) = (row.required_int("renewed")?, row.required_int("mine")?);
        Ok(Renewal {
            renewed: renewed as u64,
            locked: (mine - renewed).max(0) as u64,
        })
    }
}
