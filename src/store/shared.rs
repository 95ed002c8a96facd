//! The queries whose SQL is the same on both backends, written once over `Driver`: the
//! backend binds the values (its time encoding) and picks the pool. The queries that differ
//! (claims, outcome batches, enqueue, requeue, the due expressions, the budget's transaction) stay
//! in each backend's folder. None of these takes a lock beyond the one row or statement it writes.

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};

use super::budget::BudgetRow;
use super::chrono_duration;
use super::driver::{Bind, Driver};
use super::page_types::{self, FinishedPerMinute, RecentErrors};
use super::rows::{self, ReadRow};
use super::types::{InstanceBeat, InstanceRow, RowId, State, StatusReport};

/// Reads only. Counts per editor and state, what is in flight, the latest success and error.
pub(super) async fn status<D: Driver>(
    d: &D,
    now: DateTime<Utc>,
    stale_after: Duration,
) -> anyhow::Result<StatusReport> {
    let counts = d
        .read_all(
            "SELECT editor, state, COUNT(*) AS n FROM reaper_sessions GROUP BY editor, state",
            &[],
        )
        .await
        .context("Failed to count sessions")?;
    let summary = d
        .read_optional(
            "SELECT
               (SELECT COUNT(*) FROM reaper_sessions
                 WHERE lease_owner IS NOT NULL AND lease_expires_at > $1
                   AND state IN ('pending', 'retrying')) AS in_flight,
               -- The newest entry of the finished_at index, not a scan of every final row.
               (SELECT finished_at FROM reaper_sessions
                 WHERE finished_at IS NOT NULL AND state IN ('deleted', 'gone')
                 ORDER BY finished_at DESC LIMIT 1) AS last_success",
            &[Bind::Time(now)],
        )
        .await
        .context("Failed to read the status")?
        .context("The status query returned no row")?;
    // Through the partial index of rows with an error (migrations 0004/0005).
    let last_error = d
        .read_optional(
            "SELECT last_attempt_at, last_error FROM reaper_sessions
              WHERE last_error IS NOT NULL AND last_attempt_at IS NOT NULL
              ORDER BY last_attempt_at DESC LIMIT 1",
            &[],
        )
        .await
        .context("Failed to read the last error")?;
    let earliest_due = d.earliest_due(stale_after, false).await?;
    rows::status_report(&counts, &summary, last_error.as_ref(), earliest_due)
}

/// Reads only; no lock (a row the application holds locked is read as last committed).
pub(super) async fn still_due<D: Driver>(
    d: &D,
    (instance_id, ids): (&str, &[RowId]),
    now: DateTime<Utc>,
    stale_after: Duration,
) -> anyhow::Result<Vec<RowId>> {
    let ids = serde_json::to_string(ids).context("Failed to list the rows to check")?;
    let found = d
        .read_all(
            D::STILL_DUE,
            &[
                Bind::Text(&ids),
                Bind::Text(instance_id),
                Bind::Time(now),
                Bind::Time(now - chrono_duration(stale_after)),
            ],
        )
        .await
        .context("Failed to check that sessions are still due")?;
    found.iter().map(|row| Ok(RowId(row.required_int("id")?))).collect()
}

/// `STILL_DUE` over the backend's reader of `$1`, a JSON array of row ids (`$source`, aliased
/// `asked`, and `$value`, one id from it). The ids drive the join (`CROSS JOIN` keeps SQLite from
/// walking a state index instead): one primary-key lookup per id.
macro_rules! still_due_among {
    ($source:literal, $value:literal) => {
        concat!(
            "SELECT reaper_sessions.id AS id FROM ",
            $source,
            " CROSS JOIN reaper_sessions
              WHERE reaper_sessions.id = ",
            $value,
            " AND lease_owner = $2 AND state IN ('pending', 'retrying')
                AND (delete_after <= $3 OR last_activity_at <= $4)"
        )
    };
}
pub(super) use still_due_among;

