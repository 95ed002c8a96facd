//! Every key a config may set, and the default of each, with the reason for it.

use std::time::Duration;

/// Prefix of the environment variables; `__` separates nesting levels.
pub const ENV_PREFIX: &str = "SESSION_REAPER_";
pub(super) const DEFAULT_SQLITE_FILE: &str = "session-reaper.db";
/// Default data centre: the US one, as in the API page.
pub(super) const DEFAULT_DATA_CENTER: &str = "us";
pub(super) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
pub(super) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Sixteen requests in flight saturate the API long before they cost us anything.
pub(super) const DEFAULT_CONCURRENCY: usize = 16;
/// The API documents no rate limit; 10/s keeps a quota safe while deleting 36,000 sessions an hour.
pub(super) const DEFAULT_RATE_PER_SECOND: u32 = 10;
pub(super) const DEFAULT_BURST: u32 = 10;
/// How long a session may sit without activity before it is deleted.
pub(super) const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(30 * 60);
/// Short, because it is renewed while a request runs: a dead replica's rows move on within a minute.
pub(super) const DEFAULT_LEASE: Duration = Duration::from_secs(30);
pub(super) const DEFAULT_BATCH_SIZE: u32 = 64;
pub(super) const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);
pub(super) const DEFAULT_MAX_ATTEMPTS: u32 = 8;
pub(super) const DEFAULT_BASE_DELAY: Duration = Duration::from_secs(1);
pub(super) const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(10 * 60);
pub(super) const DEFAULT_QUOTA_PAUSE: Duration = Duration::from_secs(15 * 60);
pub(super) const DEFAULT_KEY_PAUSE: Duration = Duration::from_secs(60);
/// Shorter than systemd's default stop timeout (90 s) and Kubernetes' grace period (30 s).
pub(super) const DEFAULT_GRACE: Duration = Duration::from_secs(20);
pub(super) const DEFAULT_SUMMARY_INTERVAL: Duration = Duration::from_secs(60);
/// Longest duration any setting accepts; beyond it time arithmetic would overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(3650 * 24 * 60 * 60);
/// Most ids we ever send in one claim; bigger batches only hold leases longer.
pub(super) const MAX_BATCH_SIZE: u32 = 10_000;
pub(super) const MAX_CONCURRENCY: u128 = 4096;

/// `SESSION_REAPER_*` variables that are not configuration and are read by something else:
/// ignored without a warning.
pub(super) const OTHER_VARIABLES: &[&str] = &[
    // `stand-in --apikey`
    "SESSION_REAPER_STANDIN_APIKEY",
    // the test suite's PostgreSQL server
    "SESSION_REAPER_TEST_POSTGRES",
];

/// Every key a config may set; anything else is reported as unknown.
pub(super) const KNOWN_KEYS: &[&str] = &[
    "database.url",
    "database.connect_timeout",
    "api.data_center",
    "api.base_url",
    "api.apikey",
    "api.apikey_file",
    "api.timeout",
    "api.connect_timeout",
    "worker.concurrency",
    "worker.rate_per_second",
    "worker.burst",
    "worker.stale_after",
    "worker.lease",
    "worker.batch_size",
    "worker.poll_interval",
    "retry.max_attempts",
    "retry.base_delay",
    "retry.max_delay",
    "retry.quota_pause",
    "retry.key_pause",
    "shutdown.grace",
    "log.format",
    "log.level",
    "log.session_ids",
    "log.summary_interval",
    "http.listen",
    "retention.finished",
    "source.url",
    "source.query",
    "source.interval",
];
/// How often the source query runs (when `source.query` is set).
pub(super) const DEFAULT_SOURCE_INTERVAL: Duration = Duration::from_secs(60);
/// How long `run --once` waits for an unreachable database (at start or mid-run) before it exits
/// non-zero; the daemon itself keeps retrying.
pub(super) const DEFAULT_DATABASE_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
