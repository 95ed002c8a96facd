//! SQLite: the status page's reads (`store::page_types`), and the read-only connection it
//! reads through.

use sqlx::sqlite::SqlitePool;

use super::*;

/// Connections of the status page's reader: a page view runs its reads two at a time.
const PAGE_CONNECTIONS: u32 = 2;
/// The page's connections close after this long without a view.
const PAGE_IDLE: Duration = Duration::from_secs(60);

impl SqliteStore {
    /// A read-only store on the file of `url`, opened at its first query (never creating the
    /// file), whose connections close when unused for a minute. Its "writer" is its reader:
    /// a write through it fails.
    pub fn connect_reader(url: &str) -> anyhow::Result<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .context("Failed to parse the SQLite URL")?
            .read_only(true)
            .busy_timeout(BUSY_TIMEOUT);
        let pool: SqlitePool = SqlitePoolOptions::new()
            .max_connections(PAGE_CONNECTIONS)
            .min_connections(0)
            .idle_timeout(PAGE_IDLE)
            .acquire_timeout(BUSY_TIMEOUT)
            .connect_lazy_with(options);
        Ok(Self {
            pool: pool.clone(),
            writer: pool,
            file: None,
        })
    }
}

/// Final rows per minute from `$1` for `$2` minutes, one range count of the
/// `finished_at` index per minute (no table row is read). Sixty range counts took a third of
/// the time of one GROUP BY over the hour (88 ms against 300 ms for a million rows in it).
pub(super) const FINISHED_PER_MINUTE: &str = "
    WITH RECURSIVE m(minute) AS (SELECT 0 UNION ALL SELECT minute + 1 FROM m WHERE minute + 1 < $2)
    SELECT minute,
           (SELECT COUNT(*) FROM reaper_sessions INDEXED BY reaper_sessions_finished
             WHERE finished_at >= $1 + minute * 60000 AND finished_at < $1 + (minute + 1) * 60000) AS n
      FROM m";

/// The `$3` most common (text, state) pairs among the newest `$2` errors attempted since `$1`.
/// SQLite fills the bare columns `id` and `session_id` from the row that gave MAX().
pub(super) const RECENT_ERRORS: &str = "
    SELECT last_error, state, COUNT(*) AS n, MAX(last_attempt_at) AS latest_at, id, session_id,
          SUM(COUNT(*)) OVER () AS scanned, COUNT(*) OVER () AS distinct_errors
     FROM (SELECT id, session_id, state, last_error, last_attempt_at
             FROM reaper_sessions INDEXED BY reaper_sessions_last_error
            WHERE last_error IS NOT NULL AND last_attempt_at >= $1
            ORDER BY last_attempt_at DESC
            LIMIT $2)
    GROUP BY last_error, state
    ORDER BY n DESC, latest_at DESC
    LIMIT $3";
