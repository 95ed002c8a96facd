//! SQLite backend: the embedded default. WAL mode and a busy timeout let the application and
//! the daemon write the same file; claims run in `BEGIN IMMEDIATE` so two daemons never lease
//! the same row. Times are Unix epoch milliseconds.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Row, SqlitePool};

use super::{
    ClaimRequest, ClaimedRow, InstanceBeat, InstanceRow, OutcomeWrite, Requeue, SessionRow, State, StatusReport,
    chrono_duration,
};

/// How long a statement waits for another writer before failing with "database is locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections for reads (status, next due, housekeeping); writes have their own one.
const READ_CONNECTIONS: u32 = 2;
/// Outcomes per UPDATE statement (nine bound values each, far below SQLite's variable limit).
const OUTCOME_CHUNK: usize = 500;
/// Rows per multi-row INSERT (two bound values each, far below SQLite's variable limit).
const ENQUEUE_CHUNK: usize = 2_000;

#[derive(Clone, Debug)]
pub struct SqliteStore {
    /// Reads: status, the next due time, listings.
    pool: SqlitePool,
    /// Every write goes through this one connection. SQLite lets one connection write at a time:
    /// a second one sleeps in SQLite's busy handler (1, 2, 5 ms and more), and in WAL mode a
    /// connection drops its whole page cache whenever another one has written. One writing
    /// connection queues this process's writers without sleeping and keeps its cache warm; other
    /// processes (the application) still meet the busy timeout.
    writer: SqlitePool,
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn from_ms(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

impl SqliteStore {
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .context("Failed to parse the SQLite URL")?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL is durable against process crashes in WAL mode, which is what we face.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = |connections| {
            SqlitePoolOptions::new()
                .max_connections(connections)
                .acquire_timeout(BUSY_TIMEOUT + Duration::from_secs(5))
                .after_release(|conn, _| Box::pin(async move { Ok(super::reusable(conn)) }))
        };
        // The writer first: it creates the file and switches it to WAL.
        let writer = pool(1)
            .connect_with(options.clone())
            .await
            .context("Failed to open the SQLite database")?;
        // An in-memory database exists once per connection: there, the writer serves reads too.
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let pool = if in_memory {
            writer.clone()
        } else {
            pool(READ_CONNECTIONS)
                .connect_with(options)
                .await
                .context("Failed to open the SQLite database")?
        };
        Ok(Self { pool, writer })
    }

    pub async fn migrate(&self) -> anyhow::Result<()> {
        sqlx::migrate!("migrations/sqlite")
            .run(&self.writer)
            .await
            .context("Failed to migrate the SQLite database")
    }

    pub async fn close(&self) {
        self.pool.close().await;
        self.writer.close().await;
    }

    pub async fn ping(&self) -> anyhow::Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .context("SQLite is not answering")?;
        Ok(())
    }

