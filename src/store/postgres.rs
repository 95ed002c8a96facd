//! PostgreSQL backend: for production and several replicas on one table. Claims take
//! `FOR UPDATE SKIP LOCKED`, so replicas never wait on each other's rows; outcome batches are one
//! `UPDATE ... FROM UNNEST(...)` round trip; migrations hold sqlx's advisory lock, so replicas
//! starting together apply them once.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Row};

use super::{
    ClaimRequest, ClaimedRow, InstanceBeat, InstanceRow, OutcomeWrite, Requeue, SessionRow, State, StatusReport,
    chrono_duration,
};

/// The two outcome writers, heartbeat, housekeeping and spares (claims have their own pool).
const MAX_CONNECTIONS: u32 = 6;
/// Outcomes per UPDATE: a batch of the default size is one statement; larger ones are split so
/// one statement's arrays stay moderate. (Until sqlx's sockets had TCP_NODELAY again, see
/// `vendor/README.md`, chunks of 96 kept each message inside one TLS record, because a second
/// record waited ~40 ms for the server's delayed ACK.)
const OUTCOME_CHUNK: usize = 1024;
/// How long a query waits for a free connection before the outage is reported.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
    /// Claims only, committed without waiting for the WAL flush (`synchronous_commit = off`):
    /// the feeder waits on each claim, and a claim lost to a server crash only frees its rows
    /// again. Outcomes stay on `pool`, durable as configured.
    claims: PgPool,
}