/// Writes this replica's row, forgets replicas silent for `forget_after`, and reads the live
/// count and the budget row. Locks: this replica's row, then the dead ones' (no other replica
/// writes either).
pub(super) async fn beat<D: Driver>(
    d: &D,
    b: &InstanceBeat,
    now: DateTime<Utc>,
    (live_within, forget_after): (Duration, Duration),
) -> anyhow::Result<(i64, BudgetRow)> {
    let counts = &b.counts;
    d.write(
        "INSERT INTO reaper_instances (instance_id, host, pid, version, started_at, heartbeat_at, in_flight,
                                       rate_limit, deleted, gone, failed, invalid, retry_scheduled, released)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
         ON CONFLICT (instance_id) DO UPDATE SET
             heartbeat_at = excluded.heartbeat_at, in_flight = excluded.in_flight,
             rate_limit = excluded.rate_limit, deleted = excluded.deleted, gone = excluded.gone,
             failed = excluded.failed, invalid = excluded.invalid,
             retry_scheduled = excluded.retry_scheduled, released = excluded.released",
        &[
            Bind::Text(&b.instance_id),
            Bind::Text(&b.host),
            Bind::Int(b.pid.into()),
            Bind::Text(&b.version),
            Bind::Time(b.started_at),
            Bind::Time(now),
            Bind::Int(b.in_flight.into()),
            Bind::Int(b.rate_limit.into()),
            Bind::Int(counts.deleted),
            Bind::Int(counts.gone),
            Bind::Int(counts.failed),
            Bind::Int(counts.invalid),
            Bind::Int(counts.retry_scheduled),
            Bind::Int(counts.released),
        ],
    )
    .await
    .context("Failed to record the heartbeat")?;
    let forget_before = now - chrono_duration(forget_after);
    d.write(
        "DELETE FROM reaper_instances WHERE heartbeat_at < $1",
        &[Bind::Time(forget_before)],
    )
    .await
    .context("Failed to forget dead instances")?;
    let live = d
        .read_optional(
            "SELECT COUNT(*) AS live FROM reaper_instances WHERE heartbeat_at >= $1",
            &[Bind::Time(now - chrono_duration(live_within))],
        )
        .await
        .context("Failed to count live instances")?;
    let live = live.map_or(Ok(0), |row| row.required_int("live"))?;
    // The cluster's pause, for a replica with nothing to send (it reserves no send times).
    Ok((live, budget(d).await?))
}

/// The budget row as it is (no lock), for `status`, the page and the heartbeat.
pub(super) async fn budget<D: Driver>(d: &D) -> anyhow::Result<BudgetRow> {
    let found = d
        .read_optional(D::BUDGET_READ, &[])
        .await
        .context("Failed to read the budget row")?;
    found.map_or_else(|| Ok(BudgetRow::default()), |row| rows::budget_row(&row))
}

/// Locks this replica's row only.
pub(super) async fn remove_instance<D: Driver>(d: &D, instance_id: &str) -> anyhow::Result<()> {
    d.write(
        "DELETE FROM reaper_instances WHERE instance_id = $1",
        &[Bind::Text(instance_id)],
    )
    .await
    .context("Failed to remove the instance")?;
    Ok(())
}

pub(super) async fn instances<D: Driver>(d: &D) -> anyhow::Result<Vec<InstanceRow>> {
    let found = d
        .read_all(
            // Named, not `*`: a connection that cached this statement before a migration added
            // a column would read it with the old column list (sqlx does not notice SQLite
            // preparing it again) and fail.
            "SELECT instance_id, host, pid, version, started_at, heartbeat_at, in_flight, rate_limit,
                    deleted, gone, failed, invalid, retry_scheduled, released
               FROM reaper_instances ORDER BY started_at",
            &[],
        )
        .await
        .context("Failed to list instances")?;
    found.iter().map(rows::instance_row).collect()
}

