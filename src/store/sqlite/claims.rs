//! SQLite: Claims and lease renewal: which rows a replica takes, and how it keeps them.

use super::*;

impl SqliteStore {
    /// Locks: the whole database for writing (`BEGIN IMMEDIATE`), for one short transaction.
    /// A row whose columns the daemon cannot use (a BLOB or non-UTF-8 `session_id`, `attempts`
    /// that is no integer in range) is marked `invalid` in the same transaction instead of
    /// failing the claim: one odd row never stops the others.
    pub(super) async fn claim_rows(&self, r: &ClaimRequest<'_>) -> anyhow::Result<Claimed> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .context("Failed to begin a claim")?;
        // The picked rows come back as one JSON array rather than as one result row each: sqlx
        // hands every row across threads on its own, which cost more than picking it. The session
        // id travels as hex, so that no stored value can make the array itself unreadable.
        let picked: String = sqlx::query_scalar(
            // A bare `LIMIT ?` makes SQLite re-prepare the statement whenever the bound limit
            // changes (it plans small constant limits specially); the CAST keeps one plan.
            "SELECT json_group_array(json_array(
                        id, hex(session_id), typeof(session_id),
                        CASE WHEN typeof(attempts) = 'integer' AND attempts BETWEEN 0 AND 2147483647
                             THEN attempts END,
                        substr(quote(attempts), 1, 40), lease_owner IS NOT NULL,
                        CASE WHEN typeof(editor) = 'text' THEN editor END, substr(quote(editor), 1, 40)))
               FROM reaper_sessions
              WHERE id IN (
                    -- Free rows, through the index of rows nobody holds. INDEXED BY: with the
                    -- state indexes of migration 0007 the planner chose (state, finished_at)
                    -- instead, a walk of every open row and a sort per claim (5,000 deletions/s
                    -- where this plan gives 20,000 on 100,000 rows).
                    SELECT id FROM (
                        SELECT id FROM reaper_sessions INDEXED BY reaper_sessions_free
                         WHERE state IN ('pending', 'retrying') AND lease_owner IS NULL
                           AND (delete_after <= ?3 OR last_activity_at <= ?4)
                           AND (state = 'pending' OR next_attempt_at <= ?3)
                         ORDER BY id
                         LIMIT CAST(?5 AS INTEGER))
                    UNION ALL
                    -- Someone else's expired leases (a crashed replica), by a range of expiry.
                    SELECT id FROM (
                        SELECT id FROM reaper_sessions INDEXED BY reaper_sessions_leased
                         WHERE lease_owner IS NOT NULL AND lease_expires_at <= ?2 AND lease_owner <> ?1
                           AND state IN ('pending', 'retrying')
                           AND (delete_after <= ?3 OR last_activity_at <= ?4)
                           AND (state = 'pending' OR next_attempt_at <= ?3)
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
        type Picked = (i64, String, String, Option<i32>, String, i64, Option<String>, String);
        let picked: Vec<Picked> = serde_json::from_str(&picked).context("Failed to read the picked sessions")?;
        let claimed_at = tokio::time::Instant::now();
        let mut claimed = Claimed::default();
        for (id, hex, kind, attempts, attempts_quoted, leased, editor, editor_quoted) in picked {
            let session_id = (kind == "text")
                .then(|| from_hex(&hex))
                .flatten()
                .and_then(|bytes| String::from_utf8(bytes).ok());
            // The CHECK of migration 0006 refuses other editors; a row written around it (or a
            // value in a text encoding the daemon cannot read) is set aside like the rest.
            let editor = editor.as_deref().and_then(Editor::parse);
            match (session_id, attempts, editor) {
                (Some(session_id), Some(attempts), Some(editor)) => claimed.rows.push(ClaimedRow {
                    id: RowId(id),
                    session_id,
                    editor,
                    attempts,
                    taken_over: leased != 0,
                    claimed_at,
                }),
                (None, _, _) => claimed.set_aside.push(SetAside {
                    id: RowId(id),
                    problem: if kind == "text" {
                        "session_id is not valid UTF-8 text".to_owned()
                    } else {
                        format!("session_id is {kind}, not text")
                    },
                }),
                (_, None, _) => claimed.set_aside.push(SetAside {
                    id: RowId(id),
                    problem: format!("attempts = {attempts_quoted} is not an integer from 0 to 2147483647"),
                }),
                (_, _, None) => claimed.set_aside.push(SetAside {
                    id: RowId(id),
                    problem: format!("editor = {editor_quoted} is not one of writer, sheet, show, pdf"),
                }),
            }
        }
        if !claimed.rows.is_empty() {
            let ids = serde_json::to_string(&claimed.rows.iter().map(|row| row.id).collect::<Vec<_>>())?;
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
        for aside in &claimed.set_aside {
            sqlx::query(
                "UPDATE reaper_sessions
                    SET state = 'invalid', last_error = ?2, finished_at = ?3, attempts = 0,
                        lease_owner = NULL, lease_expires_at = NULL
                  WHERE id = ?1",
            )
            .bind(aside.id)
            .bind(format!("set aside: {}", aside.problem))
            .bind(ms(r.now))
            .execute(&mut *tx)
            .await
            .context("Failed to set aside an unreadable row")?;
        }
        tx.commit().await.context("Failed to commit a claim")?;
        claimed.rows.sort_by_key(|row| row.id);
        Ok(claimed)
    }

    /// Locks: the database for writing; renews the listed rows still leased to `owner`.
    pub async fn renew_leases(&self, owner: &str, ids: &[RowId], until: DateTime<Utc>) -> anyhow::Result<Renewal> {
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
        // SQLite has no row locks: the write lock covers the whole statement.
        Ok(Renewal {
            renewed: done.rows_affected(),
            locked: 0,
        })
    }
}
