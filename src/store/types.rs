//! The store's shared vocabulary: the states of a row, what a claim asks for and returns, the
//! outcomes written back, and the reports read out. Both backends speak these types; only their
//! SQL and their time encoding differ.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::editor::Editor;
use crate::outcome::OutcomeCounts;

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
    /// The claiming process (`reaper_instances.instance_id`), written as the rows' `lease_owner`.
    pub instance_id: &'a str,
    pub now: DateTime<Utc>,
    pub lease: Duration,
    /// Rows due at or before this moment are taken; `run --once` fixes it at its start.
    pub due_by: DateTime<Utc>,
    /// A row whose last activity is older than `due_by - stale_after` is stale.
    pub stale_after: Duration,
    pub limit: u32,
}

/// What one lease renewal did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Renewal {
    pub renewed: u64,
    /// Rows still ours that another transaction (the application) held locked: skipped, not
    /// waited on. Their leases run on; renewed at the next beat if the lock is gone by then.
    pub locked: u64,
}

/// A row of `reaper_sessions` by its primary key. This is what travels from the claim through
/// the request to the outcome, and what logs and errors name: never the whole session id, which
/// is a credential and stays in the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, sqlx::Type, serde::Serialize)]
#[sqlx(transparent)]
#[serde(transparent)]
pub struct RowId(pub i64);

impl RowId {
    /// The key as the database holds it (and as log fields carry it).
    pub fn get(self) -> i64 {
        self.0
    }
}

impl std::fmt::Display for RowId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A row leased to us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedRow {
    pub id: RowId,
    pub session_id: String,
    /// Whose session it is: where its DELETE goes and how its answer is read.
    pub editor: Editor,
    pub attempts: i32,
    /// The row was leased by someone else whose lease ran out (a crashed or stuck worker).
    pub taken_over: bool,
    /// When the claim saw the row due. A row that waited longer than `STILL_DUE_FOR` since is
    /// checked again right before its request (the application may have touched it meanwhile).
    pub claimed_at: tokio::time::Instant,
}

/// How long a claim's verdict "this row is due" is trusted; older ones are checked again before
/// the request goes out. This bounds the window between the application's commit (a session
/// whose user came back) and a request that still deletes it.
pub const STILL_DUE_FOR: Duration = Duration::from_millis(200);

/// What one claim gave: rows to delete, and rows set aside because a column holds a value the
/// daemon cannot use (they were marked `invalid` in the same transaction, with `last_error`
/// naming the column and the problem).
#[derive(Debug, Default)]
pub struct Claimed {
    pub rows: Vec<ClaimedRow>,
    pub set_aside: Vec<SetAside>,
}

/// A row marked `invalid` at claim time instead of stopping the claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetAside {
    pub id: RowId,
    /// Which column, and what is wrong with its value (never the whole session id).
    pub problem: String,
}

/// One outcome to write back; applied only while the writing instance still holds the row's lease.
#[derive(Debug, Clone, PartialEq)]
pub enum OutcomeWrite {
    /// The row reaches `state` (terminal, or `retrying` with `next_attempt_at`).
    Finish {
        id: RowId,
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
    Release { id: RowId },
}

impl OutcomeWrite {
    /// The row this outcome is for.
    pub fn id(&self) -> RowId {
        match self {
            Self::Finish { id, .. } | Self::Release { id } => *id,
        }
    }
}

/// A whole row of `reaper_sessions`, for inspection (`Store::rows`, tests and tools).
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRow {
    pub id: RowId,
    pub session_id: String,
    pub editor: Editor,
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
    /// This process's counts per outcome since it started.
    pub counts: OutcomeCounts,
}

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
    /// The same counts per editor (editors without rows are absent).
    pub editors: BTreeMap<Editor, BTreeMap<State, i64>>,
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

    /// Rows of `editor` in `state`.
    pub fn editor_count(&self, editor: Editor, state: State) -> i64 {
        self.editors
            .get(&editor)
            .and_then(|counts| counts.get(&state))
            .copied()
            .unwrap_or(0)
    }
}

/// One `Finish` outcome, flattened for a batch statement.
#[derive(Debug, Clone, Copy)]
pub(super) struct Finished<'a> {
    pub(super) id: RowId,
    pub(super) state: State,
    pub(super) charge: bool,
    pub(super) http_status: Option<i32>,
    pub(super) api_code: Option<i64>,
    pub(super) error: Option<&'a str>,
    pub(super) attempted_at: Option<DateTime<Utc>>,
    /// Set for final states, from `decided_at`.
    pub(super) finished_at: Option<DateTime<Utc>>,
    pub(super) next_attempt_at: Option<DateTime<Utc>>,
}

/// Splits a batch into rows that reach a state and rows handed back untouched.
pub(super) fn split_outcomes(outcomes: &[OutcomeWrite]) -> (Vec<Finished<'_>>, Vec<RowId>) {
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
