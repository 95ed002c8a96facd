//! Shared test setup: a real database per test (a SQLite file, and a fresh PostgreSQL database
//! when a server is reachable), the stand-in API on loopback, and the daemon binary.

use std::process::{Command, Output, Stdio};

use chrono::{DateTime, Utc};
use session_reaper::config::{self, Config, Sources};
use session_reaper::standin::StandIn;
use session_reaper::store::{ClaimRequest, OutcomeWrite, RowId, SessionRow, State, Store};
use testkit::{DaemonEnv, PgDatabase, SqliteFile};

/// The apikey the stand-in accepts in tests.
pub const APIKEY: &str = "test-key-0123456789";

/// One backend under test; the SQLite file or PostgreSQL database disappears with it.
pub struct TestDb {
    pub url: String,
    pub store: Store,
    backing: Backing,
}

/// What holds the database: dropping it removes the file or drops the database.
enum Backing {
    Sqlite { _file: SqliteFile },
    Postgres(PgDatabase),
}

impl TestDb {
    pub fn name(&self) -> &'static str {
        self.store.backend()
    }

    pub async fn sqlite() -> Self {
        let file = SqliteFile::temp().expect("temp dir");
        let url = file.url();
        let store = Store::connect(&url).await.expect("open SQLite");
        store.migrate().await.expect("migrate SQLite");
        Self {
            url,
            store,
            backing: Backing::Sqlite { _file: file },
        }
    }

    /// A fresh database on the test server, or `None` (loudly) when no server answers.
    /// An unreachable server fails the test unless `SKIP_POSTGRES=1` (one loud line, then skips).
    pub async fn postgres() -> Option<Self> {
        Self::postgres_with(true).await
    }

    /// Like `postgres`, optionally leaving the schema to the test.
    pub async fn postgres_with(migrate: bool) -> Option<Self> {
        let db = PgDatabase::for_test().await?;
        let url = db.url().to_owned();
        let store = Store::connect(&url).await.expect("connect PostgreSQL");
        if migrate {
            store.migrate().await.expect("migrate PostgreSQL");
        }
        Some(Self {
            url,
            store,
            backing: Backing::Postgres(db),
        })
    }

    /// A fresh PostgreSQL database without the daemon's schema, and a pool on it for the test's
    /// own SQL (what the application does); `None` as for `postgres`.
    pub async fn postgres_for_the_application() -> Option<(Self, sqlx::PgPool)> {
        let db = Self::postgres_with(false).await?;
        let pool = sqlx::PgPool::connect(&db.url).await.expect("connect PostgreSQL");
        Some((db, pool))
    }

    /// Drops the per-test PostgreSQL database now (SQLite files go with their temp dir). Without
    /// it, the database is dropped when the `TestDb` is, also when a test panics.
    pub async fn cleanup(self) {
        drop(self.store);
        if let Backing::Postgres(db) = self.backing {
            let _ = db.drop_database().await;
        }
    }
}

/// Runs `sql` on the test database as the application would (its own connection).
pub async fn app_sql(db: &TestDb, sql: &str) -> Result<u64, sqlx::Error> {
    if db.name() == "sqlite" {
        let pool = sqlx::SqlitePool::connect(&db.url).await?;
        let done = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned())).execute(&pool).await;
        pool.close().await;
        Ok(done?.rows_affected())
    } else {
        let pool = sqlx::PgPool::connect(&db.url).await?;
        let done = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned())).execute(&pool).await;
        pool.close().await;
        Ok(done?.rows_affected())
    }
}

/// Every backend available here: SQLite always, PostgreSQL when reachable.
pub async fn backends() -> Vec<TestDb> {
    let mut all = vec![TestDb::sqlite().await];
    all.extend(TestDb::postgres().await);
    all
}

/// Runs the block once per backend (`backends()`), with `db` bound to that backend's fresh
/// database, and drops the database after the block (not after a failed assertion: a failing
/// test's database stays for a look; `.ci/run` drops leftovers). Each run first names its
/// backend on stderr, which a failing test prints, so assertions need not name it.
macro_rules! on_each_backend {
    (|$db:ident| $body:block) => {
        for $db in $crate::helpers::backends().await {
            eprintln!("-- on {}", $db.name());
            $body
            $db.cleanup().await;
        }
    };
}
pub(crate) use on_each_backend;

pub async fn standin() -> StandIn {
    testkit::start_standin(APIKEY).await.expect("start stand-in")
}

/// The lease a test's claim takes.
pub const LEASE: std::time::Duration = std::time::Duration::from_secs(30);
/// How long a row without `delete_after` waits after its last activity, in a test's claim.
pub const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(30 * 60);

/// A claim by `owner` at `now` of at most `limit` due rows.
pub fn claim_at(owner: &str, now: DateTime<Utc>, limit: u32) -> ClaimRequest<'_> {
    ClaimRequest {
        instance_id: owner,
        now,
        lease: LEASE,
        due_by: now,
        stale_after: STALE_AFTER,
        limit,
    }
}

/// The outcome of a 200 answer at `at`: the row made `state`, one attempt charged.
pub fn finished(id: RowId, state: State, at: DateTime<Utc>) -> OutcomeWrite {
    OutcomeWrite::Finish {
        id,
        state,
        charge: true,
        http_status: Some(200),
        api_code: None,
        error: None,
        attempted_at: Some(at),
        next_attempt_at: None,
        decided_at: at,
    }
}

/// `n` session ids: `prefix00000`, `prefix00001`, ...
pub fn numbered(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i:05}")).collect()
}

/// `n` numbered sessions (see `numbered`) enqueued due now; their ids.
pub async fn enqueue_numbered(db: &TestDb, prefix: &str, n: usize) -> Vec<String> {
    let ids = numbered(prefix, n);
    db.store.enqueue(&ids, chrono::Utc::now()).await.expect("enqueue");
    ids
}

