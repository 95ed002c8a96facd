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

    pub async fn prune(&self, cutoff: DateTime<Utc>, limit: u32) -> anyhow::Result<u64> {
        let done = sqlx::query(
            "DELETE FROM reaper_sessions WHERE id IN (
                 SELECT id FROM reaper_sessions
                  WHERE finished_at < $1 AND state NOT IN ('pending', 'retrying') LIMIT $2)",
        )
        .bind(cutoff)
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await
        .context("Failed to prune finished sessions")?;
        Ok(done.rows_affected())
    }

    pub async fn rows(&self) -> anyhow::Result<Vec<SessionRow>> {
        let found = sqlx::query("SELECT * FROM reaper_sessions ORDER BY id")
            .fetch_all(&self.pool)
            .await
            .context("Failed to list sessions")?;
        found.iter().map(rows::session_row).collect()
    }

    pub async fn touch(&self, session_id: &str, at: DateTime<Utc>) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO reaper_sessions (session_id, delete_after, last_activity_at) VALUES ($1, NULL, $2)
             ON CONFLICT (session_id) DO UPDATE SET last_activity_at = excluded.last_activity_at",
        )
        .bind(session_id)
        .bind(at)
        .execute(&self.pool)
        .await
        .context("Failed to record session activity")?;
        Ok(())
    }
}
