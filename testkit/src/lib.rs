//! What the integration tests (`tests/it`) and the benchmark (`bench/`) both need to run the
//! daemon for real, in one place:
//!
//! - [`PgDatabase`]: a fresh PostgreSQL database with a unique name, dropped (`WITH (FORCE)`)
//!   when done, and the rules for the test server ([`postgres::admin_url`],
//!   `SKIP_POSTGRES=1`); [`SqliteFile`]: a fresh SQLite file;
//! - [`free_port`];
//! - [`DaemonEnv`]: the `SESSION_REAPER_*` environment of a daemon child process, and
//!   [`daemon_command`], which starts one from a clean environment;
//! - [`start_standin`]: the stand-in API (`session_reaper::standin::StandIn`) in-process.
//!
//! The daemon binary's path is always the caller's: `env!("CARGO_BIN_EXE_session-reaper")` exists
//! only in the daemon package's own tests, and the bench finds the binary next to itself.
//!
//! Not ported (they are not Rust): `scripts/resilience.py` and `scripts/cluster.py` create and
//! drop their own databases with `psql`, pick free ports and build the daemon's environment
//! themselves; `.ci/run` drops leftover `reaper_test_%` databases (the names
//! [`PgDatabase::for_test`] creates) with `psql`.

pub mod daemon;
pub mod postgres;
pub mod sqlite;

use std::net::{SocketAddr, TcpListener};

use session_reaper::standin::StandIn;

pub use daemon::{DaemonEnv, clean_env, daemon_command};
pub use postgres::PgDatabase;
pub use sqlite::SqliteFile;

/// A TCP port on 127.0.0.1 that was free a moment ago. Another process may take it before the
/// caller binds it, so a caller that can retry should.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The stand-in API on a free loopback port, accepting `apikey` and keeping the requests it saw.
pub async fn start_standin(apikey: &str) -> std::io::Result<StandIn> {
    StandIn::start(SocketAddr::from(([127, 0, 0, 1], 0)), apikey, true).await
}
