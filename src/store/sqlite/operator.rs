//! SQLite: what operator commands need beyond the daemon's queries: a read-only open for
//! `status`, the rows a requeue would look at, and what a prune would delete.

use super::*;
use crate::store::State;

/// Session ids per `IN (...)` list (one bound value each, far below SQLite's variable limit).
const LOOKUP_CHUNK: usize = 500;

impl SqliteStore {
    /// Opens an existing file read-only (`SQLITE_OPEN_READONLY`): never creates it, never
    /// migrates, never sets a journal mode. One connection serves everything.
    pub async fn open_read_only(url: &str) -> anyhow::Result<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .context("Failed to parse the SQLite URL")?
            .read_only(true)
            .create_if_missing(false)
            .busy_timeout(BUSY_TIMEOUT);
        let path = options.get_filename().to_owned();
        if url.contains(":memory:") || url.contains("mode=memory") {
            anyhow::bail!("an in-memory database is new and empty in every process; nothing to read");
        }
        if !path.exists() {
            match path.parent().filter(|dir| !dir.as_os_str().is_empty() && !dir.exists()) {
                Some(dir) => anyhow::bail!("the directory {} does not exist", dir.display()),
                None => anyhow::bail!(
                    "the file does not exist (this command only reads: `session-reaper migrate` \
                     or the daemon creates it)"
                ),
            }
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(BUSY_TIMEOUT + Duration::from_secs(5))
            .connect_with(options)
            .await
            .context("Failed to open the SQLite database read-only")?;
        Ok(Self {
            pool: pool.clone(),
            writer: pool,
            file: None,
        })
    }

    /// Which of `names` (tables or views) the database lacks.
    pub async fn missing_tables(&self, names: &[&'static str]) -> anyhow::Result<Vec<&'static str>> {
        let present: Vec<String> = sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")
            .fetch_all(&self.pool)
            .await
            .context("Failed to list the tables")?;
        Ok(names
            .iter()
            .copied()
            .filter(|name| !present.iter().any(|p| p == name))
            .collect())
    }

    /// Every failed row, or the rows of the listed ids in any state: (row id, session id, state).
    pub async fn requeue_candidates(&self, which: Requeue<'_>) -> anyhow::Result<Vec<(i64, String, State)>> {
        let mut found = Vec::new();
        match which {
            Requeue::AllFailed => {
                let rows = sqlx::query("SELECT id, session_id, state FROM reaper_sessions WHERE state = 'failed'")
                    .fetch_all(&self.pool)
                    .await
                    .context("Failed to list failed sessions")?;
                found.extend(rows);
            }
            Requeue::Ids(ids) => {
                for chunk in ids.chunks(LOOKUP_CHUNK) {
                    let mut select =
                        QueryBuilder::new("SELECT id, session_id, state FROM reaper_sessions WHERE session_id IN (");
                    let mut list = select.separated(", ");
                    for id in chunk {
                        list.push_bind(id.as_str());
                    }
                    select.push(")");
                    let rows = select
                        .build()
                        .fetch_all(&self.pool)
                        .await
                        .context("Failed to look up sessions")?;
                    found.extend(rows);
                }
            }
        }
        let mut candidates = found
            .iter()
            .map(|row| {
                let state = row.required_text("state")?;
                let state = State::parse(&state).with_context(|| format!("state {state:?} is not a known state"))?;
                Ok((row.required_int("id")?, row.required_text("session_id")?, state))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        candidates.sort_by_key(|(id, ..)| *id);
        candidates.dedup_by_key(|(id, ..)| *id);
        Ok(candidates)
    }
}
