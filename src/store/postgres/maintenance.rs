//! PostgreSQL: Rows in and out on an operator's behalf: enqueue, requeue, prune, and inspection.

use super::*;

impl PgStore {
    pub async fn enqueue(&self, ids: &[String], editor: Editor, now: DateTime<Utc>) -> anyhow::Result<u64> {
        let done = sqlx::query(
            "INSERT INTO reaper_sessions (session_id, delete_after, editor)
             SELECT id, $2, $3 FROM UNNEST($1::text[]) AS ids(id)
             ON CONFLICT (session_id) DO NOTHING",
        )
        .bind(ids)
        .bind(now)
        .bind(editor.label())
        .execute(&self.pool)
        .await
        .context("Failed to insert session ids")?;
        Ok(done.rows_affected())
    }

    pub async fn requeue(&self, which: Requeue<'_>, now: DateTime<Utc>) -> anyhow::Result<u64> {
        let done = match which {
            Requeue::AllFailed => sqlx::query(
                "UPDATE reaper_sessions
                    SET state = 'pending', attempts = 0, delete_after = $1, next_attempt_at = NULL, finished_at = NULL
                  WHERE state = 'failed'",
            )
            .bind(now)
            .execute(&self.pool)
            .await
            .context("Failed to requeue failed sessions")?,
            Requeue::Ids(ids) => sqlx::query(
                "UPDATE reaper_sessions
                    SET state = 'pending', attempts = 0, delete_after = $1, next_attempt_at = NULL, finished_at = NULL
                  WHERE session_id = ANY($2) AND state NOT IN ('pending', 'retrying')",
            )
            .bind(now)
            .bind(ids)
            .execute(&self.pool)
            .await
            .context("Failed to requeue sessions")?,
        };
        Ok(done.rows_affected())
    }
}
