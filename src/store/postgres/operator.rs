//! PostgreSQL: what operator commands need beyond the daemon's queries: a read-only open for
//! `status`, the rows a requeue would look at, what a prune would delete, and the plain reason
//! a connection fails.

use sqlx::Connection;

use super::*;
use crate::store::State;

/// How long one direct connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl PgStore {
    /// Connects without migrating, in read-only transactions (`default_transaction_read_only`),
    /// so that a role with only `SELECT` grants serves. One direct connection first: a pool
    /// retries a refused connection until its timeout and then says only "pool timed out".
    pub async fn open_read_only(url: &str) -> anyhow::Result<Self> {
        let options = PgConnectOptions::from_str(url)
            .context("Failed to parse the PostgreSQL URL")?
            .options([("default_transaction_read_only", "on")]);
        Self::first_connection(&options).await?;
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.clone())
            .await
            .context("Failed to connect to PostgreSQL")?;
        Ok(Self {
            options: std::sync::Arc::new(options),
            pool: pool.clone(),
            claims: pool,
        })
    }

    /// Why connecting to `url` fails, from one direct attempt; `None` when it succeeds.
    pub async fn connect_error(url: &str) -> Option<anyhow::Error> {
        match PgConnectOptions::from_str(url) {
            Ok(options) => Self::first_connection(&options).await.err(),
            Err(e) => Some(anyhow::Error::new(e).context("Failed to parse the PostgreSQL URL")),
        }
    }

    async fn first_connection(options: &PgConnectOptions) -> anyhow::Result<()> {
        let connection = tokio::time::timeout(CONNECT_TIMEOUT, sqlx::PgConnection::connect_with(options))
            .await
            .map_err(|_| anyhow::anyhow!("no answer within {}s", CONNECT_TIMEOUT.as_secs()))
            .context("Failed to connect to PostgreSQL")?
            .context("Failed to connect to PostgreSQL")?;
        let _ = connection.close().await;
        Ok(())
    }

    /// Which of `names` (tables or views, in the search path) the database lacks. Needs no
    /// privilege on them: `to_regclass` only resolves the name.
    pub async fn missing_tables(&self, names: &[&'static str]) -> anyhow::Result<Vec<&'static str>> {
        let mut missing = Vec::new();
        for name in names {
            let found: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
                .bind(*name)
                .fetch_one(&self.pool)
                .await
                .context("Failed to look up the tables")?;
            if found.is_none() {
                missing.push(*name);
            }
        }
        Ok(missing)
    }

    /// Every failed row, or the rows of the listed ids in any state: (row id, session id, state).
    pub async fn requeue_candidates(&self, which: Requeue<'_>) -> anyhow::Result<Vec<(i64, String, State)>> {
        let rows = match which {
            Requeue::AllFailed => {
                sqlx::query("SELECT id, session_id, state FROM reaper_sessions WHERE state = 'failed' ORDER BY id")
                    .fetch_all(&self.pool)
                    .await
                    .context("Failed to list failed sessions")?
            }
            Requeue::Ids(ids) => {
                sqlx::query("SELECT id, session_id, state FROM reaper_sessions WHERE session_id = ANY($1) ORDER BY id")
                    .bind(ids)
                    .fetch_all(&self.pool)
                    .await
                    .context("Failed to look up sessions")?
            }
        };
        rows.iter()
            .map(|row| {
                let state = row.required_text("state")?;
                let state = State::parse(&state).with_context(|| format!("state {state:?} is not a known state"))?;
                Ok((row.required_int("id")?, row.required_text("session_id")?, state))
            })
            .collect()
    }
}
