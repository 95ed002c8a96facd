//! SQLite backend: the embedded default. WAL mode and a busy timeout let the application and
//! the daemon write the same file; claims run in `BEGIN IMMEDIATE` so two daemons never lease
//! the same row. Times are Unix epoch milliseconds.

mod budget;
mod claims;
mod instances;
mod maintenance;
mod operator;
mod outcomes;
mod page;
mod reports;

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Row, SqlitePool};

use super::rows::{self, ReadRow};
use super::types::{self as types};
use super::types::{Claimed, Renewal, SetAside};
use super::{
    ClaimRequest, ClaimedRow, InstanceBeat, InstanceRow, OutcomeWrite, Requeue, SessionRow, StatusReport,
    chrono_duration,
};
use crate::editor::Editor;

/// How long a statement waits for another writer before failing with "database is locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections for reads (status, next due, housekeeping); writes have their own one.
const READ_CONNECTIONS: u32 = 2;
/// Outcomes per UPDATE statement (nine bound values each, far below SQLite's variable limit).
const OUTCOME_CHUNK: usize = 500;
/// Rows per multi-row INSERT (two bound values each, far below SQLite's variable limit).
const ENQUEUE_CHUNK: usize = 2_000;

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

/// Which file the database path names, so that a connection to a file that was replaced or
/// removed since it was opened is never reused: every acquire compares the path's identity
/// (device, inode) with the one seen before, and connections opened before a change are closed.
/// New connections then open whatever the path names now, or fail while nothing is there.
#[derive(Debug)]
struct FileWatch {
    path: std::path::PathBuf,
    seen: std::sync::Mutex<(Option<(u64, u64)>, std::time::Instant)>,
}

impl FileWatch {
    fn new(path: &std::path::Path) -> Self {
        Self {
            path: path.to_owned(),
            seen: std::sync::Mutex::new((identity(path), std::time::Instant::now())),
        }
    }

    /// Whether a connection opened `age` ago still reaches the file the path names.
    fn still_current(&self, age: Duration) -> bool {
        let now = identity(&self.path);
        let mut seen = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if now != seen.0 {
            match now {
                None => tracing::error!(path = %self.path.display(),
                    "the SQLite database file is gone: its connections are closed; waiting for it to come back"),
                Some(_) => tracing::warn!(path = %self.path.display(),
                    "the SQLite database file was replaced: reopening it"),
            }
            *seen = (now, std::time::Instant::now());
        }
        now.is_some() && seen.1.elapsed() >= age
    }
}

fn identity(path: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Whether SQLite opened this connection read-only (it does so silently when the file was not
/// writable at that moment, and stays so for the connection's life).
async fn is_read_only(conn: &mut sqlx::SqliteConnection) -> Result<bool, sqlx::Error> {
    let mut handle = conn.lock_handle().await?;
    // SAFETY: the handle is a live connection, locked for this call; the name is NUL-terminated.
    let read_only = unsafe { libsqlite3_sys::sqlite3_db_readonly(handle.as_raw_handle().as_ptr(), c"main".as_ptr()) };
    Ok(read_only == 1)
}

impl SqliteStore {
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .context("Failed to parse the SQLite URL")?
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL is durable against process crashes in WAL mode, which is what we face.
            .synchronous(SqliteSynchronous::Normal)
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
                .acquire_timeout(BUSY_TIMEOUT + Duration::from_secs(5))
                .before_acquire(move |conn, meta| {
                    let watch = watch.clone();
                    Box::pin(async move {
                        if watch.is_some_and(|w| !w.still_current(meta.age)) {
                            return Ok(false);
                        }
                        // A writer that came up read-only (a read-only spell of the file) is
                        // replaced rather than kept failing every write until it is recycled.
                        Ok(!(writes && is_read_only(conn).await?))
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
        Ok(Self { pool, writer })
    }

    pub async fn migrate(&self) -> anyhow::Result<()> {
        sqlx::migrate!("migrations/sqlite")
            .run(&self.writer)
            .await
            .context("Failed to migrate the SQLite database")
    }

    pub async fn close(&self) {
        self.pool.close().await;
        self.writer.close().await;
    }
}

impl ReadRow for sqlx::sqlite::SqliteRow {
    fn text(&self, column: &str) -> anyhow::Result<Option<String>> {
        self.try_get(column)
            .with_context(|| format!("Failed to read {column} as text"))
    }

    fn int(&self, column: &str) -> anyhow::Result<Option<i64>> {
        self.try_get(column)
            .with_context(|| format!("Failed to read {column} as an integer"))
    }

    fn time(&self, column: &str) -> anyhow::Result<Option<DateTime<Utc>>> {
        use sqlx::{TypeInfo, ValueRef};
        let raw = self
            .try_get_raw(column)
            .with_context(|| format!("Failed to read {column}"))?;
        if raw.is_null() {
            return Ok(None);
        }
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
