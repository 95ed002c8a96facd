//! The database behind one interface: all SQL lives in the backend modules below, chosen by the
//! scheme of `database.url`. Every query takes `now` from the caller, so tests control time.

mod postgres;
mod sqlite;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// States of a row, as stored in `reaper_sessions.state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum State {
    /// Written by the application; due at `delete_after` or when stale.
    Pending,
    /// A transient failure; due again at `next_attempt_at`.
    Retrying,
    /// The API confirmed the deletion.
    Deleted,
    /// The API answered 1833 or 1834: nothing left to delete.
    Gone,
    /// A permanent error, or attempts exhausted; `last_error` says which.
    Failed,
    /// A malformed session id: never sent.
    Invalid,
}

impl State {
    pub const ALL: [State; 6] = [
        State::Pending,
        State::Retrying,
        State::Deleted,
        State::Gone,
        State::Failed,
        State::Invalid,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Retrying => "retrying",
            State::Deleted => "deleted",
            State::Gone => "gone",
            State::Failed => "failed",
            State::Invalid => "invalid",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        State::ALL.into_iter().find(|state| state.as_str() == s)
    }

    pub fn is_terminal(self) -> bool {
        !matches!(self, State::Pending | State::Retrying)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a claim asks for.
#[derive(Debug, Clone)]
pub struct ClaimRequest<'a> {
    pub owner: &'a str,
    pub now: DateTime<Utc>,
    pub lease: Duration,
    /// Rows due at or before this moment are taken; `run --once` fixes it at its start.
    pub due_by: DateTime<Utc>,
    /// A row whose last activity is older than `due_by - stale_after` is stale.
    pub stale_after: Duration,
    pub limit: u32,
}

/// A row leased to us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedRow {
    pub id: i64,
    pub session_id: String,
    pub attempts: i32,
    /// The row was leased by someone else whose lease ran out (a crashed or stuck worker).
    pub taken_over: bool,
}

/// One outcome to write back; applied only while `owner` still holds the row's lease.
#[derive(Debug, Clone, PartialEq)]
pub enum OutcomeWrite {
    /// The row reaches `state` (terminal, or `retrying` with `next_attempt_at`).
    Finish {
        id: i64,
        state: State,
        /// Whether this answer counts as an attempt (429, quota and key problems do not).
        charge: bool,
        http_status: Option<i32>,
        api_code: Option<i64>,
        error: Option<String>,
        /// `None` when no request was made (invalid ids).
        attempted_at: Option<DateTime<Utc>>,
        next_attempt_at: Option<DateTime<Utc>>,
        /// When the outcome was decided; becomes `finished_at` for terminal states.
        decided_at: DateTime<Utc>,
    },
    /// Give the row back untouched (shutdown before its request started).
    Release { id: i64 },
}

impl OutcomeWrite {
    /// The row this outcome is for.
    pub fn id(&self) -> i64 {
        match self {
            Self::Finish { id, .. } | Self::Release { id } => *id,
        }
    }
}

/// A whole row of `reaper_sessions`, for inspection (`Store::rows`).
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRow {
    pub id: i64,
    pub session_id: String,
    pub state: State,
    pub delete_after: Option<DateTime<Utc>>,
    pub last_activity_at: Option<DateTime<Utc>>,
    pub attempts: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub taken_over_from: Option<String>,
    pub last_http_status: Option<i32>,
    pub last_api_code: Option<i64>,
    pub last_error: Option<String>,
    pub first_attempt_at: Option<DateTime<Utc>>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// What one replica reports about itself on every heartbeat.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceBeat {
    pub instance_id: String,
    pub host: String,
    pub pid: i32,
    pub version: String,
    pub started_at: DateTime<Utc>,
    pub in_flight: i32,
    pub rate_limit: i32,
    /// Deleted, gone, failed, invalid, retry scheduled, released: in that order.
    pub counts: [i64; 6],
}

/// The count columns of `reaper_instances`, in the order of `InstanceBeat::counts`.
const INSTANCE_COUNT_COLUMNS: [&str; 6] = ["deleted", "gone", "failed", "invalid", "retry_scheduled", "released"];

