//! A fresh PostgreSQL database per test or per benchmark run.

use std::time::Duration;

use anyhow::Context;
use sqlx::{Connection, PgConnection};

/// The server tests use when `SESSION_REAPER_TEST_POSTGRES` is not set.
pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// The names of the databases [`PgDatabase::for_test`] creates start with this (`.ci/run` drops
/// leftovers of interrupted runs by it).
pub const TEST_PREFIX: &str = "reaper_test_";
/// PostgreSQL's longest identifier (NAMEDATALEN - 1), in bytes.
const MAX_NAME: usize = 63;
/// How long dropping a database from `Drop` may take before it is given up (and reported).
const DROP_TIMEOUT: Duration = Duration::from_secs(15);

/// The admin connection URL of the test server: `SESSION_REAPER_TEST_POSTGRES`, or
/// [`DEFAULT_ADMIN_URL`].
pub fn admin_url() -> String {
    std::env::var("SESSION_REAPER_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned())
}

/// PostgreSQL tests fail when the server is unreachable, unless `SKIP_POSTGRES=1` says to skip
/// them: a skip is then a choice someone made, printed once, loudly, and never silent (cargo
/// hides the output of passing tests, so a skip that only printed would look like a pass).
pub fn required() -> bool {
    !std::env::var("SKIP_POSTGRES").is_ok_and(|v| v == "1")
}

/// The one loud line of a deliberate skip, once per process.
fn announce_skip(admin_url: &str, error: &sqlx::Error) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Straight to the process's stderr, past the test harness's capture of `eprintln!`.
        use std::io::Write;
        let line = format!(
            "\n!!!!! SKIP_POSTGRES=1: SKIPPING every PostgreSQL half of the tests ({admin_url} is unreachable: {error}).\n\n"
        );
        let _ = std::io::stderr().write_all(line.as_bytes());
    });
}

/// A database created on a server for one user, dropped `WITH (FORCE)` by [`drop_database`]
/// or, failing that, when the value is dropped (also when a test panics).
///
/// [`drop_database`]: PgDatabase::drop_database
#[derive(Debug)]
pub struct PgDatabase {
    admin_url: String,
    name: String,
    url: String,
    dropped: bool,
}

impl PgDatabase {
    /// A fresh database on the test server ([`admin_url`]), named `reaper_test_<uuid>`, or `None`
    /// An unreachable server panics (the test fails) unless `SKIP_POSTGRES=1`, which skips with
    /// one loud line; any later failure always panics.
    pub async fn for_test() -> Option<Self> {
        let admin_url = admin_url();
        let mut admin = match PgConnection::connect(&admin_url).await {
            Ok(admin) => admin,
            Err(e) => {
                if required() {
                    panic!(
                        "PostgreSQL at {admin_url} is unreachable: {e}. Start it, point SESSION_REAPER_TEST_POSTGRES \
                         at one, or set SKIP_POSTGRES=1 to skip the PostgreSQL halves of the tests"
                    );
                }
                announce_skip(&admin_url, &e);
                return None;
            }
        };
        let db = Self::create_on(&mut admin, &admin_url, TEST_PREFIX)
            .await
            .expect("create database");
        let _ = admin.close().await;
        Some(db)
    }

    /// Creates `<prefix><uuid>` on the server of `admin_url`.
    pub async fn create(admin_url: &str, prefix: &str) -> anyhow::Result<Self> {
        let mut admin = PgConnection::connect(admin_url)
            .await
            .with_context(|| format!("Failed to connect to {admin_url}"))?;
        let db = Self::create_on(&mut admin, admin_url, prefix).await?;
        admin.close().await?;
        Ok(db)
    }

