//! `[source]`: stale sessions read straight from the application's own table. Every
//! `source.interval` the daemon runs `source.query` in a read-only transaction on `source.url`
//! (SQLite: the file opened read-only; PostgreSQL: `BEGIN READ ONLY` with a statement timeout of
//! one interval) and inserts the session ids it returns into `reaper_sessions` as due now, in
//! batches, with `ON CONFLICT (session_id) DO NOTHING`: a session already known (waiting, or
//! final) is never inserted twice, so a deleted session is never sent again.
//!
//! The query returns a column `session_id` and optionally `editor` (NULL: writer); both are read
//! through `CAST(... AS TEXT)`, so integer or uuid ids work too. A failing query is logged once
//! when it starts failing and once when it works again, and retried every interval; it never
//! stops the deletions already queued.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use futures_util::TryStreamExt;
use sqlx::Connection;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::{Config, database_label};
use crate::editor::Editor;
use crate::store::Store;

/// Ids inserted per statement (and transaction) into `reaper_sessions`.
const BATCH: usize = 1000;
/// Longest a SQLite reader waits for the application's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The configured source query, ready to run.
pub struct SourceQuery {
    url: String,
    query: String,
    interval: Duration,
    store: Store,
    clock: Clock,
}

/// What one pass found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    /// Rows the query returned.
    pub found: u64,
    /// Ids new to `reaper_sessions`.
    pub inserted: u64,
    /// Rows left out: `session_id` NULL, or an `editor` that is not one of the four.
    pub skipped: u64,
}

/// A read-only connection to the application's database.
enum Conn {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl SourceQuery {
    /// `None` when `source.query` is not set (the source is off).
    pub fn from_config(config: &Config, store: Store, clock: Clock) -> Option<Self> {
        Some(Self {
            url: config.source_url().to_owned(),
            query: config.source.query.clone()?,
            interval: config.source.interval,
            store,
            clock,
        })
    }

    /// Runs the query every interval until `stop`; the first pass runs at once.
    pub async fn run(self, stop: CancellationToken) {
        let mut failing = false;
        loop {
            let started = std::time::Instant::now();
            let pass = tokio::select! {
                pass = self.pass() => pass,
                _ = stop.cancelled() => return,
            };
            let took_ms = started.elapsed().as_millis() as u64;
            match pass {
                Ok(pass) => {
                    if failing {
                        tracing::info!(
                            found = pass.found,
                            inserted = pass.inserted,
                            "the source query works again"
                        );
                        failing = false;
                    }
                    if pass.skipped > 0 {
                        tracing::warn!(
                            skipped = pass.skipped,
                            "source query: rows left out (session_id NULL, or editor not one of writer, sheet, show, pdf)"
                        );
                    }
                    if pass.inserted > 0 {
                        tracing::info!(
                            found = pass.found,
                            inserted = pass.inserted,
                            took_ms,
                            "source query: new stale sessions queued"
                        );
                    } else {
                        tracing::debug!(found = pass.found, took_ms, "source query: nothing new");
                    }
                }
                Err(e) if !failing => {
                    failing = true;
                    tracing::error!(
                        database = %database_label(&self.url),
                        error = %crate::commands::describe(&e),
                        "the source query failed; retried every source.interval (logged again only once it works); \
                         deletions already queued go on"
                    );
                }
                Err(e) => tracing::debug!(error = %crate::commands::describe(&e), "the source query failed again"),
            }
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = stop.cancelled() => return,
            }
        }
    }