/// A row of `reaper_instances`.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceRow {
    pub beat: InstanceBeat,
    pub heartbeat_at: DateTime<Utc>,
}

/// Which rows `requeue` moves back to `pending`.
#[derive(Debug, Clone)]
pub enum Requeue<'a> {
    AllFailed,
    /// These ids, in any final state.
    Ids(&'a [String]),
}

/// Counts and times for `status` and the summary line.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatusReport {
    pub counts: BTreeMap<State, i64>,
    /// Open rows whose lease is held right now.
    pub in_flight: i64,
    /// When the earliest open row is (or was) due; in the past means a backlog.
    pub earliest_due: Option<DateTime<Utc>>,
    pub last_success: Option<DateTime<Utc>>,
    pub last_error: Option<(DateTime<Utc>, String)>,
}

impl StatusReport {
    pub fn open(&self) -> i64 {
        self.count(State::Pending) + self.count(State::Retrying)
    }

    pub fn count(&self, state: State) -> i64 {
        self.counts.get(&state).copied().unwrap_or(0)
    }
}

/// The configured database; cheap to clone (pools are shared).
#[derive(Clone, Debug)]
pub enum Store {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

macro_rules! dispatch {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            Store::Sqlite($store) => $call,
            Store::Postgres($store) => $call,
        }
    };
}

impl Store {
    /// Opens (and for SQLite creates) the database named by `url`.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        if url.starts_with("sqlite:") {
            Ok(Store::Sqlite(SqliteStore::connect(url).await?))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Store::Postgres(PgStore::connect(url).await?))
        } else {
            anyhow::bail!("database.url must start with sqlite:, postgres:// or postgresql://")
        }
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    /// How many outcome batches are worth writing at once. SQLite writes through one connection,
    /// so a second batch would only wait for it, holding answered outcomes that a crash turns into
    /// repeated requests; PostgreSQL writes two in parallel, on two connections.
    pub fn outcome_writers(&self) -> usize {
        match self {
            Store::Sqlite(_) => 1,
            Store::Postgres(_) => 2,
        }
    }

    /// Applies the backend's migrations (safe when several replicas start at once).
    pub async fn migrate(&self) -> anyhow::Result<()> {
        dispatch!(self, s => s.migrate().await)
    }

    pub async fn ping(&self) -> anyhow::Result<()> {
        dispatch!(self, s => s.ping().await)
    }

    /// Refreshes the planner's statistics of the table (PostgreSQL `ANALYZE`; nothing on SQLite).
    /// On a freshly filled table without them, the outcome UPDATE was planned as a nested loop
    /// over every leased row and ran 3x slower; autovacuum may be off or late.
    pub async fn refresh_statistics(&self) -> anyhow::Result<()> {
        match self {
            Store::Sqlite(_) => Ok(()),
            Store::Postgres(s) => s.analyze().await,
        }
    }

    /// Closes the connections (PostgreSQL otherwise logs a reset for each at exit).
    pub async fn close(&self) {
        dispatch!(self, s => s.close().await)
    }

    /// Leases up to `limit` due rows to `owner`, oldest first.
    pub async fn claim(&self, request: &ClaimRequest<'_>) -> anyhow::Result<Vec<ClaimedRow>> {
        dispatch!(self, s => s.claim(request).await)
    }

    /// Writes a batch of outcomes in one transaction; returns how many rows the lease let through.
    pub async fn write_outcomes(&self, owner: &str, outcomes: &[OutcomeWrite]) -> anyhow::Result<u64> {
        dispatch!(self, s => s.write_outcomes(owner, outcomes).await)
    }

    /// Extends to `until` the leases `owner` still holds among `ids` (the heartbeat, for the
    /// rows this process has claimed and not yet written back).
    pub async fn renew_leases(&self, owner: &str, ids: &[i64], until: DateTime<Utc>) -> anyhow::Result<u64> {
        dispatch!(self, s => s.renew_leases(owner, ids, until).await)
    }

    /// Inserts ids due at `now`; existing ids are left alone. Returns how many were new.
    pub async fn enqueue(&self, ids: &[String], now: DateTime<Utc>) -> anyhow::Result<u64> {
        dispatch!(self, s => s.enqueue(ids, now).await)
    }

    pub async fn status(&self, now: DateTime<Utc>, stale_after: Duration) -> anyhow::Result<StatusReport> {
        dispatch!(self, s => s.status(now, stale_after).await)
    }

    /// Records `beat` (inserting the replica if new), forgets replicas silent for longer than
    /// `forget_after`, and returns how many replicas beat within `live_within` (this one included).
    pub async fn beat(
        &self,
        beat: &InstanceBeat,
        now: DateTime<Utc>,
        live_within: Duration,
        forget_after: Duration,
    ) -> anyhow::Result<i64> {
        dispatch!(self, s => s.beat(beat, now, live_within, forget_after).await)
    }

    /// Removes this replica's row (clean exit).
    pub async fn remove_instance(&self, instance_id: &str) -> anyhow::Result<()> {
        dispatch!(self, s => s.remove_instance(instance_id).await)
    }

    pub async fn instances(&self) -> anyhow::Result<Vec<InstanceRow>> {
        dispatch!(self, s => s.instances().await)
    }

    /// Moves finished rows back to `pending`, due at `now`, with fresh attempts. Leased rows are
    /// never touched. Returns how many moved.
    pub async fn requeue(&self, which: Requeue<'_>, now: DateTime<Utc>) -> anyhow::Result<u64> {
        dispatch!(self, s => s.requeue(which, now).await)
    }

    /// Deletes up to `limit` final rows finished before `cutoff`; call until it returns 0.
    pub async fn prune(&self, cutoff: DateTime<Utc>, limit: u32) -> anyhow::Result<u64> {
        dispatch!(self, s => s.prune(cutoff, limit).await)
    }

    /// Open rows, and when the earliest of them was due (for the backlog metrics).
    pub async fn backlog(&self, stale_after: Duration) -> anyhow::Result<(i64, Option<DateTime<Utc>>)> {
        dispatch!(self, s => s.backlog(stale_after).await)
    }

    /// Every row, in id order: for inspection and tests, not for big tables.
    pub async fn rows(&self) -> anyhow::Result<Vec<SessionRow>> {
        dispatch!(self, s => s.rows().await)
    }

    /// Records application activity on a session (inserting it if new); it is deleted once
    /// `worker.stale_after` has passed without more activity.
    pub async fn touch(&self, session_id: &str, at: DateTime<Utc>) -> anyhow::Result<()> {
        dispatch!(self, s => s.touch(session_id, at).await)
    }

    /// The earliest moment an open, unleased row becomes due (for sleeping while idle).
    pub async fn next_due(&self, stale_after: Duration) -> anyhow::Result<Option<DateTime<Utc>>> {
        dispatch!(self, s => s.next_due(stale_after).await)
    }
}

