//! The databases the daemon works on: a fresh SQLite file, or a fresh PostgreSQL database
//! created for one run and dropped after it (both from `testkit`); seeding through the library's
//! own `Store::enqueue`, and the counts per state afterwards.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use session_reaper::store::{StatusReport, Store};
use sqlx::Connection;
use testkit::{PgDatabase, SqliteFile};

/// Ids per `Store::enqueue` call (it inserts 2,000 rows per statement in one transaction).
const SEED_CHUNK: usize = 100_000;
/// Databases this bench creates start with this; leftovers of interrupted runs are dropped.
const PG_PREFIX: &str = "reaper_bench_";
/// `status` counts a row as stale after this; seeded rows are due by `delete_after` anyway.
const STALE_AFTER: Duration = Duration::from_secs(30 * 60);

/// How a PostgreSQL run differs from the plain configuration.
pub struct PgVariant {
    pub name: &'static str,
    /// `ANALYZE` between seeding and the run (what autovacuum would eventually do).
    pub analyze: bool,
    /// `sslmode=disable` in the daemon's URL (the default, `prefer`, negotiates TLS on loopback).
    pub no_tls: bool,
}

/// The PostgreSQL runs: as configured (the goal's), then with the two fixes the profile suggests.
pub const PG_VARIANTS: [PgVariant; 3] = [
    PgVariant {
        name: "PostgreSQL",
        analyze: false,
        no_tls: false,
    },
    PgVariant {
        name: "PostgreSQL, ANALYZE after seeding",
        analyze: true,
        no_tls: false,
    },
    PgVariant {
        name: "PostgreSQL, ANALYZE after seeding, sslmode=disable",
        analyze: true,
        no_tls: true,
    },
];

/// Removed (file) or dropped (database) by `remove`, or when dropped.
pub enum Db {
    Sqlite(SqliteFile),
    Postgres {
        db: PgDatabase,
        /// The database's URL with the variant's settings.
        url: String,
    },
}

impl Db {
    /// A new SQLite file in `dir` (any old one of that name is removed).
    pub fn sqlite(dir: &Path, name: &str) -> Self {
        Db::Sqlite(SqliteFile::in_dir(dir, name))
    }

    /// Creates a new database `reaper_bench_<label>_<uuid>` on the server of `admin_url`.
    pub async fn postgres(admin_url: &str, label: &str, variant: &PgVariant) -> anyhow::Result<Self> {
        let db = PgDatabase::create(admin_url, &format!("{PG_PREFIX}{label}_")).await?;
        let mut url = url::Url::parse(db.url()).context("Failed to parse the PostgreSQL URL")?;
        if variant.no_tls {
            url.query_pairs_mut().append_pair("sslmode", "disable");
        }
        Ok(Db::Postgres {
            db,
            url: url.to_string(),
        })
    }

    pub fn url(&self) -> String {
        match self {
            Db::Sqlite(file) => file.url(),
            Db::Postgres { url, .. } => url.clone(),
        }
    }