    /// Locks: the whole database for writing (`BEGIN IMMEDIATE`), for one short statement.
    pub async fn claim(&self, r: &ClaimRequest<'_>) -> anyhow::Result<Vec<ClaimedRow>> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .context("Failed to begin a claim")?;
        // The picked rows come back as one JSON array rather than as one result row each: sqlx
        // hands every row across threads on its own, which cost more than picking it.
        let picked: String = sqlx::query_scalar(
            // A bare `LIMIT ?` makes SQLite re-prepare the statement whenever the bound limit
            // changes (it plans small constant limits specially); the CAST keeps one plan.
            "SELECT json_group_array(json_array(id, CAST(session_id AS TEXT), attempts, lease_owner IS NOT NULL))
               FROM reaper_sessions
              WHERE id IN (
                    -- Free rows, through the index of rows nobody holds.
                    SELECT id FROM (
                        SELECT id FROM reaper_sessions
                         WHERE state IN ('pending', 'retrying') AND lease_owner IS NULL
                           AND ((state = 'pending' AND (delete_after <= ?3 OR last_activity_at <= ?4))
                             OR (state = 'retrying' AND next_attempt_at <= ?3))
                         ORDER BY id
                         LIMIT CAST(?5 AS INTEGER))
                    UNION ALL
                    -- Someone else's expired leases (a crashed replica), by a range of expiry.
                    SELECT id FROM (
                        SELECT id FROM reaper_sessions
                         WHERE lease_owner IS NOT NULL AND lease_expires_at <= ?2 AND lease_owner <> ?1
                           AND state IN ('pending', 'retrying')
                           AND ((state = 'pending' AND (delete_after <= ?3 OR last_activity_at <= ?4))
                             OR (state = 'retrying' AND next_attempt_at <= ?3))
                         LIMIT CAST(?5 AS INTEGER))
                    ORDER BY id
                    LIMIT CAST(?5 AS INTEGER))",
        )
        .bind(r.owner)
        .bind(ms(r.now))
        .bind(ms(r.due_by))
        .bind(ms(r.due_by - chrono_duration(r.stale_after)))
        .bind(i64::from(r.limit))
        .fetch_one(&mut *tx)
        .await
        .context("Failed to pick due sessions")?;
        let picked: Vec<(i64, String, i32, i64)> =
            serde_json::from_str(&picked).context("Failed to read the picked sessions")?;
        if !picked.is_empty() {
            let ids = serde_json::to_string(&picked.iter().map(|row| row.0).collect::<Vec<_>>())?;
            // Still inside the same write transaction: nobody else can have taken them since.
            sqlx::query(
                "UPDATE reaper_sessions
                    SET lease_owner = ?1, lease_expires_at = ?2, taken_over_from = lease_owner
                  WHERE id IN (SELECT value FROM json_each(?3))",
            )
            .bind(r.owner)
            .bind(ms(r.now + chrono_duration(r.lease)))
            .bind(ids)
            .execute(&mut *tx)
            .await
            .context("Failed to lease due sessions")?;
        }
        tx.commit().await.context("Failed to commit a claim")?;
        let mut claimed: Vec<ClaimedRow> = picked
            .into_iter()
            .map(|(id, session_id, attempts, leased)| ClaimedRow {
                id,
                session_id,
                attempts,
                taken_over: leased != 0,
            })
            .collect();
        claimed.sort_by_key(|row| row.id);
        Ok(claimed)
    }

    /// Locks: the database for writing, for one transaction per batch.
    pub async fn write_outcomes(&self, owner: &str, outcomes: &[OutcomeWrite]) -> anyhow::Result<u64> {
        let (finished, released) = super::split_outcomes(outcomes);
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .context("Failed to begin an outcome batch")?;
        let mut written = 0;
        // One statement per chunk, not per row: the statement count is what costs here.
        for chunk in finished.chunks(OUTCOME_CHUNK) {
            let mut update = QueryBuilder::new(
                "WITH u (id, state, charge, http_status, api_code, error, attempted_at, finished_at, next_attempt_at) AS (",
            );
            update.push_values(chunk, |mut row, f| {
                row.push_bind(f.id)
                    .push_bind(f.state.as_str())
                    .push_bind(i32::from(f.charge))
                    .push_bind(f.http_status)
                    .push_bind(f.api_code)
                    .push_bind(f.error)
                    .push_bind(f.attempted_at.map(ms))
                    .push_bind(f.finished_at.map(ms))
                    .push_bind(f.next_attempt_at.map(ms));
            });
            update.push(
                ") UPDATE reaper_sessions
                    SET state = u.state, attempts = attempts + u.charge, last_http_status = u.http_status,
                        last_api_code = u.api_code, last_error = u.error,
                        first_attempt_at = COALESCE(first_attempt_at, u.attempted_at),
                        last_attempt_at = COALESCE(u.attempted_at, last_attempt_at),
                        finished_at = u.finished_at, next_attempt_at = u.next_attempt_at,
                        lease_owner = NULL, lease_expires_at = NULL
                   FROM u
                  WHERE reaper_sessions.id = u.id AND reaper_sessions.lease_owner = ",
            );
            update.push_bind(owner);
            update.push(" AND reaper_sessions.state IN ('pending', 'retrying')");
            let done = update
                .build()
                .execute(&mut *tx)
                .await
                .context("Failed to write outcomes")?;
            written += done.rows_affected();
        }
        for chunk in released.chunks(OUTCOME_CHUNK) {
            let mut release = QueryBuilder::new(
                "UPDATE reaper_sessions SET lease_owner = NULL, lease_expires_at = NULL WHERE lease_owner = ",
            );
            release.push_bind(owner).push(" AND id IN (");
            let mut ids = release.separated(", ");
            for id in chunk {
                ids.push_bind(*id);
            }
            release.push(")");
            let done = release
                .build()
                .execute(&mut *tx)
                .await
                .context("Failed to release leases")?;
            written += done.rows_affected();
        }
        tx.commit().await.context("Failed to commit an outcome batch")?;
        Ok(written)
    }