/// One `Finish` outcome, flattened for a batch statement.
#[derive(Debug, Clone, Copy)]
struct Finished<'a> {
    id: i64,
    state: State,
    charge: bool,
    http_status: Option<i32>,
    api_code: Option<i64>,
    error: Option<&'a str>,
    attempted_at: Option<DateTime<Utc>>,
    /// Set for final states, from `decided_at`.
    finished_at: Option<DateTime<Utc>>,
    next_attempt_at: Option<DateTime<Utc>>,
}

/// Splits a batch into rows that reach a state and rows handed back untouched.
fn split_outcomes(outcomes: &[OutcomeWrite]) -> (Vec<Finished<'_>>, Vec<i64>) {
    let mut finished = Vec::with_capacity(outcomes.len());
    let mut released = Vec::new();
    for outcome in outcomes {
        match outcome {
            OutcomeWrite::Finish {
                id,
                state,
                charge,
                http_status,
                api_code,
                error,
                attempted_at,
                next_attempt_at,
                decided_at,
            } => finished.push(Finished {
                id: *id,
                state: *state,
                charge: *charge,
                http_status: *http_status,
                api_code: *api_code,
                error: error.as_deref(),
                attempted_at: *attempted_at,
                finished_at: state.is_terminal().then_some(*decided_at),
                next_attempt_at: *next_attempt_at,
            }),
            OutcomeWrite::Release { id } => released.push(*id),
        }
    }
    (finished, released)
}

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
