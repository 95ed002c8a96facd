//! SIGTERM mid-run: requests in flight finish and are recorded, unstarted rows are released,
//! the process exits 0, and a later run finishes the rest with no session requested twice.

use std::time::{Duration, Instant};

use chrono::Utc;
use session_reaper::store::State;

use crate::helpers::{
    APIKEY, Daemon, daemon, daemon_env, on_each_backend, run_daemon, standin, text, wait_for_requests,
};

const ROWS: usize = 40;
/// `worker.concurrency` in the tests' daemon environment.
const CONCURRENCY: u64 = 8;

#[tokio::test]
async fn sigterm_mid_run_loses_nothing_and_exits_zero() {
    on_each_backend!(|db| {
        // Arrange: slow answers, so requests are in flight when the signal comes.
        let api = standin().await;
        api.state.set_latency(Duration::from_millis(800));
        let ids: Vec<String> = (0..ROWS).map(|i| format!("sess{i:03}")).collect();
        db.store.enqueue(&ids, Utc::now()).await.unwrap();
        let env = daemon_env(&db.url, &api.base_url(), APIKEY);
        let child = Daemon::start(&mut daemon(&["run"], &env));

        // Act: a fresh process's first request goes alone (it tests the key); the pool follows
        // its answer, 800 ms later.
        wait_for_requests(&api, CONCURRENCY + 1).await;
        child.signal("-TERM");
        let output = child.finish().await;

        // Assert: clean exit, every answered request recorded, no lease left behind.
        assert!(
            output.status.success(),
            "{}: exit {:?}\n{}",
            db.name(),
            output.status,
            text(&output)
        );
        let rows = db.store.rows().await.unwrap();
        assert_eq!(rows.len(), ROWS);
        let deleted = rows.iter().filter(|r| r.state == State::Deleted).count() as u64;
        assert_eq!(
            deleted,
            api.state.stats().requests,
            "{}: an answered request was not recorded",
            db.name()
        );
        assert!(
            deleted < ROWS as u64,
            "{}: the signal came too late to test anything",
            db.name()
        );
        // The pool's answers come 800 ms after its requests, so every request made was the first
        // one or already in flight when the signal came: rows queued behind them were not sent.
        assert!(
            deleted <= CONCURRENCY + 1,
            "{}: {deleted} requests for {CONCURRENCY} workers: a request started after SIGTERM",
            db.name()
        );
        for row in &rows {
            assert!(matches!(row.state, State::Deleted | State::Pending), "{row:?}");
            assert_eq!(row.lease_owner, None, "{}: lease not released: {row:?}", db.name());
        }

        // The next run finishes the rest; nothing is requested twice.
        api.state.set_latency(Duration::ZERO);
        let output = run_daemon(&["run", "--once"], &env).await;
        assert!(output.status.success(), "{}", text(&output));
        assert!(db.store.rows().await.unwrap().iter().all(|r| r.state == State::Deleted));
        assert!(
            ids.iter().all(|id| api.state.count_for(id) == 1),
            "{}: a session was requested twice",
            db.name()
        );
    });
}

#[tokio::test]
async fn requests_that_outlast_the_grace_are_abandoned_and_their_rows_released() {
    let db = crate::helpers::TestDb::sqlite().await;
    let api = standin().await;
    api.state.set_latency(Duration::from_secs(30));
    db.store
        .enqueue(&["slow1".to_owned(), "slow2".to_owned()], Utc::now())
        .await
        .unwrap();
    let mut env = daemon_env(&db.url, &api.base_url(), APIKEY);
    env.push(("SESSION_REAPER_SHUTDOWN__GRACE".into(), "500ms".into()));
    env.push(("SESSION_REAPER_API__TIMEOUT".into(), "60s".into()));
    let child = Daemon::start(&mut daemon(&["run"], &env));
    // A fresh process's first request goes alone: slow1 or slow2 is in flight, the other waits
    // behind it and is released unsent.
    wait_for_requests(&api, 1).await;
    let signalled = Instant::now();
    child.signal("-TERM");
    let output = child.finish().await;
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        signalled.elapsed() < Duration::from_secs(10),
        "took {:?}",
        signalled.elapsed()
    );
    for row in db.store.rows().await.unwrap() {
        assert_eq!(
            (row.state, row.attempts, row.lease_owner),
            (State::Pending, 0, None),
            "{}",
            text(&output)
        );
    }
}
