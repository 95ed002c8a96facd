//! SQLite backend: the embedded default. WAL mode and a busy timeout let the application and
//! the daemon write the same file; claims run in `BEGIN IMMEDIATE` so two daemons never lease
//! the same row. Times are Unix epoch milliseconds.

mod budget;
mod claimed_from;
mod claims;
mod maintenance;
mod operator;
mod outcomes;
mod page;
mod reports;
mod watch;

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Row, SqlitePool};

use self::claimed_from::ClaimedFrom;
use self::watch::{FileWatch, is_read_only, keep_wal_on_close};
use super::driver::{Bind, Driver, bound};
use super::rows::{self, ReadRow};
use super::types::{self as types};
use super::types::{Claimed, Renewal, RowId, SetAside};
use super::{ClaimRequest, ClaimedRow, OutcomeWrite, Requeue, chrono_duration};
use crate::editor::Editor;

/// How long a statement waits for another writer before failing with "database is locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections for reads (status, next due, housekeeping); writes have their own one.
const READ_CONNECTIONS: u32 = 2;
/// Outcomes per UPDATE statement (nine bound values each, far below SQLite's variable limit).
const OUTCOME_CHUNK: usize = 500;
/// Rows per multi-row INSERT (two bound values each, far below SQLite's variable limit).
const ENQUEUE_CHUNK: usize = 2_000;
/// `PRAGMA journal_size_limit`, bytes: far above the WAL of one autocheckpoint (1,000 pages, about
/// 4 MB), so it trims only a WAL that grew under a long reader; what it is here for is that a
/// connection closing last in persistent-WAL mode truncates its WAL to zero (see `watch`).
const JOURNAL_SIZE_LIMIT: &str = "67108864";
/// The daemon's migrations: run at start (`migrate`) and on a file that replaced the database.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

#[derive(Clone, Debug)]
pub struct SqliteStore {
    /// Reads: status, the next due time, listings.
    pool: SqlitePool,
    /// Every write goes through this one connection. SQLite lets one connection write at a time:
    /// a second one sleeps in SQLite's busy handler (1, 2, 5 ms and more), and in WAL mode a
    /// connection drops its whole page cache whenever another one has written. One writing
    /// connection queues this process's writers without sleeping and keeps its cache warm; other
    /// processes (the application) still meet the busy timeout.
    writer: SqlitePool,
    /// The database file under watch (`None` in memory and for the read-only stores).
    file: Option<WatchedFile>,
}

