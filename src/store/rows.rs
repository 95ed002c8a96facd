//! Row mapping, written once for both backends. Each backend says how it reads a text, an
//! integer and a time column (`ReadRow`); how a whole row becomes a `SessionRow` or an
//! `InstanceRow` is decided here. Reading never panics: a value of the wrong type is an error that
//! names the column.

use anyhow::Context;
use chrono::{DateTime, Utc};

use super::types::{InstanceBeat, InstanceRow, State, StatusReport};
use crate::editor::Editor;
use crate::outcome::{DeletionOutcome, OutcomeCounts};

/// How one backend reads the three kinds of column the tables hold.
pub(super) trait ReadRow {
    fn text(&self, column: &str) -> anyhow::Result<Option<String>>;
    fn int(&self, column: &str) -> anyhow::Result<Option<i64>>;
    fn time(&self, column: &str) -> anyhow::Result<Option<DateTime<Utc>>>;

    fn required_text(&self, column: &str) -> anyhow::Result<String> {
        self.text(column)?.with_context(|| format!("{column} is NULL"))
    }

    fn required_int(&self, column: &str) -> anyhow::Result<i64> {
        self.int(column)?.with_context(|| format!("{column} is NULL"))
    }

    fn required_time(&self, column: &str) -> anyhow::Result<DateTime<Utc>> {
        self.time(column)?.with_context(|| format!("{column} is NULL"))
    }
}

/// A text column of either backend's row.
pub(super) fn text_of<R: sqlx::Row>(row: &R, column: &str) -> anyhow::Result<Option<String>>
where
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    row.try_get(column)
        .with_context(|| format!("Failed to read {column} as text"))
}

/// A column's value as it came, or `None` for NULL: where a backend decodes a time itself.
pub(super) fn raw_of<'r, R: sqlx::Row>(
    row: &'r R,
    column: &str,
) -> anyhow::Result<Option<<R::Database as sqlx::Database>::ValueRef<'r>>>
where
    for<'c> &'c str: sqlx::ColumnIndex<R>,
{
    use sqlx::ValueRef;
    let raw = row
        .try_get_raw(column)
        .with_context(|| format!("Failed to read {column}"))?;
    Ok((!raw.is_null()).then_some(raw))
}

/// An integer column that must fit 32 bits.
fn int32(value: Option<i64>, column: &str) -> anyhow::Result<Option<i32>> {
    value
        .map(|v| i32::try_from(v).with_context(|| format!("{column} = {v} does not fit 32 bits")))
        .transpose()
}

#[cfg(feature = "test-support")]
pub(super) fn session_row(row: &impl ReadRow) -> anyhow::Result<super::types::SessionRow> {
    use super::types::{RowId, SessionRow};
    let state = row.required_text("state")?;
    let editor = row.required_text("editor")?;
    Ok(SessionRow {
        id: RowId(row.required_int("id")?),
        session_id: row.required_text("session_id")?,
        editor: Editor::parse(&editor).with_context(|| format!("editor {editor:?} is not a known editor"))?,
        state: State::parse(&state).with_context(|| format!("state {state:?} is not a known state"))?,
        delete_after: row.time("delete_after")?,
        last_activity_at: row.time("last_activity_at")?,
        attempts: int32(Some(row.required_int("attempts")?), "attempts")?.unwrap_or_default(),
        next_attempt_at: row.time("next_attempt_at")?,
        lease_owner: row.text("lease_owner")?,
        lease_expires_at: row.time("lease_expires_at")?,
        taken_over_from: row.text("taken_over_from")?,
        last_http_status: int32(row.int("last_http_status")?, "last_http_status")?,
        last_api_code: row.int("last_api_code")?,
        last_error: row.text("last_error")?,
        first_attempt_at: row.time("first_attempt_at")?,
        last_attempt_at: row.time("last_attempt_at")?,
        finished_at: row.time("finished_at")?,
    })
}

