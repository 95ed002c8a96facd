//! Operations as they really happen, against the real process: signals as tools send them, a
//! shutdown under a database lock held by a second connection, `run --once`'s exit codes, and
//! migrations blocked by the application's lock.

use std::time::{Duration, Instant};

use chrono::Utc;

use crate::helpers::{
    APIKEY, Daemon, TestDb, claim_at, daemon, daemon_env, daemon_env_with, enqueue_numbered, free_port,
    on_each_backend, run_daemon, standin, text, untouched, wait_for_requests,
};

#[tokio::test]
async fn two_sigterms_as_timeout_sends_them_still_stop_gracefully() {
    let db = TestDb::sqlite().await;
    // Arrange
    let api = standin().await;
    api.state.set_latency(Duration::from_millis(500));
    enqueue_numbered(&db, "twice", 40).await;
    let child = Daemon::start(&mut daemon(&["run"], &daemon_env(&db.url, &api.base_url(), APIKEY)));
    wait_for_requests(&api, 4).await;

    // Act: a second SIGTERM while the first one's stop is under way (GNU timeout signals the
    // child and then its process group). 200 ms apart: two signals sent back to back can reach
    // the process as one, and there would be no second one to test.
    child.signal("-TERM");
    tokio::time::sleep(Duration::from_millis(200)).await;
    child.signal("-TERM");
    let output = child.finish().await;

    // Assert: a graceful exit, every answered request recorded, nothing left leased.
    let logs = text(&output);
    assert!(output.status.success(), "{:?}\n{logs}", output.status);
    assert!(
        logs.contains("another stop signal: already stopping gracefully"),
        "{logs}"
    );
    let rows = db.store.rows().await.unwrap();
    assert!(rows.iter().all(|r| r.lease_owner.is_none()));
    let deleted = rows.iter().filter(|r| r.state.is_terminal()).count() as u64;
    assert_eq!(deleted, api.state.stats().requests);
}

#[tokio::test]
async fn sighup_stops_gracefully_and_removes_the_instance_row() {
    let db = TestDb::sqlite().await;
    // Arrange
    let api = standin().await;
    let child = Daemon::start(&mut daemon(&["run"], &daemon_env(&db.url, &api.base_url(), APIKEY)));
    let deadline = Instant::now() + Duration::from_secs(20);
    while db.store.instances().await.unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the daemon never registered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Act
    child.signal("-HUP");
    let output = child.finish().await;

    // Assert
    assert!(output.status.success(), "{:?}\n{}", output.status, text(&output));
    assert!(
        db.store.instances().await.unwrap().is_empty(),
        "the instance row was left behind"
    );
}

/// SIGTERM while a second connection holds the database locked: the exit comes within
/// `shutdown.grace` + 2 s, and says how many outcomes it could not write.
#[tokio::test]
async fn shutdown_is_bounded_by_the_grace_while_the_database_is_locked() {
    on_each_backend!(|db| {
        // Arrange: requests in flight, then the application locks everything.
        let api = standin().await;
        api.state.set_latency(Duration::from_millis(1500));
        enqueue_numbered(&db, "locked", 40).await;
        let env = daemon_env_with(&db.url, &api.base_url(), APIKEY, &[("shutdown.grace", "3s")]);
        let child = Daemon::start(&mut daemon(&["run"], &env));
        wait_for_requests(&api, 4).await;
        let lock = hold_lock(&db).await;

        // Act
        let signalled = Instant::now();
        child.signal("-TERM");
        let output = child.finish().await;
        let took = signalled.elapsed();
        drop(lock);

        // Assert
        let logs = text(&output);
        eprintln!("{}: exit {took:?} after SIGTERM under a lock", db.name());
        assert!(output.status.success(), "{}: {:?}\n{logs}", db.name(), output.status);
        assert!(
            took < Duration::from_secs(3 + 2 + 1),
            "{}: exit took {took:?}\n{logs}",
            db.name()
        );
        assert!(logs.contains("shutting down"), "{logs}");
    });
}

