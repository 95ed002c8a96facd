//! Shared test setup: a real database per test (a SQLite file, and a fresh PostgreSQL database
//! when a server is reachable), the stand-in API on loopback, and the daemon binary.

use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};

use session_reaper::config::{self, Config, Sources};
use session_reaper::standin::StandIn;
use session_reaper::store::Store;

/// Admin connection used to create one database per test.
pub const DEFAULT_POSTGRES_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// The apikey the stand-in accepts in tests.
pub const APIKEY: &str = "test-key-0123456789";

/// One backend under test; the SQLite file or PostgreSQL database disappears with it.
pub struct TestDb {
    pub url: String,
    pub store: Store,
    _dir: Option<tempfile::TempDir>,
    postgres_name: Option<String>,
}

impl TestDb {
    pub fn name(&self) -> &'static str {
        self.store.backend()
    }

    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("reaper.db").display());
        let store = Store::connect(&url).await.expect("open SQLite");
        store.migrate().await.expect("migrate SQLite");
        Self {
            url,
            store,
            _dir: Some(dir),
            postgres_name: None,
        }
    }

    /// A fresh database on the test server, or `None` (loudly) when no server answers.
    /// With `REQUIRE_POSTGRES=1` (as in CI) a missing server fails the test instead.
    pub async fn postgres() -> Option<Self> {
        Self::postgres_with(true).await
    }

    /// Like `postgres`, optionally leaving the schema to the test.
    pub async fn postgres_with(migrate: bool) -> Option<Self> {
        let admin_url =
            std::env::var("SESSION_REAPER_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_POSTGRES_ADMIN_URL.to_owned());
        let admin = match sqlx::PgPool::connect(&admin_url).await {
            Ok(pool) => pool,
            Err(e) => {
                if std::env::var("REQUIRE_POSTGRES").is_ok_and(|v| v == "1") {
                    panic!("REQUIRE_POSTGRES=1 but PostgreSQL at {admin_url} is unreachable: {e}");
                }
                eprintln!("\n!!!!! SKIPPING the PostgreSQL half of this test: {admin_url} is unreachable ({e}).");
                eprintln!("!!!!! Start PostgreSQL or set SESSION_REAPER_TEST_POSTGRES; CI sets REQUIRE_POSTGRES=1.\n");
                return None;
            }
        };
        let name = format!("reaper_test_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .expect("create database");
        admin.close().await;
        let mut url = reqwest::Url::parse(&admin_url).expect("admin URL");
        url.set_path(&name);
        let url = url.to_string();
        let store = Store::connect(&url).await.expect("connect PostgreSQL");
        if migrate {
            store.migrate().await.expect("migrate PostgreSQL");
        }
        Some(Self {
            url,
            store,
            _dir: None,
            postgres_name: Some(name),
        })
    }

    /// Drops the per-test PostgreSQL database (SQLite files go with their temp dir).
    pub async fn cleanup(self) {
        let Some(name) = self.postgres_name else { return };
        if self.store.backend() == "postgres" {
            drop(self.store);
            let admin_url =
                std::env::var("SESSION_REAPER_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_POSTGRES_ADMIN_URL.to_owned());
            if let Ok(admin) = sqlx::PgPool::connect(&admin_url).await {
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&admin)
                .await;
            }
        }
    }
}

/// Every backend available here: SQLite always, PostgreSQL when reachable.
pub async fn backends() -> Vec<TestDb> {
    let mut all = vec![TestDb::sqlite().await];
    all.extend(TestDb::postgres().await);
    all
}

pub async fn standin() -> StandIn {
    StandIn::start(SocketAddr::from(([127, 0, 0, 1], 0)), APIKEY, true)
        .await
        .expect("start stand-in")
}

/// Environment for a daemon run against `db` and `api`, fast retries, JSON logs at debug.
pub fn daemon_env(db_url: &str, api_base: &str, apikey: &str) -> Vec<(String, String)> {
    [
        ("SESSION_REAPER_DATABASE__URL", db_url),
        ("SESSION_REAPER_API__BASE_URL", api_base),
        ("SESSION_REAPER_API__APIKEY", apikey),
        ("SESSION_REAPER_API__TIMEOUT", "20s"),
        ("SESSION_REAPER_WORKER__CONCURRENCY", "8"),
        ("SESSION_REAPER_WORKER__RATE_PER_SECOND", "1000"),
        ("SESSION_REAPER_WORKER__BURST", "100"),
        ("SESSION_REAPER_WORKER__POLL_INTERVAL", "100ms"),
        ("SESSION_REAPER_RETRY__BASE_DELAY", "20ms"),
        ("SESSION_REAPER_RETRY__MAX_DELAY", "100ms"),
        ("SESSION_REAPER_RETRY__MAX_ATTEMPTS", "4"),
        ("SESSION_REAPER_SHUTDOWN__GRACE", "5s"),
        ("SESSION_REAPER_LOG__LEVEL", "debug"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
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
    let mut command = Command::new(env!("CARGO_BIN_EXE_session-reaper"));
    command.args(args);
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("SESSION_REAPER_")) {
        command.env_remove(key);
    }
    command
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("STATE_DIRECTORY");
    command.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    command.stdin(Stdio::null());
    command
}

/// Runs the binary to completion on a blocking thread (so the in-process stand-in keeps serving).
pub async fn run_daemon(args: &[&str], env: &[(String, String)]) -> Output {
    let mut command = daemon(args, env);
    tokio::task::spawn_blocking(move || command.output().expect("run session-reaper"))
        .await
        .expect("join")
}

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

    /// Waits for the exit and collects everything the process wrote.
    pub async fn finish(mut self) -> Output {
        let mut child = self.child.take().expect("running");
        let output = self.output.take().expect("drained");
        tokio::task::spawn_blocking(move || {
            let status = child.wait().expect("wait");
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
