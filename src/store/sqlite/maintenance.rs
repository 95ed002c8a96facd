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
}
