//! What each backend lends to the queries written once (`shared`): how it binds a value (its
//! time encoding: epoch milliseconds on SQLite, `timestamptz` on PostgreSQL), which of its pools
//! runs reads and which runs writes, and the few statements whose text differs. The SQL in
//! `shared` uses `$N` placeholders, which SQLite reads as well as PostgreSQL does.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::rows::ReadRow;

/// A value bound to a query written once.
#[derive(Debug, Clone, Copy)]
pub(super) enum Bind<'a> {
    Text(&'a str),
    Int(i64),
    Time(DateTime<Utc>),
}

/// A backend as `shared` sees it.
pub(super) trait Driver {
    type Row: ReadRow;
    /// The budget row and the database's clock in microseconds as `now_us` (`budget_row` reads it).
    const BUDGET_READ: &'static str;
    /// The status page's chart: `minute`, `n` for `$2` minutes from `$1`.
    const FINISHED_PER_MINUTE: &'static str;
    /// The status page's error table (`page_types::recent_errors` reads it): `$1` since, `$2`
    /// rows scanned, `$3` groups.
    const RECENT_ERRORS: &'static str;
    /// `id` of the rows among `$1` (a JSON array of row ids) that `$2` holds and that are still
    /// due at `$3` (idle since `$4`): `shared::still_due_among!` over the backend's JSON reader.
    const STILL_DUE: &'static str;

    /// Every row of a read, on the read pool.
    async fn read_all(&self, sql: &'static str, binds: &[Bind<'_>]) -> sqlx::Result<Vec<Self::Row>>;
    /// The first row of a read, if there is one, on the read pool.
    async fn read_optional(&self, sql: &'static str, binds: &[Bind<'_>]) -> sqlx::Result<Option<Self::Row>>;
    /// One statement on the write pool (SQLite: its one writer); the rows it changed.
    async fn write(&self, sql: &'static str, binds: &[Bind<'_>]) -> sqlx::Result<u64>;
    /// The earliest due moment among open rows; with `leases`, a leased row counts as due when
    /// its lease runs out (a crashed replica's rows). Each backend writes its own: the due
    /// expressions read the application's values, which the two store differently.
    async fn earliest_due(&self, stale_after: Duration, leases: bool) -> anyhow::Result<Option<DateTime<Utc>>>;
}

/// `sql` with `binds` bound in order, each time through the backend's `time` encoding.
pub(super) fn bound<'q, DB, T>(
    sql: &'static str,
    binds: &[Bind<'q>],
    time: fn(DateTime<Utc>) -> T,
) -> sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments>
where
    DB: sqlx::Database,
    T: 'q + Send,
    for<'t> &'q str: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> i64: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> T: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    binds.iter().fold(sqlx::query(sql), |query, value| match *value {
        Bind::Text(text) => query.bind(text),
        Bind::Int(n) => query.bind(n),
        Bind::Time(t) => query.bind(time(t)),
    })
}