    /// One run of the query: reads in a read-only transaction, inserts new ids in batches.
    pub async fn pass(&self) -> anyhow::Result<Pass> {
        let mut pass = Pass::default();
        let mut batch: Vec<(Option<String>, Option<String>)> = Vec::with_capacity(BATCH);
        // The same steps on either backend; only the connection type and the BEGIN differ.
        macro_rules! read {
            ($conn:ident, $begin:expr, $setup:expr) => {{
                // Whether the query has an `editor` column: a `LIMIT 0` probe, outside the
                // transaction (on PostgreSQL a failed statement would abort it).
                let has_editor = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT editor FROM ({}) AS reaper_source LIMIT 0",
                    self.query
                )))
                .fetch_all(&mut $conn)
                .await
                .is_ok();
                let sql = read_sql(&self.query, has_editor);
                let mut tx = $conn
                    .begin_with($begin)
                    .await
                    .context("Failed to begin the source query")?;
                if let Some(setup) = $setup {
                    sqlx::query(sqlx::AssertSqlSafe(setup))
                        .execute(&mut *tx)
                        .await
                        .context("Failed to set the source query's timeout")?;
                }
                {
                    let mut rows =
                        sqlx::query_as::<_, (Option<String>, Option<String>)>(sqlx::AssertSqlSafe(sql)).fetch(&mut *tx);
                    while let Some(row) = rows.try_next().await.context("The source query failed")? {
                        batch.push(row);
                        if batch.len() >= BATCH {
                            self.insert(&mut batch, &mut pass).await?;
                        }
                    }
                }
                tx.rollback().await.ok();
                $conn.close().await.ok();
            }};
        }
        match open(&self.url).await? {
            Conn::Sqlite(mut conn) => read!(conn, "BEGIN", None::<String>),
            Conn::Postgres(mut conn) => {
                // A query slower than its interval would only pile up behind itself.
                let timeout = format!("SET LOCAL statement_timeout = {}", self.interval.as_millis().max(1000));
                read!(conn, "BEGIN READ ONLY", Some(timeout))
            }
        }
        self.insert(&mut batch, &mut pass).await?;
        Ok(pass)
    }

    /// Inserts one batch of (session_id, editor), due now, grouped by editor.
    async fn insert(&self, batch: &mut Vec<(Option<String>, Option<String>)>, pass: &mut Pass) -> anyhow::Result<()> {
        let mut by_editor: BTreeMap<Editor, Vec<String>> = BTreeMap::new();
        for (id, editor) in batch.drain(..) {
            pass.found += 1;
            let editor = match editor.as_deref() {
                None => Some(Editor::Writer),
                Some(label) => Editor::parse(label.trim()),
            };
            match (id, editor) {
                (Some(id), Some(editor)) => by_editor.entry(editor).or_default().push(id),
                _ => pass.skipped += 1,
            }
        }
        let now = self.clock.now();
        for (editor, ids) in by_editor {
            pass.inserted += self
                .store
                .enqueue_editor(&ids, editor, now)
                .await
                .context("Failed to queue the source query's sessions")?;
        }
        Ok(())
    }
}

/// The query as run: its columns read as text, whatever their type; without an `editor`
/// column the editor is NULL (writer).
fn read_sql(query: &str, has_editor: bool) -> String {
    let editor = if has_editor { "CAST(editor AS TEXT)" } else { "NULL" };
    format!("SELECT CAST(session_id AS TEXT), {editor} FROM ({query}) AS reaper_source")
}

/// Opens the application's database read-only: SQLite with `SQLITE_OPEN_READONLY` (it works on a
/// file the daemon cannot write, and never changes it); PostgreSQL with read-only transactions.
async fn open(url: &str) -> anyhow::Result<Conn> {
    if url.starts_with("sqlite:") {
        let options = sqlx::sqlite::SqliteConnectOptions::from_str(url)
            .context("Failed to parse the SQLite URL")?
            .read_only(true)
            .create_if_missing(false)
            .busy_timeout(BUSY_TIMEOUT)
            .pragma("query_only", "ON");
        let conn = sqlx::SqliteConnection::connect_with(&options)
            .await
            .context("Failed to open the source database read-only")?;
        Ok(Conn::Sqlite(conn))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let options = sqlx::postgres::PgConnectOptions::from_str(url)
            .context("Failed to parse the PostgreSQL URL")?
            .options([("default_transaction_read_only", "on")]);
        let conn = tokio::time::timeout(Duration::from_secs(10), sqlx::PgConnection::connect_with(&options))
            .await
            .context("Failed to connect to the source database: timed out")?
            .context("Failed to connect to the source database")?;
        Ok(Conn::Postgres(conn))
    } else {
        anyhow::bail!("source.url must start with sqlite:, postgres:// or postgresql://")
    }
}

/// Checks the query without reading a row: runs it wrapped as a subquery with `LIMIT 0`, so a
/// syntax error, a missing table or a missing `session_id` column is found at start.
pub async fn check(url: &str, query: &str) -> anyhow::Result<()> {
    let probe = format!("SELECT CAST(session_id AS TEXT) FROM ({query}) AS reaper_source LIMIT 0");
    match open(url).await? {
        Conn::Sqlite(mut conn) => {
            sqlx::query(sqlx::AssertSqlSafe(probe)).fetch_all(&mut conn).await?;
            conn.close().await.ok();
        }
        Conn::Postgres(mut conn) => {
            sqlx::query(sqlx::AssertSqlSafe(probe)).fetch_all(&mut conn).await?;
            conn.close().await.ok();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_is_wrapped_as_a_subquery() {
        assert_eq!(
            read_sql("SELECT id AS session_id FROM app_sessions", false),
            "SELECT CAST(session_id AS TEXT), NULL FROM (SELECT id AS session_id FROM app_sessions) AS reaper_source"
        );
    }
}