/// What the daemon's store knows about its database file.
#[derive(Clone, Debug)]
struct WatchedFile {
    watch: std::sync::Arc<FileWatch>,
    /// Which file each row in hand was claimed from, so that an outcome never lands on a row
    /// of a file that replaced it (the same row id names another session there).
    claimed: std::sync::Arc<ClaimedFrom>,
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// Epoch milliseconds as a time; out of chrono's range saturates to its ends.
fn from_ms(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or(if ms < 0 {
        DateTime::<Utc>::MIN_UTC
    } else {
        DateTime::<Utc>::MAX_UTC
    })
}

/// The bytes of a hex string as SQLite's `hex()` writes it; `None` if it is not hex.
fn from_hex(hex: &str) -> Option<Vec<u8>> {
    hex.len()
        .is_multiple_of(2)
        .then(|| {
            (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
                .collect()
        })
        .flatten()
}

/// A time SQLite's date functions wrote (`datetime('now')`, `CURRENT_TIMESTAMP`, ISO-8601 with
/// or without `T`, fractional seconds, `Z` or an offset). Migration 0004's triggers turn these
/// into epoch milliseconds on write; this reads any that predate it or slipped past.
fn from_sqlite_text(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    for format in [
        "%Y-%m-%d %H:%M:%S%.f%:z",
        "%Y-%m-%dT%H:%M:%S%.f%:z",
        "%Y-%m-%d %H:%M%:z",
    ] {
        if let Ok(t) = DateTime::parse_from_str(text, format) {
            return Some(t.with_timezone(&Utc));
        }
    }
    let text = text.strip_suffix('Z').unwrap_or(text);
    [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
    ]
    .iter()
    .find_map(|format| chrono::NaiveDateTime::parse_from_str(text, format).ok())
    .or_else(|| {
        chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .ok()?
            .and_hms_opt(0, 0, 0)
    })
    .map(|t| t.and_utc())
}

impl SqliteStore {
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .context("Failed to parse the SQLite URL")?
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL is durable against process crashes in WAL mode, which is what we face.
            .synchronous(SqliteSynchronous::Normal)
            .pragma("journal_size_limit", JOURNAL_SIZE_LIMIT)
            .busy_timeout(BUSY_TIMEOUT);
        // Created once, here; a pool reconnecting later must not create an empty file where the
        // database was removed (it fails, reported as an outage, until the file is back).
        {
            use sqlx::ConnectOptions;
            let first = options.clone().create_if_missing(true).connect().await;
            sqlx::Connection::close(first.context("Failed to open the SQLite database")?)
                .await
                .ok();
        }
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let watch = (!in_memory).then(|| std::sync::Arc::new(FileWatch::new(options.get_filename())));
        let pool = |connections, writes: bool| {
            let watch = watch.clone();
            SqlitePoolOptions::new()
                .max_connections(connections)
                // Every connection is opened up front and kept (cheap for SQLite): a connection
                // the pool opened by itself to replace an idle one could open a file that replaced
                // the database before any acquire had noticed the change (see `watch`).
                .min_connections(connections)
                .idle_timeout(None)
                .max_lifetime(None)
                // sqlx pings each connection it hands out; for SQLite that tests only that the
                // connection's own thread still answers (there is no server to lose), at the
                // price of a hand-over to that thread and back on every acquire.
                .test_before_acquire(false)
                .acquire_timeout(BUSY_TIMEOUT + Duration::from_secs(5))
                .after_connect({
                    let watch = watch.clone();
                    move |conn, _| {
                        let watch = watch.clone();
                        Box::pin(async move {
                            let Some(watch) = watch else { return Ok(()) };
                            keep_wal_on_close(conn).await?;
                            if !writes {
                                return Ok(());
                            }
                            // A writer opened while the files cannot be written comes up
                            // read-only: noted, so that it is replaced once they can. (SQLite
                            // decides that when it opens the connection, so it is asked once.)
                            watch.writable();
                            watch.writer_opened(is_read_only(conn).await?);
                            if watch.opened_after_change() {
                                migrate_replacement(conn, &watch).await?;
                            }
                            Ok(())
                        })
                    }
                })
                .before_acquire(move |conn, meta| {
                    let watch = watch.clone();
                    Box::pin(async move {
                        let Some(watch) = watch else { return Ok(true) };
                        if !watch.still_current(meta.age) {
                            // The old file is left complete: what its WAL holds goes into it,
                            // through this connection's descriptors (SQLite does not checkpoint
                            // a file that moved when the connection closes). PASSIVE: never
                            // waits for another process's readers.
                            let _ = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&mut *conn).await;
                            return Ok(false);
                        }
                        if !writes {
                            return Ok(true);
                        }
                        // A writer that came up read-only (a read-only spell of the file) is
                        // replaced rather than kept failing every write until it is recycled;
                        // while the spell lasts a new one would come up read-only too.
                        if !watch.writable() {
                            return Ok(true);
                        }
                        Ok(!watch.unwritable_since(meta.age) && !watch.writer_read_only())
                    })
                })
                .after_release(|conn, _| Box::pin(async move { Ok(crate::store::reusable(conn)) }))
        };
        // The writer first: it switches the file to WAL.
        let writer = pool(1, true)
            .connect_with(options.clone())
            .await
            .context("Failed to open the SQLite database")?;
        // An in-memory database exists once per connection: there, the writer serves reads too.
        let pool = if in_memory {
            writer.clone()
        } else {
            pool(READ_CONNECTIONS, false)
                .connect_with(options)
                .await
                .context("Failed to open the SQLite database")?
        };
        let file = watch.map(|watch| WatchedFile {
            watch,
            claimed: Default::default(),
        });
        Ok(Self { pool, writer, file })
    }