pub(super) fn instance_row(row: &impl ReadRow) -> anyhow::Result<InstanceRow> {
    let mut counts = Ok(());
    let outcome_counts = OutcomeCounts::from_fn(|outcome: DeletionOutcome| {
        row.required_int(outcome.label()).unwrap_or_else(|e| {
            counts = Err(e);
            0
        })
    });
    counts?;
    Ok(InstanceRow {
        beat: InstanceBeat {
            instance_id: row.required_text("instance_id")?,
            host: row.required_text("host")?,
            pid: int32(Some(row.required_int("pid")?), "pid")?.unwrap_or_default(),
            version: row.required_text("version")?,
            started_at: row.required_time("started_at")?,
            in_flight: int32(Some(row.required_int("in_flight")?), "in_flight")?.unwrap_or_default(),
            rate_limit: int32(Some(row.required_int("rate_limit")?), "rate_limit")?.unwrap_or_default(),
            counts: outcome_counts,
        },
        heartbeat_at: row.required_time("heartbeat_at")?,
    })
}

/// `status` from its three reads: counts per editor and state (`editor`, `state`, `n`), the
/// summary row (`in_flight`, `last_success`) and the latest error, if any (`last_attempt_at`,
/// `last_error`). A state the daemon does not know (the schema's CHECK forbids it) is left out
/// rather than failing; an unknown editor counts in the totals only.
pub(super) fn status_report(
    counts: &[impl ReadRow],
    summary: &impl ReadRow,
    last_error: Option<&impl ReadRow>,
    earliest_due: Option<DateTime<Utc>>,
) -> anyhow::Result<StatusReport> {
    let mut report = StatusReport {
        in_flight: summary.int("in_flight")?.unwrap_or(0),
        last_success: summary.time("last_success")?,
        earliest_due,
        ..StatusReport::default()
    };
    for row in counts {
        if let Some(state) = row.text("state")?.as_deref().and_then(State::parse) {
            let n = row.int("n")?.unwrap_or(0);
            *report.counts.entry(state).or_default() += n;
            if let Some(editor) = row.text("editor")?.as_deref().and_then(Editor::parse) {
                *report.editors.entry(editor).or_default().entry(state).or_default() += n;
            }
        }
    }
    if let Some(row) = last_error {
        report.last_error = Some((
            row.required_time("last_attempt_at")?,
            row.text("last_error")?.unwrap_or_default(),
        ));
    }
    Ok(report)
}

/// The budget row, read with the database's clock as `now_us` (booleans as
/// integers: PostgreSQL's are selected `::int`).
pub(super) fn budget_row(row: &impl ReadRow) -> anyhow::Result<super::budget::BudgetRow> {
    Ok(super::budget::BudgetRow {
        now_us: row.required_int("now_us")?,
        version: row.required_int("version")?,
        rate_per_second: row.required_int("rate_per_second")?,
        burst: row.required_int("burst")?,
        tat_us: row.required_int("tat_us")?,
        minute_start_us: row.required_int("minute_start_us")?,
        minute_reserved: row.required_int("minute_reserved")?,
        last_minute_reserved: row.required_int("last_minute_reserved")?,
        paused: row.required_int("paused")? != 0,
        pause_reason: row.text("pause_reason")?,
        paused_since_us: row.int("paused_since_us")?,
        paused_until_us: row.int("paused_until_us")?,
        pause_probe: row.required_int("pause_probe")? != 0,
        paused_by: row.text("paused_by")?,
        pause_http_status: row.int("pause_http_status")?,
        pause_api_code: row.int("pause_api_code")?,
        probe_owner: row.text("probe_owner")?,
        probe_until_us: row.int("probe_until_us")?,
        read_at: None,
    })
}

/// Binds the budget row's changeable columns in the order both backends' UPDATE names them
/// (`rate_per_second` ... `probe_until_us`, 16 values).
pub(super) fn bind_budget<'q, DB>(
    query: sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments>,
    row: &super::budget::BudgetRow,
) -> sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments>
where
    DB: sqlx::Database,
    for<'t> i64: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> bool: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> Option<i64>: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> Option<String>: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    query
        .bind(row.rate_per_second)
        .bind(row.burst)
        .bind(row.tat_us)
        .bind(row.minute_start_us)
        .bind(row.minute_reserved)
        .bind(row.last_minute_reserved)
        .bind(row.paused)
        .bind(row.pause_reason.clone())
        .bind(row.paused_since_us)
        .bind(row.paused_until_us)
        .bind(row.pause_probe)
        .bind(row.paused_by.clone())
        .bind(row.pause_http_status)
        .bind(row.pause_api_code)
        .bind(row.probe_owner.clone())
        .bind(row.probe_until_us)
}
