//! SQLite: Rows in and out on an operator's behalf: enqueue, requeue, prune, and inspection.

use super::*;

impl SqliteStore {
    pub async fn enqueue(&self, ids: &[String], editor: Editor, now: DateTime<Utc>) -> anyhow::Result<u64> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .context("Failed to begin an enqueue")?;
        let mut inserted = 0;
        for chunk in ids.chunks(ENQUEUE_CHUNK) {
            let mut insert = QueryBuilder::new("INSERT INTO reaper_sessions (session_id, delete_after, editor) ");
            insert.push_values(chunk, |mut row, id| {
                row.push_bind(id.as_str()).push_bind(ms(now)).push_bind(editor.label());
            });
            insert.push(" ON CONFLICT (session_id) DO NOTHING");
            let done = insert
                .build()
                .execute(&mut *tx)
                .await
                .context("Failed to insert session ids")?;
            inserted += done.rows_affected();
        }
        tx.commit().await.context("Failed to commit the enqueue")?;
        Ok(inserted)
    }

    pub async fn requeue(&self, which: Requeue<'_>, now: DateTime<Utc>) -> anyhow::Result<u64> {
        const SET: &str = "UPDATE reaper_sessions
            SET state = 'pending', attempts = 0, delete_after = ?1, next_attempt_at = NULL, finished_at = NULL";
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .context("Failed to begin a requeue")?;
        let mut moved = 0;
        match which {
            Requeue::AllFailed => {
                let done = sqlx::query(sqlx::AssertSqlSafe(format!("{SET} WHERE state = 'failed'")))
                    .bind(ms(now))
                    .execute(&mut *tx)
                    .await
                    .context("Failed to requeue failed sessions")?;
                moved += done.rows_affected();
            }
            Requeue::Ids(ids) => {
                for id in ids {
                    let done = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "{SET} WHERE session_id = ?2 AND state NOT IN ('pending', 'retrying')"
                    )))
                    .bind(ms(now))
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .context("Failed to requeue a session")?;
                    moved += done.rows_affected();
                }
            }
        }
        tx.commit().await.context("Failed to commit the requeue")?;
        Ok(moved)
    }

    pub async fn prune(&self, cutoff: DateTime<Utc>, limit: u32) -> anyhow::Result<u64> {
        let done = sqlx::query(
            "DELETE FROM reaper_sessions WHERE id IN (
                 SELECT id FROM reaper_sessions
                  WHERE finished_at < ?1 AND state NOT IN ('pending', 'retrying') LIMIT ?2)",
        )
        .bind(ms(cutoff))
        .bind(i64::from(limit))
        .execute(&self.writer)
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
            "INSERT INTO reaper_sessions (session_id, delete_after, last_activity_at) VALUES (?1, NULL, ?2)
             ON CONFLICT (session_id) DO UPDATE SET last_activity_at = excluded.last_activity_at",
        )
        .bind(session_id)
        .bind(ms(at))
        .execute(&self.writer)
        .await
        .context("Failed to record session activity")?;
        Ok(())
    }
}