    pub async fn migrate(&self) -> anyhow::Result<()> {
        MIGRATOR
            .run(&self.writer)
            .await
            .context("Failed to migrate the SQLite database")
    }

    pub async fn close(&self) {
        self.pool.close().await;
        self.writer.close().await;
    }
}

impl Driver for SqliteStore {
    type Row = sqlx::sqlite::SqliteRow;
    const BUDGET_READ: &'static str = budget::READ;
    const FINISHED_PER_MINUTE: &'static str = page::FINISHED_PER_MINUTE;
    const RECENT_ERRORS: &'static str = page::RECENT_ERRORS;
    const STILL_DUE: &'static str = super::shared::still_due_among!("json_each($1) AS asked", "asked.value");

    async fn read_all(&self, sql: &'static str, binds: &[Bind<'_>]) -> sqlx::Result<Vec<Self::Row>> {
        bound::<sqlx::Sqlite, _>(sql, binds, ms).fetch_all(&self.pool).await
    }

    async fn read_optional(&self, sql: &'static str, binds: &[Bind<'_>]) -> sqlx::Result<Option<Self::Row>> {
        bound::<sqlx::Sqlite, _>(sql, binds, ms)
            .fetch_optional(&self.pool)
            .await
    }

    async fn write(&self, sql: &'static str, binds: &[Bind<'_>]) -> sqlx::Result<u64> {
        let done = bound::<sqlx::Sqlite, _>(sql, binds, ms).execute(&self.writer).await?;
        Ok(done.rows_affected())
    }

    async fn earliest_due(&self, stale_after: Duration, leases: bool) -> anyhow::Result<Option<DateTime<Utc>>> {
        self.earliest_open_due(stale_after, leases).await
    }
}

/// The writer's first connection to a file that replaced the database (or came back) migrates
/// it before anything else, as a start would: a new, empty file gets the tables, a restored
/// backup is brought up to date. Then the condition's end is logged.
async fn migrate_replacement(conn: &mut sqlx::SqliteConnection, watch: &FileWatch) -> Result<(), sqlx::Error> {
    let had_tables: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'reaper_sessions')")
            .fetch_one(&mut *conn)
            .await?;
    // `run` on a borrowed connection inside a pool hook meets sqlx's "Acquire is not general
    // enough"; `run_direct` is what `run` calls, made public by sqlx for this case.
    MIGRATOR.run_direct(None, &mut *conn, false).await?;
    watch.reopened(had_tables);
    Ok(())
}

impl ReadRow for sqlx::sqlite::SqliteRow {
    fn text(&self, column: &str) -> anyhow::Result<Option<String>> {
        rows::text_of(self, column)
    }

    fn int(&self, column: &str) -> anyhow::Result<Option<i64>> {
        self.try_get(column)
            .with_context(|| format!("Failed to read {column} as an integer"))
    }

    fn time(&self, column: &str) -> anyhow::Result<Option<DateTime<Utc>>> {
        use sqlx::{TypeInfo, ValueRef};
        let Some(raw) = rows::raw_of(self, column)? else {
            return Ok(None);
        };
        match raw.type_info().name() {
            "TEXT" => {
                let text: String = self
                    .try_get(column)
                    .with_context(|| format!("Failed to read {column} as text"))?;
                from_sqlite_text(&text)
                    .map(Some)
                    .with_context(|| format!("{column} = {:?} is no date", text.chars().take(40).collect::<String>()))
            }
            "INTEGER" => Ok(self.int(column)?.map(from_ms)),
            other => anyhow::bail!("{column} holds {other}, not epoch milliseconds or a date"),
        }
    }
}
