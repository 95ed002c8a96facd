//! PostgreSQL backend: for production and several replicas on one table. Claims take
//! `FOR UPDATE SKIP LOCKED`, so replicas never wait on each other's rows; outcome batches are one
//! `UPDATE ... FROM UNNEST(...)` round trip; migrations hold sqlx's advisory lock, so replicas
//! starting together apply them once.

mod budget;
mod claims;
mod maintenance;
mod operator;
mod outcomes;
mod page;
mod reports;

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Row};

use super::driver::{Bind, Driver, bound};
use super::rows::{self, ReadRow};
use super::types::{self as types};
use super::types::{Claimed, Renewal, RowId, SetAside};
use super::{ClaimRequest, ClaimedRow, OutcomeWrite, Requeue, chrono_duration};
use crate::editor::Editor;

/// The two outcome writers, heartbeat, housekeeping and spares (claims have their own pool).
const MAX_CONNECTIONS: u32 = 6;
/// Outcomes per UPDATE: a batch of the default size is one statement; larger ones are split so
/// one statement's arrays stay moderate. (Until sqlx's sockets had TCP_NODELAY again, see
/// `vendor/README.md`, chunks of 96 kept each message inside one TLS record, because a second
/// record waited ~40 ms for the server's delayed ACK.)
const OUTCOME_CHUNK: usize = 1024;
/// How long a query waits for a free connection before the outage is reported.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest any statement of the daemon may run (server-side `statement_timeout`): below the
/// default `shutdown.grace`, so no single statement can hold the daemon past it.
const STATEMENT_TIMEOUT: &str = "10s";
/// Longest a statement waits for a lock the application holds (`lock_timeout`), e.g. a
/// `LOCK TABLE` or `VACUUM FULL`: the claim then fails and is retried, reported once.
const LOCK_TIMEOUT: &str = "5s";
/// A pooled connection idle this long is pinged before it is handed out.
const PING_WHEN_IDLE_FOR: Duration = Duration::from_secs(1);
/// Longest migrations wait for a lock before giving up and naming who holds it.
const MIGRATION_LOCK_TIMEOUT: &str = "10s";

#[derive(Clone, Debug)]
pub struct PgStore {
    /// For migrations, which get a connection of their own with other timeouts.
    options: std::sync::Arc<PgConnectOptions>,
    pool: PgPool,
    /// Claims only, committed without waiting for the WAL flush (`synchronous_commit = off`):
    /// the feeder waits on each claim, and a claim lost to a server crash only frees its rows
    /// again. Outcomes stay on `pool`, durable as configured.
    claims: PgPool,
}

impl PgStore {
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let base = PgConnectOptions::from_str(url).context("Failed to parse the PostgreSQL URL")?;
        let options = base
            .clone()
            .options([("statement_timeout", STATEMENT_TIMEOUT), ("lock_timeout", LOCK_TIMEOUT)]);
        let pool = |connections| {
            PgPoolOptions::new()
                .max_connections(connections)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                // sqlx's own test pings every connection it hands out: a round trip to the
                // server before every statement of a busy daemon. Only a connection idle for a
                // while may have lost its server (a restart, a proxy's idle cut) unnoticed; one
                // in use a moment ago that broke since fails its statement, which is retried.
                .test_before_acquire(false)
                .before_acquire(|conn, meta| {
                    Box::pin(async move {
                        if meta.idle_for < PING_WHEN_IDLE_FOR {
                            return Ok(true);
                        }
                        Ok(sqlx::Connection::ping(conn).await.is_ok())
                    })
                })
                .after_release(|conn, _| Box::pin(async move { Ok(crate::store::reusable(conn)) }))
        };
        // Both at once: a connection's start-up is several round trips (more over TLS).
        let (claims, pool) = tokio::try_join!(
            pool(1).connect_with(options.clone().options([("synchronous_commit", "off")])),
            pool(MAX_CONNECTIONS).connect_with(options),
        )
        .context("Failed to connect to PostgreSQL")?;
        Ok(Self {
            options: std::sync::Arc::new(base),
            pool,
            claims,
        })
    }

    /// On a connection of its own: no statement timeout (building an index on a big table may
    /// take minutes), but a bounded wait for locks. When the application holds one (a long
    /// transaction, `LOCK TABLE`), the error names who holds it instead of hanging.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        // A pool of one rather than a bare connection: sqlx's migrator over `&mut PgConnection`
        // makes a future that is not `Send`.
        let conn = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(
                PgConnectOptions::clone(&self.options)
                    .options([("statement_timeout", "0"), ("lock_timeout", MIGRATION_LOCK_TIMEOUT)]),
            )
            .await
            .context("Failed to connect to PostgreSQL for migrations")?;
        let migrated = sqlx::migrate!("migrations/postgres").run(&conn).await;
        let result = match migrated {
            Ok(()) => Ok(()),
            Err(e) if format!("{e:?}").contains("55P03") || e.to_string().contains("lock timeout") => {
                let holders = self.lock_holders().await.unwrap_or_else(|e| format!("unknown ({e:#})"));
                Err(anyhow::Error::new(crate::store::MigrationBlocked(format!(
                    "migrations waited {MIGRATION_LOCK_TIMEOUT} for a lock on reaper_sessions and gave up; held by {holders}"
                ))))
            }
            Err(e) => Err(anyhow::Error::new(e).context("Failed to migrate the PostgreSQL database")),
        };
        conn.close().await;
        result
    }

    /// Who holds locks on the daemon's tables (or advisory locks) right now: pid, application,
    /// state and transaction age. Never the query text, which may carry session ids.
    async fn lock_holders(&self) -> anyhow::Result<String> {
        let rows = sqlx::query(
            "SELECT DISTINCT a.pid, COALESCE(NULLIF(a.application_name, ''), '?') AS app, COALESCE(a.state, '?') AS state,
                    COALESCE(EXTRACT(EPOCH FROM now() - a.xact_start)::bigint, 0) AS xact_s
               FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
              WHERE l.granted AND l.pid <> pg_backend_pid()
                AND (l.relation IN (to_regclass('reaper_sessions'), to_regclass('reaper_instances'))
                     OR l.locktype = 'advisory')",
        )
        .fetch_all(&self.pool)
        .await?;
        if rows.is_empty() {
            return Ok("nobody any more".to_owned());
        }
        let holders: anyhow::Result<Vec<String>> = rows
            .iter()
            .map(|row| {
                Ok(format!(
                    "pid {} ({}, {}, transaction open {} s)",
                    row.required_int("pid")?,
                    row.required_text("app")?,
                    row.required_text("state")?,
                    row.required_int("xact_s")?
                ))
            })
            .collect();
        Ok(holders?.join(", "))
    }

    pub async fn close(&self) {
        self.pool.close().await;
        self.claims.close().await;
    }

    pub async fn analyze(&self) -> anyhow::Result<()> {
        sqlx::query("ANALYZE reaper_sessions")
            .execute(&self.pool)
            .await
            .context("Failed to analyze reaper_sessions")?;
        Ok(())
    }
}