    /// Locks: the database for writing; renews the listed rows still leased to `owner`.
    pub async fn renew_leases(&self, owner: &str, ids: &[i64], until: DateTime<Utc>) -> anyhow::Result<u64> {
        let done = sqlx::query(
            "UPDATE reaper_sessions SET lease_expires_at = ?1
              WHERE id IN (SELECT value FROM json_each(?3))
                AND lease_owner = ?2 AND state IN ('pending', 'retrying')",
        )
        .bind(ms(until))
        .bind(owner)
        .bind(serde_json::to_string(ids)?)
        .execute(&self.writer)
        .await
        .context("Failed to renew leases")?;
        Ok(done.rows_affected())
    }

    pub async fn enqueue(&self, ids: &[String], now: DateTime<Utc>) -> anyhow::Result<u64> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .context("Failed to begin an enqueue")?;
        let mut inserted = 0;
        for chunk in ids.chunks(ENQUEUE_CHUNK) {
            let mut insert = QueryBuilder::new("INSERT INTO reaper_sessions (session_id, delete_after) ");
            insert.push_values(chunk, |mut row, id| {
                row.push_bind(id.as_str()).push_bind(ms(now));
            });
            insert.push(" ON CONFLICT (session_id) DO NOTHING");
            let done = insert
                .build()
                .execute(&mut *tx)
                .await
                .context("Failed to insert session ids")?;
            inserted += done.rows_affected();
        }
        tx.commit().await.context("Failed to commit the enqueue")?;
        Ok(inserted)
    }

    pub async fn status(&self, now: DateTime<Utc>, stale_after: Duration) -> anyhow::Result<StatusReport> {
        let mut report = StatusReport::default();
        let counts = sqlx::query("SELECT state, COUNT(*) AS n FROM reaper_sessions GROUP BY state")
            .fetch_all(&self.pool)
            .await
            .context("Failed to count sessions")?;
        for row in counts {
            if let Some(state) = State::parse(row.get("state")) {
                report.counts.insert(state, row.get("n"));
            }
        }
        let row = sqlx::query(
            "SELECT
               (SELECT COUNT(*) FROM reaper_sessions
                 WHERE lease_owner IS NOT NULL AND lease_expires_at > ?1
                   AND state IN ('pending', 'retrying')) AS in_flight,
               (SELECT MAX(finished_at) FROM reaper_sessions
                 WHERE state IN ('deleted', 'gone')) AS last_success",
        )
        .bind(ms(now))
        .fetch_one(&self.pool)
        .await
        .context("Failed to read the status")?;
        report.in_flight = row.get("in_flight");
        report.last_success = row.get::<Option<i64>, _>("last_success").map(from_ms);
        report.earliest_due = self.earliest_due(stale_after, false).await?;
        let error = sqlx::query(
            "SELECT last_attempt_at, last_error FROM reaper_sessions
              WHERE last_error IS NOT NULL AND last_attempt_at IS NOT NULL
              ORDER BY last_attempt_at DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await
        .context("Failed to read the last error")?;
        report.last_error = error.map(|row| (from_ms(row.get("last_attempt_at")), row.get("last_error")));
        Ok(report)
    }

    pub async fn next_due(&self, stale_after: Duration) -> anyhow::Result<Option<DateTime<Utc>>> {
        self.earliest_due(stale_after, true).await
    }

    /// Earliest due moment among open rows; with `leases`, a leased row counts as due when its
    /// lease runs out (a crashed replica's rows).
    async fn earliest_due(&self, stale_after: Duration, leases: bool) -> anyhow::Result<Option<DateTime<Utc>>> {
        let stale_ms = i64::try_from(stale_after.as_millis()).unwrap_or(i64::MAX / 2);
        let due: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(CASE
                          WHEN ?2 = 1 AND lease_owner IS NOT NULL THEN MAX(lease_expires_at, due)
                          ELSE due END)
               FROM (SELECT lease_owner, lease_expires_at,
                            CASE state
                              WHEN 'retrying' THEN next_attempt_at
                              ELSE MIN(IFNULL(delete_after, 9000000000000000000),
                                       IFNULL(last_activity_at + ?1, 9000000000000000000)) END AS due
                       FROM (SELECT * FROM reaper_sessions
                              WHERE state IN ('pending', 'retrying') AND lease_owner IS NULL
                             UNION ALL
                             SELECT * FROM reaper_sessions
                              WHERE lease_owner IS NOT NULL AND state IN ('pending', 'retrying')))",
        )
        .bind(stale_ms)
        .bind(i32::from(leases))
        .fetch_one(&self.pool)
        .await
        .context("Failed to find the next due session")?;
        Ok(due.filter(|d| *d < 9_000_000_000_000_000_000).map(from_ms))
    }

    pub async fn rows(&self) -> anyhow::Result<Vec<SessionRow>> {
        let rows = sqlx::query("SELECT * FROM reaper_sessions ORDER BY id")
            .fetch_all(&self.pool)
            .await
            .context("Failed to list sessions")?;
        let time = |row: &sqlx::sqlite::SqliteRow, column: &str| row.get::<Option<i64>, _>(column).map(from_ms);
        Ok(rows
            .iter()
            .map(|row| SessionRow {
                id: row.get("id"),
                session_id: row.get("session_id"),
                state: State::parse(row.get("state")).unwrap_or(State::Failed),
                delete_after: time(row, "delete_after"),
                last_activity_at: time(row, "last_activity_at"),
                attempts: row.get("attempts"),
                next_attempt_at: time(row, "next_attempt_at"),
                lease_owner: row.get("lease_owner"),
                lease_expires_at: time(row, "lease_expires_at"),
                taken_over_from: row.get("taken_over_from"),
                last_http_status: row.get("last_http_status"),
                last_api_code: row.get("last_api_code"),
                last_error: row.get("last_error"),
                first_attempt_at: time(row, "first_attempt_at"),
                last_attempt_at: time(row, "last_attempt_at"),
                finished_at: time(row, "finished_at"),
            })
            .collect())
    }

    pub async fn touch(&self, session_id: &str, at: DateTime<Utc>) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO reaper_sessions (session_id, delete_after, last_activity_at) VALUES (?1, NULL, ?2)
             ON CONFLICT (session_id) DO UPDATE SET last_activity_at = excluded.last_activity_at",
        )
        .bind(session_id)
        .bind(ms(at))
        .execute(&self.writer)
        .await
        .context("Failed to record session activity")?;
        Ok(())
    }

    pub async fn beat(
        &self,
        beat: &InstanceBeat,
        now: DateTime<Utc>,
        live_within: Duration,
        forget_after: Duration,
    ) -> anyhow::Result<i64> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .context("Failed to begin a heartbeat")?;
        let [deleted, gone, failed, invalid, retry_scheduled, released] = beat.counts;
        sqlx::query(
            "INSERT INTO reaper_instances (instance_id, host, pid, version, started_at, heartbeat_at, in_flight,
                                           rate_limit, deleted, gone, failed, invalid, retry_scheduled, released)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
             ON CONFLICT (instance_id) DO UPDATE SET
                 heartbeat_at = excluded.heartbeat_at, in_flight = excluded.in_flight,
                 rate_limit = excluded.rate_limit, deleted = excluded.deleted, gone = excluded.gone,
                 failed = excluded.failed, invalid = excluded.invalid,
                 retry_scheduled = excluded.retry_scheduled, released = excluded.released",
        )
        .bind(&beat.instance_id)
        .bind(&beat.host)
        .bind(beat.pid)
        .bind(&beat.version)
        .bind(ms(beat.started_at))
        .bind(ms(now))
        .bind(beat.in_flight)
        .bind(beat.rate_limit)
        .bind(deleted)
        .bind(gone)
        .bind(failed)
        .bind(invalid)
        .bind(retry_scheduled)
        .bind(released)
        .execute(&mut *tx)
        .await
        .context("Failed to record the heartbeat")?;
        sqlx::query("DELETE FROM reaper_instances WHERE heartbeat_at < ?1")
            .bind(ms(now - chrono_duration(forget_after)))
            .execute(&mut *tx)
            .await
            .context("Failed to forget dead instances")?;
        let live: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM reaper_instances WHERE heartbeat_at >= ?1")
            .bind(ms(now - chrono_duration(live_within)))
            .fetch_one(&mut *tx)
            .await
            .context("Failed to count live instances")?;
        tx.commit().await.context("Failed to commit the heartbeat")?;
        Ok(live)
    }

    pub async fn remove_instance(&self, instance_id: &str) -> anyhow::Result<()> {
        sqlx::query("DELETE FROM reaper_instances WHERE instance_id = ?1")
            .bind(instance_id)
            .execute(&self.writer)
            .await
            .context("Failed to remove the instance")?;
        Ok(())
    }

    pub async fn instances(&self) -> anyhow::Result<Vec<InstanceRow>> {
        let rows = sqlx::query("SELECT * FROM reaper_instances ORDER BY started_at")
            .fetch_all(&self.pool)
            .await
            .context("Failed to list instances")?;
        Ok(rows
            .iter()
            .map(|row| InstanceRow {
                beat: InstanceBeat {
                    instance_id: row.get("instance_id"),
                    host: row.get("host"),
                    pid: row.get("pid"),
                    version: row.get("version"),
                    started_at: from_ms(row.get("started_at")),
                    in_flight: row.get("in_flight"),
                    rate_limit: row.get("rate_limit"),
                    counts: super::INSTANCE_COUNT_COLUMNS.map(|column| row.get(column)),
                },
                heartbeat_at: from_ms(row.get("heartbeat_at")),
            })
            .collect())
    }

    pub async fn requeue(&self, which: Requeue<'_>, now: DateTime<Utc>) -> anyhow::Result<u64> {
        const SET: &str = "UPDATE reaper_sessions
            SET state = 'pending', attempts = 0, delete_after = ?1, next_attempt_at = NULL, finished_at = NULL";
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .context("Failed to begin a requeue")?;
        let mut moved = 0;
        match which {
            Requeue::AllFailed => {
                let done = sqlx::query(sqlx::AssertSqlSafe(format!("{SET} WHERE state = 'failed'")))
                    .bind(ms(now))
                    .execute(&mut *tx)
                    .await
                    .context("Failed to requeue failed sessions")?;
                moved += done.rows_affected();
            }
            Requeue::Ids(ids) => {
                for id in ids {
                    let done = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "{SET} WHERE session_id = ?2 AND state NOT IN ('pending', 'retrying')"
                    )))
                    .bind(ms(now))
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .context("Failed to requeue a session")?;
                    moved += done.rows_affected();
                }
            }
        }
        tx.commit().await.context("Failed to commit the requeue")?;
        Ok(moved)
    }

    pub async fn prune(&self, cutoff: DateTime<Utc>, limit: u32) -> anyhow::Result<u64> {
        let done = sqlx::query(
            "DELETE FROM reaper_sessions WHERE id IN (
                 SELECT id FROM reaper_sessions
                  WHERE finished_at < ?1 AND state NOT IN ('pending', 'retrying') LIMIT ?2)",
        )
        .bind(ms(cutoff))
        .bind(i64::from(limit))
        .execute(&self.writer)
        .await
        .context("Failed to prune finished sessions")?;
        Ok(done.rows_affected())
    }

    pub async fn backlog(&self, stale_after: Duration) -> anyhow::Result<(i64, Option<DateTime<Utc>>)> {
        // Open rows are free or leased; each kind has its own partial index.
        let open: i64 = sqlx::query_scalar(
            "SELECT (SELECT COUNT(*) FROM reaper_sessions
                      WHERE state IN ('pending', 'retrying') AND lease_owner IS NULL)
                  + (SELECT COUNT(*) FROM reaper_sessions
                      WHERE lease_owner IS NOT NULL AND state IN ('pending', 'retrying'))",
        )
        .fetch_one(&self.pool)
        .await
        .context("Failed to count open sessions")?;
        Ok((open, self.earliest_due(stale_after, false).await?))
    }
}