    /// A connection of the bench's own that counts leased rows while the daemon runs.
    pub async fn lease_probe(&self) -> anyhow::Result<LeaseProbe> {
        Ok(match self {
            Db::Sqlite(_) => LeaseProbe::Sqlite(
                sqlx::pool::PoolOptions::new()
                    .max_connections(1)
                    .connect(&self.url())
                    .await?,
            ),
            Db::Postgres { url, .. } => {
                let pool = sqlx::pool::PoolOptions::new()
                    .max_connections(1)
                    .min_connections(1)
                    .connect(url)
                    .await?;
                let pid = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&pool).await?;
                LeaseProbe::Postgres(pool, pid)
            }
        })
    }

    /// The PostgreSQL database's name (its backends show it in their process titles).
    pub fn postgres_name(&self) -> Option<&str> {
        match self {
            Db::Postgres { db, .. } => Some(db.name()),
            Db::Sqlite(_) => None,
        }
    }

    /// SQLite's write-ahead log, whose growth the daemon runs watch.
    pub fn wal_path(&self) -> Option<PathBuf> {
        match self {
            Db::Sqlite(file) => Some(file.wal_path()),
            Db::Postgres { .. } => None,
        }
    }

    /// Inserts `n` distinct ids, due now, in chunks; returns the time it took.
    ///
    /// Ids start with digits, so no stand-in scenario prefix (`gone-`, `bad-`...) matches them:
    /// every one is a plain success.
    pub async fn seed(&self, n: usize, tag: &str) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let store = Store::connect(&self.url()).await?;
        store.migrate().await?;
        let mut inserted = 0;
        for start in (0..n).step_by(SEED_CHUNK) {
            let ids: Vec<String> = (start..n.min(start + SEED_CHUNK)).map(|i| session_id(i, tag)).collect();
            inserted += store.enqueue(&ids, Utc::now()).await?;
        }
        anyhow::ensure!(inserted == n as u64, "seeded {inserted} rows, wanted {n}");
        drop(store);
        Ok(started.elapsed())
    }

    /// Refreshes the planner's statistics (PostgreSQL); what autovacuum would do in time.
    pub async fn analyze(&self) -> anyhow::Result<()> {
        if let Db::Postgres { url, .. } = self {
            let mut conn = sqlx::PgConnection::connect(url).await?;
            sqlx::query("ANALYZE reaper_sessions").execute(&mut conn).await?;
            conn.close().await?;
        }
        Ok(())
    }

    pub async fn status(&self) -> anyhow::Result<StatusReport> {
        let store = Store::connect(&self.url()).await?;
        store.status(Utc::now(), STALE_AFTER).await
    }

    /// Drops the PostgreSQL database; removes the SQLite file.
    pub async fn remove(self) {
        match self {
            Db::Sqlite(file) => drop(file),
            Db::Postgres { db, .. } => {
                let name = db.name().to_owned();
                if let Err(e) = db.drop_database().await {
                    eprintln!("  could not drop database {name}: {e:#}");
                }
            }
        }
    }
}

/// Counts rows leased right now, from a connection of the bench's own.
pub enum LeaseProbe {
    Sqlite(sqlx::SqlitePool),
    /// With the pid of the probe's own backend, to leave it out of the daemon's CPU.
    Postgres(sqlx::PgPool, i32),
}

/// Open rows that carry a lease: claimed, outcome not yet written.
const LEASED: &str =
    "SELECT COUNT(*) FROM reaper_sessions WHERE lease_owner IS NOT NULL AND state IN ('pending', 'retrying')";

impl LeaseProbe {
    pub async fn leased(&self) -> anyhow::Result<i64> {
        Ok(match self {
            LeaseProbe::Sqlite(pool) => sqlx::query_scalar(LEASED).fetch_one(pool).await?,
            LeaseProbe::Postgres(pool, _) => sqlx::query_scalar(LEASED).fetch_one(pool).await?,
        })
    }

    /// The probe's own PostgreSQL backend.
    pub fn backend_pid(&self) -> Option<u32> {
        match self {
            LeaseProbe::Postgres(_, pid) => Some(*pid as u32),
            LeaseProbe::Sqlite(_) => None,
        }
    }

    pub async fn close(self) {
        match self {
            LeaseProbe::Sqlite(pool) => pool.close().await,
            LeaseProbe::Postgres(pool, _) => pool.close().await,
        }
    }
}

/// The `i`-th id of a seeding tagged `tag`.
pub fn session_id(i: usize, tag: &str) -> String {
    format!("{i:08}{tag}")
}

/// Checks that the server answers, drops databases left by interrupted bench runs, and
/// describes the server (version and the settings that matter here).
pub async fn postgres_ready(admin_url: &str) -> anyhow::Result<String> {
    let mut admin = tokio::time::timeout(Duration::from_secs(5), sqlx::PgConnection::connect(admin_url))
        .await
        .context("PostgreSQL did not answer within 5 s")??;
    for name in testkit::postgres::drop_leftovers(admin_url, PG_PREFIX).await? {
        eprintln!("  dropped leftover database {name}");
    }
    let mut settings = Vec::new();
    for setting in ["server_version", "autovacuum", "synchronous_commit", "shared_buffers"] {
        let value: String = sqlx::query_scalar("SELECT current_setting($1)")
            .bind(setting)
            .fetch_one(&mut admin)
            .await?;
        settings.push(format!("{setting} {value}"));
    }
    admin.close().await?;
    Ok(settings.join(", "))
}