impl Driver for PgStore {
    type Row = sqlx::postgres::PgRow;
    const BUDGET_READ: &'static str = budget::READ;
    const FINISHED_PER_MINUTE: &'static str = page::FINISHED_PER_MINUTE;
    const RECENT_ERRORS: &'static str = page::RECENT_ERRORS;
    const STILL_DUE: &'static str = super::shared::still_due_among!(
        "jsonb_array_elements_text($1::jsonb) AS asked(value)",
        "asked.value::bigint"
    );

    async fn read_all(&self, sql: &'static str, binds: &[Bind<'_>]) -> sqlx::Result<Vec<Self::Row>> {
        bound::<sqlx::Postgres, _>(sql, binds, std::convert::identity)
            .fetch_all(&self.pool)
            .await
    }

    async fn read_optional(&self, sql: &'static str, binds: &[Bind<'_>]) -> sqlx::Result<Option<Self::Row>> {
        bound::<sqlx::Postgres, _>(sql, binds, std::convert::identity)
            .fetch_optional(&self.pool)
            .await
    }

    async fn write(&self, sql: &'static str, binds: &[Bind<'_>]) -> sqlx::Result<u64> {
        let done = bound::<sqlx::Postgres, _>(sql, binds, std::convert::identity)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn earliest_due(&self, stale_after: Duration, leases: bool) -> anyhow::Result<Option<DateTime<Utc>>> {
        self.earliest_open_due(stale_after, leases).await
    }
}

impl ReadRow for sqlx::postgres::PgRow {
    fn text(&self, column: &str) -> anyhow::Result<Option<String>> {
        rows::text_of(self, column)
    }

    fn int(&self, column: &str) -> anyhow::Result<Option<i64>> {
        // INTEGER columns decode as i32 only; BIGINT ones as i64.
        match self.try_get::<Option<i64>, _>(column) {
            Ok(value) => Ok(value),
            Err(_) => Ok(self
                .try_get::<Option<i32>, _>(column)
                .with_context(|| format!("Failed to read {column} as an integer"))?
                .map(i64::from)),
        }
    }

    /// Read from the wire format rather than through sqlx's chrono decoder, which panics on
    /// `infinity` and `-infinity` (they arrive as i64::MAX / i64::MIN microseconds): those
    /// become chrono's latest and earliest times.
    fn time(&self, column: &str) -> anyhow::Result<Option<DateTime<Utc>>> {
        let Some(raw) = rows::raw_of(self, column)? else {
            return Ok(None);
        };
        anyhow::ensure!(
            raw.format() == sqlx::postgres::PgValueFormat::Binary,
            "{column} came in text format (this store only makes prepared queries)"
        );
        let bytes: [u8; 8] = raw
            .as_bytes()
            .map_err(|e| anyhow::anyhow!("Failed to read {column}: {e}"))?
            .try_into()
            .with_context(|| format!("{column} is not a timestamp"))?;
        Ok(Some(from_pg_micros(i64::from_be_bytes(bytes))))
    }
}

/// PostgreSQL's binary timestamp: microseconds since 2000-01-01 UTC; the infinities saturate.
fn from_pg_micros(micros: i64) -> DateTime<Utc> {
    const PG_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;
    match micros {
        i64::MAX => DateTime::<Utc>::MAX_UTC,
        i64::MIN => DateTime::<Utc>::MIN_UTC,
        _ => micros
            .checked_add(PG_EPOCH_UNIX_MICROS)
            .and_then(DateTime::from_timestamp_micros)
            .unwrap_or(if micros < 0 {
                DateTime::<Utc>::MIN_UTC
            } else {
                DateTime::<Utc>::MAX_UTC
            }),
    }
}
