//! The database behind one interface, laid out like River's drivers: the shared types
//! (`types`), row mapping once (`rows`), the queries whose SQL both databases share once
//! (`shared`, over each backend's `driver::Driver`), and one folder per backend holding only its
//! own SQL and its time encoding, split by query group (claims, outcomes, reports, maintenance). The
//! backend is chosen by the scheme of `database.url`. Every query takes `now` from the caller, so
//! tests control time.
//!
//! `Store` is also the metered wrapper: every call the daemon makes passes through `metered`,
//! which counts it, counts its failure, and records readiness, so no call site does it by hand.

pub mod budget;
mod driver;
mod postgres;
mod rows;
mod shared;
mod sqlite;
mod types;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus_client::metrics::counter::Counter;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;
pub use types::{
    ClaimRequest, Claimed, ClaimedRow, InstanceBeat, InstanceRow, OutcomeWrite, Renewal, Requeue, RowId, STILL_DUE_FOR,
    SessionRow, SetAside, State, StatusReport,
};

use crate::editor::Editor;
use crate::health::Health;

#[derive(Clone, Debug)]
enum Backend {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

/// Where every store call is counted. Unregistered counters until the daemon attaches its own.
#[derive(Clone, Debug, Default)]
struct Meter {
    round_trips: Counter,
    errors: Counter,
    health: Arc<Health>,
}

/// The configured database; cheap to clone (pools and counters are shared).
#[derive(Clone, Debug)]
pub struct Store {
    backend: Backend,
    meter: Meter,
}

/// Calls the same method on whichever backend this is, through the meter.
macro_rules! metered {
    ($self:ident, $store:ident => $call:expr) => {
        metered!($self, Read, $store => $call)
    };
    ($self:ident, $kind:ident, $store:ident => $call:expr) => {
        $self.meter.record(crate::health::DatabaseUse::$kind, match &$self.backend {
            Backend::Sqlite($store) => $call.await,
            Backend::Postgres($store) => $call.await,
        })
    };
}

impl Meter {
    fn record<T>(&self, kind: crate::health::DatabaseUse, result: anyhow::Result<T>) -> anyhow::Result<T> {
        self.round_trips.inc();
        self.health.set_database_ok(kind, result.is_ok());
        if result.is_err() {
            self.errors.inc();
        }
        result
    }
}

impl Store {
    /// Opens (and for SQLite creates) the database named by `url`.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite(SqliteStore::connect(url).await?)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres(PgStore::connect(url).await?)
        } else {
            anyhow::bail!("database.url must start with sqlite:, postgres:// or postgresql://")
        };
        Ok(Self {
            backend,
            meter: Meter::default(),
        })
    }

    /// Counts every later call in `round_trips` / `errors` and records readiness in `health`.
    pub fn metered(mut self, (round_trips, errors): (Counter, Counter), health: Arc<Health>) -> Self {
        self.meter = Meter {
            round_trips,
            errors,
            health,
        };
        self
    }

    pub fn backend(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// How many outcome batches are worth writing at once. SQLite writes through one connection,
    /// so a second batch would only wait for it, holding answered outcomes that a crash turns into
    /// repeated requests; PostgreSQL writes two in parallel, on two connections.
    pub fn outcome_writers(&self) -> usize {
        match self.backend {
            Backend::Sqlite(_) => 1,
            Backend::Postgres(_) => 2,
        }
    }

    /// Applies the backend's migrations (safe when several replicas start at once).
    pub async fn migrate(&self) -> anyhow::Result<()> {
        metered!(self, Write, s => s.migrate())
    }

    /// Refreshes the planner's statistics of the table (PostgreSQL `ANALYZE`; nothing on SQLite).
    /// On a freshly filled table without them, the outcome UPDATE was planned as a nested loop
    /// over every leased row and ran 3x slower; autovacuum may be off or late.
    pub async fn refresh_statistics(&self) -> anyhow::Result<()> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(()),
            Backend::Postgres(s) => self.meter.record(crate::health::DatabaseUse::Write, s.analyze().await),
        }
    }

    /// Closes the connections (PostgreSQL otherwise logs a reset for each at exit).
    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite(s) => s.close().await,
            Backend::Postgres(s) => s.close().await,
        }
    }

    /// Leases up to `limit` due rows to `owner`, oldest first.
    /// Rows the daemon cannot read are marked `invalid` in the same claim (`Claimed::set_aside`).
    pub async fn claim(&self, request: &ClaimRequest<'_>) -> anyhow::Result<Claimed> {
        metered!(self, Write, s => s.claim(request))
    }

    /// Which of rows `ids` `instance_id` still holds and are still due at `now` (the
    /// application may have recorded new activity since the claim). One query for them all.
    pub async fn still_due(
        &self,
        instance_id: &str,
        ids: &[RowId],
        now: DateTime<Utc>,
        stale_after: Duration,
    ) -> anyhow::Result<Vec<RowId>> {
        metered!(self, s => shared::still_due(s, (instance_id, ids), now, stale_after))
    }

    /// Writes a batch of outcomes in one transaction; returns how many rows the lease let through.
    pub async fn write_outcomes(&self, owner: &str, outcomes: &[OutcomeWrite]) -> anyhow::Result<u64> {
        metered!(self, Write, s => s.write_outcomes(owner, outcomes))
    }

    /// Extends to `until` the leases `owner` still holds among `ids` (the heartbeat, for the
    /// rows this process has claimed and not yet written back).
    pub async fn renew_leases(&self, owner: &str, ids: &[RowId], until: DateTime<Utc>) -> anyhow::Result<Renewal> {
        metered!(self, Write, s => s.renew_leases(owner, ids, until))
    }

    /// Inserts Writer session ids due at `now`; existing ids are left alone. Returns how many
    /// were new.
    pub async fn enqueue(&self, ids: &[String], now: DateTime<Utc>) -> anyhow::Result<u64> {
        self.enqueue_editor(ids, Editor::Writer, now).await
    }

    /// Inserts session ids of `editor` due at `now`; existing ids are left alone (whatever their
    /// editor). Returns how many were new.
    pub async fn enqueue_editor(&self, ids: &[String], editor: Editor, now: DateTime<Utc>) -> anyhow::Result<u64> {
        metered!(self, Write, s => s.enqueue(ids, editor, now))
    }

    pub async fn status(&self, now: DateTime<Utc>, stale_after: Duration) -> anyhow::Result<StatusReport> {
        metered!(self, s => shared::status(s, now, stale_after))
    }

    /// Records `beat` (inserting the replica if new), forgets replicas silent for longer than
    /// `forget_after`, and returns how many replicas beat within `live_within` (this one included)
    /// and the cluster's budget and pause as they stand.
    pub async fn beat(
        &self,
        beat: &InstanceBeat,
        now: DateTime<Utc>,
        live_within: Duration,
        forget_after: Duration,
    ) -> anyhow::Result<(i64, budget::BudgetReport)> {
        metered!(self, Write, s => shared::beat(s, beat, now, (live_within, forget_after)))
            .map(|(live, row)| (live, row.report()))
    }

    /// Removes this replica's row (clean exit).
    pub async fn remove_instance(&self, instance_id: &str) -> anyhow::Result<()> {
        metered!(self, Write, s => shared::remove_instance(s, instance_id))
    }

    pub async fn instances(&self) -> anyhow::Result<Vec<InstanceRow>> {
        metered!(self, s => shared::instances(s))
    }

    /// Reserves send times from the cluster's budget (or the probe, or nothing while paused).
    pub async fn reserve(&self, request: &budget::ReserveRequest<'_>) -> anyhow::Result<budget::Reservation> {
        metered!(self, Write, s => s.with_budget(|row| row.decide_reservation(request)))
    }

    /// Pauses the whole cluster; returns whether it was not paused already.
    pub async fn record_pause(&self, request: &budget::PauseRequest<'_>) -> anyhow::Result<bool> {
        metered!(self, Write, s => s.with_budget(|row| row.decide_pause(request)))
    }

    /// Ends `instance_id`'s probe of the cluster's pause (`succeeded`: the pause is over).
    /// Returns whether it still held the probe.
    pub async fn end_probe(&self, instance_id: &str, succeeded: bool, tolerance_us: i64) -> anyhow::Result<bool> {
        metered!(self, Write, s => s.end_probe(instance_id, succeeded, tolerance_us))
    }

    /// The cluster's budget and pause as they stand.
    pub async fn budget(&self) -> anyhow::Result<budget::BudgetReport> {
        metered!(self, s => shared::budget(s)).map(|row| row.report())
    }

    /// Moves finished rows back to `pending`, due at `now`, with fresh attempts. Leased rows are
    /// never touched. Returns how many moved.
    pub async fn requeue(&self, which: Requeue<'_>, now: DateTime<Utc>) -> anyhow::Result<u64> {
        metered!(self, Write, s => s.requeue(which, now))
    }

    /// Deletes up to `limit` final rows finished before `cutoff`; call until it returns 0.
    pub async fn prune(&self, cutoff: DateTime<Utc>, limit: u32) -> anyhow::Result<u64> {
        metered!(self, Write, s => shared::prune(s, cutoff, limit))
    }

    /// Open rows, and when the earliest of them was due (for the backlog metrics).
    pub async fn backlog(&self, stale_after: Duration) -> anyhow::Result<(i64, Option<DateTime<Utc>>)> {
        metered!(self, s => s.backlog(stale_after))
    }

    /// The earliest moment an open, unleased row becomes due (for sleeping while idle). On
    /// SQLite the idle poll also looks at the file first (no query): a replaced file is reopened
    /// now, and a read-only spell turns readiness at once instead of at the next heartbeat's
    /// failed write (the next write that succeeds turns it back).
    pub async fn next_due(&self, stale_after: Duration) -> anyhow::Result<Option<DateTime<Utc>>> {
        if let Backend::Sqlite(s) = &self.backend
            && s.idle_look().await
        {
            self.meter
                .health
                .set_database_ok(crate::health::DatabaseUse::Write, false);
        }
        metered!(self, s => driver::Driver::earliest_due(s, stale_after, true))
    }

    /// Every row, in id order: for tests and the benchmark, not for big tables.
    #[cfg(feature = "test-support")]
    pub async fn rows(&self) -> anyhow::Result<Vec<SessionRow>> {
        metered!(self, s => shared::rows(s))
    }

    /// Records application activity on a session (inserting it if new), as an application
    /// would: it is deleted once `worker.stale_after` has passed without more activity. For tests
    /// and the benchmark; the daemon itself never calls it.
    #[cfg(feature = "test-support")]
    pub async fn touch(&self, session_id: &str, at: DateTime<Utc>) -> anyhow::Result<()> {
        metered!(self, Write, s => shared::touch(s, session_id, at))
    }

    /// Opens the database for `status`: read-only, never created, never migrated (SQLite:
    /// `SQLITE_OPEN_READONLY`; PostgreSQL: read-only transactions, a `SELECT`-only role serves).
    pub async fn open_read_only(url: &str) -> anyhow::Result<Self> {
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite(SqliteStore::open_read_only(url).await?)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres(PgStore::open_read_only(url).await?)
        } else {
            anyhow::bail!("database.url must start with sqlite:, postgres:// or postgresql://")
        };
        Ok(Self {
            backend,
            meter: Meter::default(),
        })
    }

    /// A read-only store on the database of `url` for the status page: it connects at its first
    /// query (a SQLite file is never created), holds at most two connections and closes them
    /// after a minute without a query. Its calls are not metered (they are not the daemon's).
    pub fn connect_reader(url: &str) -> anyhow::Result<Self> {
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite(SqliteStore::connect_reader(url)?)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres(PgStore::connect_reader(url)?)
        } else {
            anyhow::bail!("database.url must start with sqlite:, postgres:// or postgresql://")
        };
        Ok(Self {
            backend,
            meter: Meter::default(),
        })
    }

    /// Why a connection to `url` fails, from one direct attempt (a pool reports a refused
    /// PostgreSQL connection only as "pool timed out"); `None` when it succeeds or for SQLite.
    pub async fn connect_error(url: &str) -> Option<anyhow::Error> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            PgStore::connect_error(url).await
        } else {
            None
        }
    }

    /// Which of `names` (tables or views) the database lacks: it was not migrated.
    pub async fn missing_tables(&self, names: &[&'static str]) -> anyhow::Result<Vec<&'static str>> {
        metered!(self, s => s.missing_tables(names))
    }

    /// The rows a requeue looks at: every `failed` row, or the rows of the listed ids in any
    /// state, as (row id, session id, state) in row id order. Ids without a row are absent.
    pub async fn requeue_candidates(&self, which: Requeue<'_>) -> anyhow::Result<Vec<(i64, String, State)>> {
        metered!(self, s => s.requeue_candidates(which))
    }

    /// What `prune` would delete: final rows finished before `cutoff`, counted per state.
    pub async fn prunable(&self, cutoff: DateTime<Utc>) -> anyhow::Result<Vec<(State, i64)>> {
        metered!(self, s => shared::prunable(s, cutoff))
    }

    /// Rows that became final in each of `minutes` minutes from `start`, counted in the
    /// `finished_at` index: the status page's chart.
    pub async fn finished_per_minute(&self, start: DateTime<Utc>, minutes: usize) -> anyhow::Result<FinishedPerMinute> {
        metered!(self, s => shared::finished_per_minute(s, start, minutes))
    }

    /// The `limit` most common `last_error` texts among the newest `scan` rows with an error
    /// attempted since `since` (the status page's error table).
    pub async fn recent_errors(&self, since: DateTime<Utc>, scan: u32, limit: u32) -> anyhow::Result<RecentErrors> {
        metered!(self, s => shared::recent_errors(s, since, scan, limit))
    }
}

/// Migrations gave up waiting for a lock the application holds; the message names who holds it.
/// Not retried: an operator has to end that transaction (or wait for it) first.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct MigrationBlocked(pub String);

/// Whether a connection handed back to the pool may serve again. One still inside a transaction
/// (its COMMIT failed, e.g. on a full disk) is closed instead: reused, it would refuse every
/// later `BEGIN` with "non-zero transaction depth".
fn reusable(conn: &mut impl sqlx::Connection) -> bool {
    !conn.is_in_transaction()
}

/// Chrono's duration from std's, saturating (config durations are far below the limit).
pub(crate) fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// The status page's reads (`connect_reader`, `finished_per_minute`, `recent_errors`).
mod page_types;
pub use page_types::{ErrorGroup, FinishedPerMinute, RecentErrors};
