//! PostgreSQL: the status page's reads (`store::page_types`), and the read-only connection it
//! reads through.

use super::*;

/// Connections of the status page's reader: a page view runs its reads two at a time.
const PAGE_CONNECTIONS: u32 = 2;
/// The page's connections close after this long without a view.
const PAGE_IDLE: Duration = Duration::from_secs(60);

impl PgStore {
    /// A store whose sessions are read-only (`default_transaction_read_only`) with a statement
    /// timeout, connecting at its first query; its connections close when unused for a minute.
    pub fn connect_reader(url: &str) -> anyhow::Result<Self> {
        let options = PgConnectOptions::from_str(url)
            .context("Failed to parse the PostgreSQL URL")?
            .application_name("session-reaper status page")
            .options([("default_transaction_read_only", "on"), ("statement_timeout", "5000")]);
        let pool = PgPoolOptions::new()
            .max_connections(PAGE_CONNECTIONS)
            .min_connections(0)
            .idle_timeout(PAGE_IDLE)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(options.clone());
        Ok(Self {
            options: std::sync::Arc::new(options),
            pool: pool.clone(),
            claims: pool,
        })
    }
}

/// Final rows per minute from `$1` for `$2` minutes, one range count of the
/// `finished_at` index per minute (index-only where the visibility map allows). Sixty range
/// counts took 109 ms for a million rows in the hour where one GROUP BY took 535 ms.
pub(super) const FINISHED_PER_MINUTE: &str = "
    SELECT minute::bigint AS minute,
         (SELECT COUNT(*) FROM reaper_sessions
           WHERE finished_at >= $1 + minute * interval '1 minute'
             AND finished_at < $1 + (minute + 1) * interval '1 minute') AS n
    FROM generate_series(0, $2 - 1) AS minute";

/// The `$3` most common (text, state) pairs among the newest `$2` errors attempted since `$1`.
pub(super) const RECENT_ERRORS: &str = "
    SELECT last_error, state, COUNT(*) AS n, MAX(last_attempt_at) AS latest_at,
          (ARRAY_AGG(id ORDER BY last_attempt_at DESC, id DESC))[1] AS id,
          (ARRAY_AGG(session_id ORDER BY last_attempt_at DESC, id DESC))[1] AS session_id,
          (SUM(COUNT(*)) OVER ())::bigint AS scanned, COUNT(*) OVER () AS distinct_errors
     FROM (SELECT id, session_id, state, last_error, last_attempt_at
             FROM reaper_sessions
            WHERE last_error IS NOT NULL AND last_attempt_at >= $1
            ORDER BY last_attempt_at DESC
            LIMIT $2) recent
    GROUP BY last_error, state
    ORDER BY n DESC, latest_at DESC
    LIMIT $3";