impl PgStore {
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let options = PgConnectOptions::from_str(url).context("Failed to parse the PostgreSQL URL")?;
        let pool = |connections| {
            PgPoolOptions::new()
                .max_connections(connections)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .after_release(|conn, _| Box::pin(async move { Ok(super::reusable(conn)) }))
        };
        // Both at once: a connection's start-up is several round trips (more over TLS).
        let (claims, pool) = tokio::try_join!(
            pool(1).connect_with(options.clone().options([("synchronous_commit", "off")])),
            pool(MAX_CONNECTIONS).connect_with(options),
        )
        .context("Failed to connect to PostgreSQL")?;
        Ok(Self { pool, claims })
    }

    pub async fn migrate(&self) -> anyhow::Result<()> {
        sqlx::migrate!("migrations/postgres")
            .run(&self.pool)
            .await
            .context("Failed to migrate the PostgreSQL database")
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

    pub async fn ping(&self) -> anyhow::Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .context("PostgreSQL is not answering")?;
        Ok(())
    }

    /// Locks: the claimed rows (`FOR UPDATE SKIP LOCKED`), skipping rows other replicas hold.
    pub async fn claim(&self, r: &ClaimRequest<'_>) -> anyhow::Result<Vec<ClaimedRow>> {
        let rows = sqlx::query(
            "WITH picked AS (
                 -- Open rows in id order: free ones, and someone else's expired leases (a crashed
                 -- replica). Rows in flight are stepped over; rows another claim or outcome holds
                 -- locked are skipped.
                 SELECT id, lease_owner AS previous_owner FROM reaper_sessions
                  WHERE state IN ('pending', 'retrying')
                    AND (lease_owner IS NULL OR (lease_expires_at <= $3 AND lease_owner <> $1))
                    AND ((state = 'pending' AND (delete_after <= $4 OR last_activity_at <= $5))
                      OR (state = 'retrying' AND next_attempt_at <= $4))
                  ORDER BY id
                  LIMIT $6
                  FOR UPDATE SKIP LOCKED)
             UPDATE reaper_sessions r
                SET lease_owner = $1, lease_expires_at = $2, taken_over_from = picked.previous_owner
               FROM picked
              WHERE r.id = picked.id
          RETURNING r.id, r.session_id, r.attempts, picked.previous_owner",
        )
        .bind(r.owner)
        .bind(r.now + chrono_duration(r.lease))
        .bind(r.now)
        .bind(r.due_by)
        .bind(r.due_by - chrono_duration(r.stale_after))
        .bind(i64::from(r.limit))
        .fetch_all(&self.claims)
        .await
        .context("Failed to claim due sessions")?;
        let mut claimed: Vec<ClaimedRow> = rows
            .into_iter()
            .map(|row| ClaimedRow {
                id: row.get("id"),
                session_id: row.get("session_id"),
                attempts: row.get("attempts"),
                taken_over: row.get::<Option<String>, _>("previous_owner").is_some(),
            })
            .collect();
        claimed.sort_by_key(|row| row.id);
        Ok(claimed)
    }

    /// Locks: the rows written, each only while `owner` still holds its lease (a takeover
    /// never gets overwritten by the replica it rescued from).
    pub async fn write_outcomes(&self, owner: &str, outcomes: &[OutcomeWrite]) -> anyhow::Result<u64> {
        let (mut finished, released) = super::split_outcomes(outcomes);
        // Rows locked in id order, as claims lock them, so two writers never deadlock.
        finished.sort_unstable_by_key(|f| f.id);
        let mut tx = self.pool.begin().await.context("Failed to begin an outcome batch")?;
        let mut written = 0;
        for chunk in finished.chunks(OUTCOME_CHUNK) {
            let done = sqlx::query(
                "UPDATE reaper_sessions r
                    SET state = u.state, attempts = r.attempts + u.charge,
                        last_http_status = u.http_status, last_api_code = u.api_code,
                        last_error = u.error,
                        first_attempt_at = COALESCE(r.first_attempt_at, u.attempted_at),
                        last_attempt_at = COALESCE(u.attempted_at, r.last_attempt_at),
                        finished_at = u.finished_at, next_attempt_at = u.next_attempt_at,
                        lease_owner = NULL, lease_expires_at = NULL
                   FROM UNNEST($1::bigint[], $2::text[], $3::int[], $4::int[], $5::bigint[],
                               $6::text[], $7::timestamptz[], $8::timestamptz[], $9::timestamptz[])
                        AS u(id, state, charge, http_status, api_code, error, attempted_at,
                             finished_at, next_attempt_at)
                  WHERE r.id = u.id AND r.lease_owner = $10 AND r.state IN ('pending', 'retrying')",
            )
            .bind(chunk.iter().map(|f| f.id).collect::<Vec<_>>())
            .bind(chunk.iter().map(|f| f.state.as_str()).collect::<Vec<_>>())
            .bind(chunk.iter().map(|f| i32::from(f.charge)).collect::<Vec<_>>())
            .bind(chunk.iter().map(|f| f.http_status).collect::<Vec<_>>())
            .bind(chunk.iter().map(|f| f.api_code).collect::<Vec<_>>())
            .bind(chunk.iter().map(|f| f.error).collect::<Vec<_>>())
            .bind(chunk.iter().map(|f| f.attempted_at).collect::<Vec<_>>())
            .bind(chunk.iter().map(|f| f.finished_at).collect::<Vec<_>>())
            .bind(chunk.iter().map(|f| f.next_attempt_at).collect::<Vec<_>>())
            .bind(owner)
            .execute(&mut *tx)
            .await
            .context("Failed to write outcomes")?;
            written += done.rows_affected();
        }
        if !released.is_empty() {
            let done = sqlx::query(
                "UPDATE reaper_sessions SET lease_owner = NULL, lease_expires_at = NULL
                  WHERE id = ANY($1) AND lease_owner = $2",
            )
            .bind(&released)
            .bind(owner)
            .execute(&mut *tx)
            .await
            .context("Failed to release leases")?;
            written += done.rows_affected();
        }
        tx.commit().await.context("Failed to commit an outcome batch")?;
        Ok(written)
    }

    /// Locks: the listed rows still leased to `owner`, in id order (as outcomes lock them).
    pub async fn renew_leases(&self, owner: &str, ids: &[i64], until: DateTime<Utc>) -> anyhow::Result<u64> {
        let done = sqlx::query(
            "UPDATE reaper_sessions SET lease_expires_at = $1
              WHERE id = ANY($2) AND lease_owner = $3 AND state IN ('pending', 'retrying')",
        )
        .bind(until)
        .bind(ids)
        .bind(owner)
        .execute(&self.pool)
        .await
        .context("Failed to renew leases")?;
        Ok(done.rows_affected())
    }

    pub async fn enqueue(&self, ids: &[String], now: DateTime<Utc>) -> anyhow::Result<u64> {
        let done = sqlx::query(
            "INSERT INTO reaper_sessions (session_id, delete_after)
             SELECT id, $2 FROM UNNEST($1::text[]) AS ids(id)
             ON CONFLICT (session_id) DO NOTHING",
        )
        .bind(ids)
        .bind(now)
        .execute(&self.pool)
        .await
        .context("Failed to insert session ids")?;
        Ok(done.rows_affected())
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
                 WHERE lease_owner IS NOT NULL AND lease_expires_at > $1
                   AND state IN ('pending', 'retrying')) AS in_flight,
               (SELECT MAX(finished_at) FROM reaper_sessions
                 WHERE state IN ('deleted', 'gone')) AS last_success",
        )
        .bind(now)
        .fetch_one(&self.pool)
        .await
        .context("Failed to read the status")?;
        report.in_flight = row.get("in_flight");
        report.last_success = row.get("last_success");
        report.earliest_due = self.earliest_due(stale_after, false).await?;
        let error = sqlx::query(
            "SELECT last_attempt_at, last_error FROM reaper_sessions
              WHERE last_error IS NOT NULL AND last_attempt_at IS NOT NULL
              ORDER BY last_attempt_at DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await
        .context("Failed to read the last error")?;
        report.last_error = error.map(|row| (row.get("last_attempt_at"), row.get("last_error")));
        Ok(report)
    }

    pub async fn next_due(&self, stale_after: Duration) -> anyhow::Result<Option<DateTime<Utc>>> {
        self.earliest_due(stale_after, true).await
    }

    /// Earliest due moment among open rows; with `leases`, a leased row counts as due when its
    /// lease runs out (a crashed replica's rows).
    async fn earliest_due(&self, stale_after: Duration, leases: bool) -> anyhow::Result<Option<DateTime<Utc>>> {
        sqlx::query_scalar(
            "SELECT MIN(CASE WHEN $2 AND lease_owner IS NOT NULL THEN GREATEST(lease_expires_at, due) ELSE due END)
               FROM (SELECT lease_owner, lease_expires_at,
                            CASE state
                              WHEN 'retrying' THEN next_attempt_at
                              ELSE LEAST(delete_after, last_activity_at + $1) END AS due
                       FROM reaper_sessions
                      WHERE state IN ('pending', 'retrying')) due_rows",
        )
        .bind(chrono_duration(stale_after))
        .bind(leases)
        .fetch_one(&self.pool)
        .await
        .context("Failed to find the next due session")
    }

    pub async fn rows(&self) -> anyhow::Result<Vec<SessionRow>> {
        let rows = sqlx::query("SELECT * FROM reaper_sessions ORDER BY id")
            .fetch_all(&self.pool)
            .await
            .context("Failed to list sessions")?;
        Ok(rows
            .iter()
            .map(|row| SessionRow {
                id: row.get("id"),
                session_id: row.get("session_id"),
                state: State::parse(row.get("state")).unwrap_or(State::Failed),
                delete_after: row.get("delete_after"),
                last_activity_at: row.get("last_activity_at"),
                attempts: row.get("attempts"),
                next_attempt_at: row.get("next_attempt_at"),
                lease_owner: row.get("lease_owner"),
                lease_expires_at: row.get("lease_expires_at"),
                taken_over_from: row.get("taken_over_from"),
                last_http_status: row.get("last_http_status"),
                last_api_code: row.get("last_api_code"),
                last_error: row.get("last_error"),
                first_attempt_at: row.get("first_attempt_at"),
                last_attempt_at: row.get("last_attempt_at"),
                finished_at: row.get("finished_at"),
            })
            .collect())
    }

    pub async fn touch(&self, session_id: &str, at: DateTime<Utc>) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO reaper_sessions (session_id, delete_after, last_activity_at) VALUES ($1, NULL, $2)
             ON CONFLICT (session_id) DO UPDATE SET last_activity_at = excluded.last_activity_at",
        )
        .bind(session_id)
        .bind(at)
        .execute(&self.pool)
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
        let mut tx = self.pool.begin().await.context("Failed to begin a heartbeat")?;
        let [deleted, gone, failed, invalid, retry_scheduled, released] = beat.counts;
        sqlx::query(
            "INSERT INTO reaper_instances (instance_id, host, pid, version, started_at, heartbeat_at, in_flight,
                                           rate_limit, deleted, gone, failed, invalid, retry_scheduled, released)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
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
        .bind(beat.started_at)
        .bind(now)
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
        sqlx::query("DELETE FROM reaper_instances WHERE heartbeat_at < $1")
            .bind(now - chrono_duration(forget_after))
            .execute(&mut *tx)
            .await
            .context("Failed to forget dead instances")?;
        let live: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM reaper_instances WHERE heartbeat_at >= $1")
            .bind(now - chrono_duration(live_within))
            .fetch_one(&mut *tx)
            .await
            .context("Failed to count live instances")?;
        tx.commit().await.context("Failed to commit the heartbeat")?;
        Ok(live)
    }

    pub async fn remove_instance(&self, instance_id: &str) -> anyhow::Result<()> {
        sqlx::query("DELETE FROM reaper_instances WHERE instance_id = $1")
            .bind(instance_id)
            .execute(&self.pool)
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
                    started_at: row.get("started_at"),
                    in_flight: row.get("in_flight"),
                    rate_limit: row.get("rate_limit"),
                    counts: super::INSTANCE_COUNT_COLUMNS.map(|column| row.get(column)),
                },
                heartbeat_at: row.get("heartbeat_at"),
            })
            .collect())
    }

    pub async fn requeue(&self, which: Requeue<'_>, now: DateTime<Utc>) -> anyhow::Result<u64> {
        let done = match which {
            Requeue::AllFailed => sqlx::query(
                "UPDATE reaper_sessions
                    SET state = 'pending', attempts = 0, delete_after = $1, next_attempt_at = NULL, finished_at = NULL
                  WHERE state = 'failed'",
            )
            .bind(now)
            .execute(&self.pool)
            .await
            .context("Failed to requeue failed sessions")?,
            Requeue::Ids(ids) => sqlx::query(
                "UPDATE reaper_sessions
                    SET state = 'pending', attempts = 0, delete_after = $1, next_attempt_at = NULL, finished_at = NULL
                  WHERE session_id = ANY($2) AND state NOT IN ('pending', 'retrying')",
            )
            .bind(now)
            .bind(ids)
            .execute(&self.pool)
            .await
            .context("Failed to requeue sessions")?,
        };
        Ok(done.rows_affected())
    }

    pub async fn prune(&self, cutoff: DateTime<Utc>, limit: u32) -> anyhow::Result<u64> {
        let done = sqlx::query(
            "DELETE FROM reaper_sessions WHERE id IN (
                 SELECT id FROM reaper_sessions
                  WHERE finished_at < $1 AND state NOT IN ('pending', 'retrying') LIMIT $2)",
        )
        .bind(cutoff)
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await
        .context("Failed to prune finished sessions")?;
        Ok(done.rows_affected())
    }

    pub async fn backlog(&self, stale_after: Duration) -> anyhow::Result<(i64, Option<DateTime<Utc>>)> {
        let open: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM reaper_sessions WHERE state IN ('pending', 'retrying')")
                .fetch_one(&self.pool)
                .await
                .context("Failed to count open sessions")?;
        Ok((open, self.earliest_due(stale_after, false).await?))
    }
}
