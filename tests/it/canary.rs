//! A canary apikey through every failure path: it must appear in no log line (trace level
//! included), no error, no database column, and no `status` or `check-config` output.

use std::time::Duration;

use chrono::Utc;
use session_reaper::store::State;

use crate::helpers::{Daemon, TestDb, daemon, daemon_env, run_daemon, standin, text, untouched};

const CANARY: &str = "CANARY-7f3a9c2e-do-not-leak";
const FULL_TRACE: &str = "trace,hyper=trace,hyper_util=trace,reqwest=trace,h2=trace,rustls=trace,sqlx=trace,axum=trace";

fn assert_clean(what: &str, output: &str) {
    assert!(!output.contains(CANARY), "the apikey leaked in {what}:\n{output}");
    assert!(
        !output.contains("7f3a9c2e"),
        "part of the apikey leaked in {what}:\n{output}"
    );
}

fn trace_env(db: &TestDb, base: &str) -> Vec<(String, String)> {
    let mut env = daemon_env(&db.url, base, CANARY);
    // Everything at trace, dependencies included (they are quietened unless named).
    env.push(("SESSION_REAPER_LOG__LEVEL".into(), FULL_TRACE.into()));
    env.push(("SESSION_REAPER_RETRY__KEY_PAUSE".into(), "200ms".into()));
    env.push(("SESSION_REAPER_API__TIMEOUT".into(), "300ms".into()));
    env
}

#[tokio::test]
async fn the_apikey_appears_in_no_log_error_output_or_column() {
    let db = TestDb::sqlite().await;
    let api = standin().await;
    let mut ids: Vec<String> = [
        "good-1",
        "gone-1",
        "expired-1",
        "flaky2-1",
        "busy1-1",
        "limited1-1",
        "bad-1",
        "x/../y",
        "a?apikey=",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    ids.push("\u{202e}evil".into());
    db.store.enqueue(&ids, Utc::now()).await.unwrap();
    let env = trace_env(&db, &api.base_url());
    let mut seen = String::new();

    // 1. The key is rejected (the stand-in echoes it back in its 1846 message).
    api.state.set_apikey("some-other-key");
    let child = Daemon::start(&mut daemon(&["run"], &env));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    child.signal("-TERM");
    let output = child.finish().await;
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        text(&output).contains("rejected the apikey"),
        "the key problem was not reported:\n{}",
        text(&output)
    );
    seen.push_str(&text(&output));
    // A rejected key leaves the rows untouched: no attempt charged, no answer recorded.
    let rows = db.store.rows().await.unwrap();
    for row in rows.iter().filter(|r| r.state != State::Invalid) {
        assert!(untouched(row) && row.last_api_code.is_none(), "{row:?}");
    }

    // 2. Quota spent, then every answer class, with the right key.
    api.state.set_apikey(CANARY);
    api.state.set_quota_spent(true);
    let mut quota_env = env.clone();
    quota_env.push(("SESSION_REAPER_RETRY__QUOTA_PAUSE".into(), "200ms".into()));
    let child = Daemon::start(&mut daemon(&["run"], &quota_env));
    tokio::time::sleep(Duration::from_millis(800)).await;
    api.state.set_quota_spent(false);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    child.signal("-TERM");
    let output = child.finish().await;
    seen.push_str(&text(&output));
    for _ in 0..5 {
        seen.push_str(&text(&run_daemon(&["run", "--once"], &env).await));
        tokio::time::sleep(Duration::from_millis(150)).await;
    }

    // 3. Timeouts and refused connections.
    api.state.set_latency(Duration::from_secs(2));
    db.store.enqueue(&["slow-1".to_owned()], Utc::now()).await.unwrap();
    seen.push_str(&text(&run_daemon(&["run", "--once"], &env).await));
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    db.store.enqueue(&["refused-1".to_owned()], Utc::now()).await.unwrap();
    seen.push_str(&text(
        &run_daemon(&["run", "--once"], &trace_env(&db, &format!("http://{closed}"))).await,
    ));

    // 4. Operator commands and broken configurations that carry the key.
    seen.push_str(&text(&run_daemon(&["status"], &env).await));
    seen.push_str(&text(&run_daemon(&["status", "--json"], &env).await));
    seen.push_str(&text(&run_daemon(&["check-config"], &env).await));
    let mut remote = env.clone();
    remote.push(("SESSION_REAPER_API__BASE_URL".into(), "http://192.0.2.1".into()));
    seen.push_str(&text(&run_daemon(&["check-config"], &remote).await));
    let mut spaced = env.clone();
    spaced.push(("SESSION_REAPER_API__APIKEY".into(), format!("{CANARY} x")));
    seen.push_str(&text(&run_daemon(&["run", "--once"], &spaced).await));

    // Assert: the paths really ran, and the key is nowhere.
    for expected in [
        "\"outcome\":\"deleted\"",
        "\"outcome\":\"gone\"",
        "\"outcome\":\"failed\"",
        "\"outcome\":\"invalid\"",
        "timed out",
        "could not connect",
        "quota",
        "TRACE",
    ] {
        assert!(seen.contains(expected), "no {expected:?} in the collected output");
    }
    assert_clean("logs and command output", &seen);
    let rows = format!("{:?}", db.store.rows().await.unwrap());
    assert_clean("the database", &rows);
}