/// Locks the final rows it deletes (never an open one).
pub(super) async fn prune<D: Driver>(d: &D, cutoff: DateTime<Utc>, limit: u32) -> anyhow::Result<u64> {
    d.write(
        "DELETE FROM reaper_sessions WHERE id IN (
             SELECT id FROM reaper_sessions
              WHERE finished_at < $1 AND state NOT IN ('pending', 'retrying') LIMIT $2)",
        &[Bind::Time(cutoff), Bind::Int(limit.into())],
    )
    .await
    .context("Failed to prune finished sessions")
}

/// Final rows finished before `cutoff`, counted per state. Reads only.
pub(super) async fn prunable<D: Driver>(d: &D, cutoff: DateTime<Utc>) -> anyhow::Result<Vec<(State, i64)>> {
    let found = d
        .read_all(
            "SELECT state, COUNT(*) AS n FROM reaper_sessions
              WHERE finished_at < $1 AND state NOT IN ('pending', 'retrying')
              GROUP BY state",
            &[Bind::Time(cutoff)],
        )
        .await
        .context("Failed to count prunable sessions")?;
    let mut counts = Vec::with_capacity(found.len());
    for row in &found {
        if let Some(state) = row.text("state")?.as_deref().and_then(State::parse) {
            counts.push((state, row.int("n")?.unwrap_or(0)));
        }
    }
    Ok(counts)
}

/// Every row, in id order (tests and tools, not big tables). Reads only.
#[cfg(feature = "test-support")]
pub(super) async fn rows<D: Driver>(d: &D) -> anyhow::Result<Vec<super::SessionRow>> {
    let found = d
        .read_all(
            // Named, not `*` (see `instances`).
            "SELECT id, session_id, editor, state, delete_after, last_activity_at, attempts,
                    next_attempt_at, lease_owner, lease_expires_at, taken_over_from,
                    last_http_status, last_api_code, last_error, first_attempt_at,
                    last_attempt_at, finished_at
               FROM reaper_sessions ORDER BY id",
            &[],
        )
        .await
        .context("Failed to list sessions")?;
    found.iter().map(rows::session_row).collect()
}

/// Application activity on a session, as an application records it. Locks that row.
#[cfg(feature = "test-support")]
pub(super) async fn touch<D: Driver>(d: &D, session_id: &str, at: DateTime<Utc>) -> anyhow::Result<()> {
    d.write(
        "INSERT INTO reaper_sessions (session_id, delete_after, last_activity_at) VALUES ($1, NULL, $2)
         ON CONFLICT (session_id) DO UPDATE SET last_activity_at = excluded.last_activity_at",
        &[Bind::Text(session_id), Bind::Time(at)],
    )
    .await
    .context("Failed to record session activity")?;
    Ok(())
}

/// The status page's chart (see `Driver::FINISHED_PER_MINUTE`). Reads only.
pub(super) async fn finished_per_minute<D: Driver>(
    d: &D,
    start: DateTime<Utc>,
    minutes: usize,
) -> anyhow::Result<FinishedPerMinute> {
    let found = d
        .read_all(
            D::FINISHED_PER_MINUTE,
            &[Bind::Time(start), Bind::Int(i64::try_from(minutes).unwrap_or(i64::MAX))],
        )
        .await
        .context("Failed to count finished sessions per minute")?;
    page_types::finished_per_minute(&found, start, minutes)
}

/// The status page's error table (see `Driver::RECENT_ERRORS`). Reads only.
pub(super) async fn recent_errors<D: Driver>(
    d: &D,
    since: DateTime<Utc>,
    scan: u32,
    limit: u32,
) -> anyhow::Result<RecentErrors> {
    let found = d
        .read_all(
            D::RECENT_ERRORS,
            &[Bind::Time(since), Bind::Int(scan.into()), Bind::Int(limit.into())],
        )
        .await
        .context("Failed to group the recent errors")?;
    page_types::recent_errors(&found)
}