/// Whether the daemon left `row` as the application wrote it: pending, no attempt charged, not
/// leased.
pub fn untouched(row: &SessionRow) -> bool {
    row.state == State::Pending && row.attempts == 0 && row.lease_owner.is_none()
}

/// The keys `status --json` and `/status.json` share (`status --json` adds `database`).
pub const STATUS_KEYS: [&str; 12] = [
    "pending",
    "retrying",
    "deleted",
    "gone",
    "failed",
    "invalid",
    "in_flight",
    "oldest_due_age_seconds",
    "last_success",
    "last_error",
    "last_error_at",
    "instances",
];

/// GET on loopback, retried (at most 15 s) while the listener comes up; (status, body).
pub async fn get(port: u16, path: &str) -> (u16, String) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        match reqwest::get(format!("http://127.0.0.1:{port}{path}")).await {
            Ok(response) => return (response.status().as_u16(), response.text().await.unwrap()),
            Err(e) => {
                assert!(std::time::Instant::now() < deadline, "GET {path}: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// `reaper.toml` holding `contents` in a new temporary folder, which goes with the returned guard.
pub fn config_file(contents: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("reaper.toml");
    std::fs::write(&path, contents).expect("write the configuration file");
    (dir, path)
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    testkit::free_port().expect("free port")
}

/// Environment for a daemon run against `db` and `api`, fast retries, JSON logs at debug.
pub fn daemon_env(db_url: &str, api_base: &str, apikey: &str) -> Vec<(String, String)> {
    daemon_env_with(db_url, api_base, apikey, &[])
}

/// `daemon_env` with more configuration keys, named as in the file (`worker.lease`), set or
/// replaced.
pub fn daemon_env_with(db_url: &str, api_base: &str, apikey: &str, keys: &[(&str, &str)]) -> Vec<(String, String)> {
    let env = DaemonEnv::new(db_url, api_base, apikey)
        .set("api.timeout", "20s")
        .set("worker.concurrency", 8)
        .set("worker.rate_per_second", 1000)
        .set("worker.burst", 100)
        .set("worker.poll_interval", "100ms")
        .set("retry.base_delay", "20ms")
        .set("retry.max_delay", "100ms")
        .set("retry.max_attempts", 4)
        .set("shutdown.grace", "5s")
        .set("log.level", "debug");
    keys.iter()
        .fold(env, |env, (key, value)| env.set(key, value))
        .into_vars()
}

/// A `Config` through the real loader, from `env` only.
pub fn config_from(env: Vec<(String, String)>) -> Config {
    config::load(&Sources {
        file: None,
        env,
        needs_apikey: true,
    })
    .expect("valid test config")
}

/// The daemon binary with a clean environment (no inherited SESSION_REAPER_* variables).
pub fn daemon(args: &[&str], env: &[(String, String)]) -> Command {
    testkit::daemon_command(env!("CARGO_BIN_EXE_session-reaper"), args, env)
}

/// Runs the binary to completion on a blocking thread (so the in-process stand-in keeps serving).
pub async fn run_daemon(args: &[&str], env: &[(String, String)]) -> Output {
    let mut command = daemon(args, env);
    command.stdin(Stdio::null());
    Daemon::start(&mut command).finish().await
}

/// Longest any child process of a test may run: every loop in the tests is bounded.
pub const CHILD_LIMIT: std::time::Duration = std::time::Duration::from_secs(120);

pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A daemon process started by a test; killed if the test ends (or panics) without `finish`.
/// Its output is drained on threads of its own, so a chatty process never blocks on a full pipe.
pub struct Daemon {
    child: Option<std::process::Child>,
    output: Option<std::thread::JoinHandle<(Vec<u8>, Vec<u8>)>>,
}

impl Daemon {
    pub fn start(command: &mut Command) -> Self {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start session-reaper");
        let mut stdout = child.stdout.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        let output = std::thread::spawn(move || {
            use std::io::Read;
            let err = std::thread::spawn(move || {
                let mut buffer = Vec::new();
                let _ = stderr.read_to_end(&mut buffer);
                buffer
            });
            let mut out = Vec::new();
            let _ = stdout.read_to_end(&mut out);
            (out, err.join().unwrap_or_default())
        });
        Self {
            child: Some(child),
            output: Some(output),
        }
    }

    pub fn id(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn signal(&self, signal: &str) {
        std::process::Command::new("kill")
            .args([signal, &self.id().to_string()])
            .status()
            .expect("kill");
    }

    /// Waits for the exit (at most `CHILD_LIMIT`, then SIGKILL, which the caller's assertions
    /// on the exit status see) and collects everything the process wrote.
    pub async fn finish(mut self) -> Output {
        let mut child = self.child.take().expect("running");
        let output = self.output.take().expect("drained");
        tokio::task::spawn_blocking(move || {
            let deadline = std::time::Instant::now() + CHILD_LIMIT;
            let status = loop {
                match child.try_wait().expect("wait") {
                    Some(status) => break status,
                    None if std::time::Instant::now() >= deadline => {
                        eprintln!("session-reaper child outlived {CHILD_LIMIT:?}: killed");
                        let _ = child.kill();
                        break child.wait().expect("wait");
                    }
                    None => std::thread::sleep(std::time::Duration::from_millis(20)),
                }
            };
            let (stdout, stderr) = output.join().expect("drain");
            Output { status, stdout, stderr }
        })
        .await
        .expect("join")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits (bounded) until the stand-in has seen `n` requests.
pub async fn wait_for_requests(api: &StandIn, n: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while api.state.stats().requests < n {
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon never sent {n} requests"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
