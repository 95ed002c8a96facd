//! What the status page (`http::page`) reads besides `status` and `instances`: final rows per
//! minute over the last hour, and the most common recent errors. Both are bounded reads through
//! an index: the minutes walk `reaper_sessions_finished` over one hour of `finished_at`; the
//! errors take at most `scan` rows of `reaper_sessions_last_error` (newest `last_attempt_at`
//! first) and group only those.

use chrono::{DateTime, Utc};

use super::rows::ReadRow;

/// Final rows per minute: `counts[i]` rows reached a final state in the minute starting at
/// `start + i` minutes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishedPerMinute {
    pub start: DateTime<Utc>,
    pub counts: Vec<i64>,
}

impl FinishedPerMinute {
    pub fn total(&self) -> i64 {
        self.counts.iter().sum()
    }
}

/// One error text, the state its rows are in, and how often it came up among the recent errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorGroup {
    /// `last_error` as stored: application and API text, to be escaped before display.
    pub error: String,
    /// The rows' state (`gone` rows keep the API's "invalid session id" as their error).
    pub state: String,
    pub count: i64,
    /// The newest `last_attempt_at` of the group.
    pub latest_at: DateTime<Utc>,
    /// The row of that newest attempt (`reaper_sessions.id`).
    pub sample_id: i64,
    /// Its session id, whole: for redacting it from `error`; show `session_id_prefix` only.
    pub sample_session_id: String,
}

/// The most common errors among the newest ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecentErrors {
    /// Most common first, at most the `limit` asked for.
    pub groups: Vec<ErrorGroup>,
    /// Error rows looked at (at most the `scan` asked for).
    pub scanned: i64,
    /// Distinct error texts among them (`groups` may hold fewer).
    pub distinct: i64,
}

/// The 60 buckets of `FinishedPerMinute` from rows of (`minute`, `n`); minutes outside
/// `0..minutes` (a clock step between the bounds) are dropped.
pub(super) fn finished_per_minute(
    rows: &[impl ReadRow],
    start: DateTime<Utc>,
    minutes: usize,
) -> anyhow::Result<FinishedPerMinute> {
    let mut counts = vec![0; minutes];
    for row in rows {
        let minute = row.required_int("minute")?;
        if let Some(slot) = usize::try_from(minute).ok().and_then(|m| counts.get_mut(m)) {
            *slot += row.int("n")?.unwrap_or(0);
        }
    }
    Ok(FinishedPerMinute { start, counts })
}

/// `RecentErrors` from rows of (`last_error`, `state`, `n`, `latest_at`, `id`, `session_id`, `scanned`,
/// `distinct_errors`).
pub(super) fn recent_errors(rows: &[impl ReadRow]) -> anyhow::Result<RecentErrors> {
    let mut recent = RecentErrors::default();
    for row in rows {
        recent.scanned = row.int("scanned")?.unwrap_or(0);
        recent.distinct = row.int("distinct_errors")?.unwrap_or(0);
        recent.groups.push(ErrorGroup {
            error: row.text("last_error")?.unwrap_or_default(),
            state: row.text("state")?.unwrap_or_default(),
            count: row.required_int("n")?,
            latest_at: row.required_time("latest_at")?,
            sample_id: row.required_int("id")?,
            sample_session_id: row.text("session_id")?.unwrap_or_default(),
        });
    }
    Ok(recent)
}