    async fn create_on(admin: &mut PgConnection, admin_url: &str, prefix: &str) -> anyhow::Result<Self> {
        let mut url = url::Url::parse(admin_url).context("Failed to parse the PostgreSQL URL")?;
        let name = format!("{prefix}{}", uuid::Uuid::new_v4().simple());
        // The name goes into the statement unquoted, and PostgreSQL would silently cut a longer
        // one to 63 bytes (then `name` and `url` would name no database).
        anyhow::ensure!(
            name.len() <= MAX_NAME
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "database prefix {prefix:?}: only a-z, 0-9 and _, at most {} bytes",
            MAX_NAME - 32
        );
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut *admin)
            .await
            .with_context(|| format!("Failed to create database {name}"))?;
        url.set_path(&name);
        Ok(Self {
            admin_url: admin_url.to_owned(),
            name,
            url: url.to_string(),
            dropped: false,
        })
    }

    /// The database's connection URL (the admin URL with the database's name as its path).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name (its backends show it in their process titles).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Drops the database, closing whatever is still connected to it.
    pub async fn drop_database(mut self) -> anyhow::Result<()> {
        self.dropped = true;
        drop_named(&self.admin_url, &self.name).await
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // `drop` cannot await and may run on a runtime's thread: a runtime of its own, on a
        // thread of its own.
        let dropped = std::thread::spawn(move || -> anyhow::Result<()> {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(async {
                tokio::time::timeout(DROP_TIMEOUT, drop_named(&admin_url, &name))
                    .await
                    .context("timed out")?
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("testkit: could not drop database {}: {e:#}", self.name),
            Err(_) => eprintln!("testkit: could not drop database {}: the thread panicked", self.name),
        }
    }
}

/// Drops every database on the server of `admin_url` whose name starts with `prefix`, as left by
/// interrupted runs; returns their names. Only for prefixes of one user's databases: a database
/// in use is dropped all the same.
pub async fn drop_leftovers(admin_url: &str, prefix: &str) -> anyhow::Result<Vec<String>> {
    let mut admin = PgConnection::connect(admin_url).await?;
    let names: Vec<String> = sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE $1")
        .bind(format!("{prefix}%"))
        .fetch_all(&mut admin)
        .await?;
    admin.close().await?;
    for name in &names {
        drop_named(admin_url, name).await?;
    }
    Ok(names)
}

async fn drop_named(admin_url: &str, name: &str) -> anyhow::Result<()> {
    let mut admin = PgConnection::connect(admin_url).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await?;
    admin.close().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn exists(name: &str) -> bool {
        let mut admin = PgConnection::connect(&admin_url()).await.unwrap();
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pg_database WHERE datname = $1")
            .bind(name)
            .fetch_one(&mut admin)
            .await
            .unwrap();
        n == 1
    }

    #[tokio::test]
    async fn a_database_is_dropped_explicitly_or_with_its_value_even_while_connected() {
        let Some(db) = PgDatabase::for_test().await else { return };
        let name = db.name().to_owned();
        assert!(name.starts_with(TEST_PREFIX) && db.url().ends_with(&format!("/{name}")));
        let connected = PgConnection::connect(db.url()).await.unwrap();
        assert!(exists(&name).await);
        drop(db);
        assert!(!exists(&name).await, "dropped with the value, {name}");
        drop(connected);

        let db = PgDatabase::create(&admin_url(), "reaper_test_kit_").await.unwrap();
        let name = db.name().to_owned();
        db.drop_database().await.unwrap();
        assert!(!exists(&name).await, "dropped explicitly, {name}");
    }

    #[tokio::test]
    async fn leftovers_of_one_prefix_are_dropped_and_no_others() {
        let Some(other) = PgDatabase::for_test().await else {
            return;
        };
        // Unique (the tests run in parallel), and short enough for the uuid that follows.
        let prefix = format!("reaper_test_left{}_", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        assert!(
            PgDatabase::create(&admin_url(), &format!("{prefix}{}_", "x".repeat(20)))
                .await
                .is_err()
        );
        let left = PgDatabase::create(&admin_url(), &prefix).await.unwrap();
        let name = left.name().to_owned();
        std::mem::forget(left);
        assert_eq!(drop_leftovers(&admin_url(), &prefix).await.unwrap(), vec![name.clone()]);
        assert!(!exists(&name).await && exists(other.name()).await);
    }
}