/// A lock held by a second connection for as long as the value lives (read by `Drop` only).
#[allow(dead_code)]
enum Lock {
    Sqlite(sqlx::pool::PoolConnection<sqlx::Sqlite>),
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

async fn hold_lock(db: &TestDb) -> Lock {
    if db.name() == "sqlite" {
        let pool = sqlx::SqlitePool::connect(&db.url).await.unwrap();
        let mut conn = pool.acquire().await.unwrap();
        sqlx::raw_sql("BEGIN EXCLUSIVE").execute(&mut *conn).await.unwrap();
        Lock::Sqlite(conn)
    } else {
        let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
        let mut tx = pool.begin().await.unwrap();
        sqlx::raw_sql("LOCK TABLE reaper_sessions IN ACCESS EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await
            .unwrap();
        Lock::Postgres(tx)
    }
}

#[tokio::test]
async fn run_once_exits_69_when_the_database_stays_unreachable() {
    // Arrange: a PostgreSQL URL on a port nothing listens on.
    let api = standin().await;
    let url = format!("postgres://postgres@127.0.0.1:{}/nothing", free_port());
    let mut env = daemon_env(&url, &api.base_url(), APIKEY);
    env.push(("SESSION_REAPER_DATABASE__CONNECT_TIMEOUT".into(), "2s".into()));

    // Act
    let started = Instant::now();
    let output = run_daemon(&["run", "--once"], &env).await;

    // Assert
    assert_eq!(output.status.code(), Some(69), "{}", text(&output));
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn run_once_exits_77_on_a_rejected_key_and_75_on_a_spent_quota_leaving_rows_untouched() {
    on_each_backend!(|db| {
        let api = standin().await;
        enqueue_numbered(&db, "acct", 20).await;

        // A wrong key.
        let wrong = daemon_env(&db.url, &api.base_url(), "not-the-key");
        let output = run_daemon(&["run", "--once"], &wrong).await;
        assert_eq!(output.status.code(), Some(77), "{}: {}", db.name(), text(&output));

        // A spent quota.
        api.state.set_quota_spent(true);
        let env = daemon_env(&db.url, &api.base_url(), APIKEY);
        let output = run_daemon(&["run", "--once"], &env).await;
        assert_eq!(output.status.code(), Some(75), "{}: {}", db.name(), text(&output));

        // Rows untouched: still pending, nothing charged, nothing leased.
        let rows = db.store.rows().await.unwrap();
        assert!(rows.iter().all(untouched), "{}: {rows:?}", db.name());

        // And once the quota is back, a pass deletes everything and exits 0.
        api.state.set_quota_spent(false);
        let output = run_daemon(&["run", "--once"], &env).await;
        assert_eq!(output.status.code(), Some(0), "{}: {}", db.name(), text(&output));
    });
}

#[tokio::test]
async fn migrations_blocked_by_the_applications_lock_give_up_naming_the_holder() {
    // Arrange: the application's own table exists and it holds it locked.
    let Some((db, pool)) = TestDb::postgres_for_the_application().await else {
        return;
    };
    sqlx::raw_sql(
        "CREATE TABLE reaper_sessions (id BIGSERIAL PRIMARY KEY, session_id TEXT NOT NULL UNIQUE,
             state TEXT NOT NULL DEFAULT 'pending', delete_after TIMESTAMPTZ DEFAULT now())",
    )
    .execute(&pool)
    .await
    .unwrap();
    let mut tx = pool.begin().await.unwrap();
    sqlx::raw_sql("LOCK TABLE reaper_sessions IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await
        .unwrap();
    let holder: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    let api = standin().await;

    // Act
    let started = Instant::now();
    let output = run_daemon(&["migrate"], &daemon_env(&db.url, &api.base_url(), APIKEY)).await;

    // Assert: a bounded wait, then an error that names the blocking pid.
    let logs = text(&output);
    assert!(!output.status.success(), "{logs}");
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "took {:?}",
        started.elapsed()
    );
    assert!(logs.contains(&format!("pid {holder}")), "{logs}");
    tx.rollback().await.unwrap();
    pool.close().await;
    db.cleanup().await;
}

/// The SQLite file is removed under a running daemon: it notices on its next round (every
/// acquire compares the path's identity), says so once, reports not ready, never re-creates an
/// empty database in its place, and still stops cleanly.
#[tokio::test]
async fn a_removed_sqlite_file_is_noticed_once_and_reported_not_ready() {
    let db = TestDb::sqlite().await;
    // Arrange
    let api = standin().await;
    let path = db.url.trim_start_matches("sqlite://").to_owned();
    let port = free_port();
    let mut env = daemon_env(&db.url, &api.base_url(), APIKEY);
    env.push(("SESSION_REAPER_HTTP__LISTEN".into(), format!("127.0.0.1:{port}")));
    let child = Daemon::start(&mut daemon(&["run"], &env));
    db.store.enqueue(&["before1".to_owned()], Utc::now()).await.unwrap();
    wait_for_requests(&api, 1).await;

    // Act: the file and its WAL companions go away.
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{path}{suffix}"));
    }
    let removed = Instant::now();
    let readyz = format!("http://127.0.0.1:{port}/readyz");
    let mut status = 200;
    while status == 200 && removed.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        status = reqwest::get(&readyz).await.map(|r| r.status().as_u16()).unwrap_or(0);
    }
    let noticed = removed.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    child.signal("-TERM");
    let output = child.finish().await;

    // Assert
    let logs = text(&output);
    eprintln!("/readyz answered {status} {noticed:?} after the file was removed");
    assert_eq!(status, 503, "{logs}");
    assert!(output.status.success(), "{logs}");
    assert_eq!(logs.matches("the SQLite database file is gone").count(), 1, "{logs}");
    assert!(
        !std::path::Path::new(&path).exists(),
        "an empty database was created in its place"
    );
}

/// The application holds one in-flight row locked for longer than a lease: the renewal of all
/// the other rows goes on (it skips the locked one instead of waiting), and says how many it
/// skipped.
#[tokio::test]
async fn lease_renewal_skips_a_row_the_application_holds_locked() {
    let Some(db) = TestDb::postgres().await else { return };
    // Arrange: three rows claimed by us; the application locks one of them.
    enqueue_numbered(&db, "renew", 3).await;
    let now = Utc::now();
    let claimed = db.store.claim(&claim_at("me", now, 10)).await.unwrap().rows;
    let held: Vec<session_reaper::store::RowId> = claimed.iter().map(|r| r.id).collect();
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let mut app = pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM reaper_sessions WHERE id = $1 FOR UPDATE")
        .bind(held[0])
        .execute(&mut *app)
        .await
        .unwrap();

    // Act
    let started = Instant::now();
    let renewal = db
        .store
        .renew_leases("me", &held, now + chrono::Duration::seconds(60))
        .await
        .unwrap();

    // Assert: no wait on the lock; the other two renewed; the locked one counted.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "renewal waited {:?}",
        started.elapsed()
    );
    assert_eq!((renewal.renewed, renewal.locked), (2, 1));
    app.rollback().await.unwrap();
    pool.close().await;
    db.cleanup().await;
}
