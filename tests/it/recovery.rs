//! Recovery without a restart: the SQLite file turns read-only for a few seconds under a running
//! daemon, the way a snapshot tool, a full disk's remount or an operator's `chattr` makes it.
//! The daemon notices within seconds, says so once, reports not ready meanwhile, and works again
//! as soon as the file is writable, without a restart.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::Utc;
use session_reaper::standin::StandIn;
use session_reaper::store::State;

use crate::helpers::{APIKEY, Daemon, TestDb, daemon, daemon_env_with, free_port, standin, text};
use crate::read_only::ReadOnlySpell;

/// `/readyz`'s status, 0 when nothing answers.
async fn readyz(port: u16) -> u16 {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("client");
    match client.get(format!("http://127.0.0.1:{port}/readyz")).send().await {
        Ok(response) => response.status().as_u16(),
        Err(_) => 0,
    }
}

/// Polls `/readyz` until it answers `wanted` or `limit` passes; how long it took, or `None`.
pub(crate) async fn readyz_becomes(port: u16, wanted: u16, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if readyz(port).await == wanted {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Waits (at most `limit`) until every row named in `ids` is final; how long it took, or `None`.
async fn rows_final(db: &TestDb, ids: &[&str], limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        let rows = db.store.rows().await.expect("read rows");
        let done = ids
            .iter()
            .all(|id| rows.iter().any(|r| r.session_id == *id && r.state == State::Deleted));
        if done {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// The daemon's JSON log lines at any of `levels`.
pub(crate) fn lines_at(logs: &str, levels: &[&str]) -> Vec<serde_json::Value> {
    logs.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|json| levels.iter().any(|level| json["level"] == *level))
        .collect()
}

pub(crate) fn message(line: &serde_json::Value) -> String {
    line["fields"]["message"].as_str().unwrap_or_default().to_owned()
}

/// How often each distinct message occurs.
pub(crate) fn tally(messages: &[String]) -> std::collections::BTreeMap<&str, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for message in messages {
        *counts.entry(message.as_str()).or_default() += 1;
    }
    counts
}

/// How long the database stays read-only.
const SPELL: Duration = Duration::from_secs(8);
/// The daemon's poll interval in this test.
const POLL: Duration = Duration::from_secs(1);
/// "Within seconds": the daemon's heartbeat writes every 2 s here (a third of the lease).
const NOTICE_WITHIN: Duration = Duration::from_secs(5);

/// A daemon's environment on `url` that serves `/readyz` on a free port (returned) and polls
/// every `POLL`, with leases of `lease` (the heartbeat writes every third of it).
pub(crate) fn watched_env(url: &str, api: &StandIn, lease: &str) -> (u16, Vec<(String, String)>) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let poll = format!("{}ms", POLL.as_millis());
    let settings = [
        ("http.listen", listen.as_str()),
        ("worker.poll_interval", &poll),
        ("worker.lease", lease),
    ];
    (port, daemon_env_with(url, &api.base_url(), APIKEY, &settings))
}

#[tokio::test]
async fn a_short_read_only_spell_of_the_sqlite_file_is_survived_without_a_restart() {
    // Arrange: a daemon that has already deleted rows on a real file.
    let db = TestDb::sqlite().await;
    let api = standin().await;
    let path = PathBuf::from(db.url.trim_start_matches("sqlite://"));
    // Heartbeats (a third of the lease) every 2 s: several of them fail during the spell.
    let (port, env) = watched_env(&db.url, &api, "6s");
    let child = Daemon::start(&mut daemon(&["run"], &env));
    db.store
        .enqueue(&["before1".into(), "before2".into()], Utc::now())
        .await
        .unwrap();
    assert!(
        rows_final(&db, &["before1", "before2"], Duration::from_secs(20))
            .await
            .is_some(),
        "the rows before the spell were never deleted"
    );
    assert_eq!(readyz(port).await, 200, "not ready before the spell");

    // Act: the file turns read-only for a few seconds, then writable again.
    let mut spell = ReadOnlySpell::begin(&path);
    let began = Instant::now();
    let noticed = readyz_becomes(port, 503, SPELL).await;
    let mut statuses = Vec::new();
    while began.elapsed() < SPELL {
        statuses.push(readyz(port).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    spell.undo();
    let ended = Instant::now();
    let ready_again = readyz_becomes(port, 200, Duration::from_secs(20)).await;
    db.store.enqueue(&["after1".into()], Utc::now()).await.unwrap();
    let deleted_after = rows_final(&db, &["after1"], POLL + NOTICE_WITHIN).await;
    let row_deleted = ended.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    child.signal("-TERM");
    let output = child.finish().await;

    // Assert
    let logs = text(&output);
    // The spell's start: every WARN and ERROR line. Its end: the outages' end lines (they say
    // how long the outage lasted) and the store's own.
    let troubles: Vec<String> = lines_at(&logs, &["WARN", "ERROR"]).iter().map(message).collect();
    let recoveries: Vec<String> = lines_at(&logs, &["INFO"])
        .iter()
        .filter(|line| !line["fields"]["outage_s"].is_null() || message(line).contains("writable again"))
        .map(message)
        .collect();
    let ready_during = statuses.iter().filter(|s| **s == 200).count();
    eprintln!(
        "read-only spell of {SPELL:?}: /readyz 503 after {noticed:?}; during the rest of the spell \
         {ready_during} of {} answers were 200; after the spell ended: /readyz 200 after \
         {ready_again:?}, the new row deleted {deleted_after:?} after it was inserted ({row_deleted:?} \
         after the spell ended)",
        statuses.len()
    );
    eprintln!("WARN/ERROR lines: {} {:?}", troubles.len(), tally(&troubles));
    eprintln!("recovery lines: {} {:?}", recoveries.len(), tally(&recoveries));
    // Every check, so that one failure does not hide the others.
    let mut failures = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            failures.push(what);
        }
    };
    check(output.status.success(), format!("exit {:?}", output.status));
    check(
        noticed.is_some_and(|t| t < NOTICE_WITHIN),
        format!("/readyz said 503 only after {noticed:?} (None: never during the spell)"),
    );
    check(
        ready_during == 0,
        format!(
            "/readyz said ready during the spell after it had noticed (readiness follows the last \
             store call, and an idle daemon's reads succeed on a read-only file): {statuses:?}"
        ),
    );
    check(
        ready_again.is_some_and(|t| t < NOTICE_WITHIN),
        format!("/readyz said 200 only {ready_again:?} after the spell ended (None: not within 20 s)"),
    );
    check(
        deleted_after.is_some(),
        format!(
            "a row inserted after the spell was not deleted within {:?}",
            POLL + NOTICE_WITHIN
        ),
    );
    check(!troubles.is_empty(), "the spell was never logged".to_owned());
    check(
        !recoveries.is_empty(),
        "the end of the spell was never logged".to_owned(),
    );
    for (message, count) in tally(&troubles).into_iter().chain(tally(&recoveries)) {
        check(count == 1, format!("logged {count} times, not once: {message:?}"));
    }
    // The condition itself, by the store: its start and its end, once each.
    for (wanted, lines) in [("cannot be written", &troubles), ("writable again", &recoveries)] {
        let count = lines.iter().filter(|m| m.contains(wanted)).count();
        check(count == 1, format!("{count} lines, not one, say {wanted:?}"));
    }
    assert!(failures.is_empty(), "{failures:#?}\n{logs}");
}

/// An idle daemon (a 30 s lease: heartbeats 10 s apart) notices a read-only spell at its next
/// poll, which looks at the files without a query, not at its next heartbeat's failed write.
#[tokio::test]
async fn an_idle_daemon_reports_a_read_only_spell_within_about_a_poll_interval() {
    // Arrange
    let db = TestDb::sqlite().await;
    let api = standin().await;
    let path = PathBuf::from(db.url.trim_start_matches("sqlite://"));
    let (port, env) = watched_env(&db.url, &api, "30s");
    let child = Daemon::start(&mut daemon(&["run"], &env));
    assert!(
        readyz_becomes(port, 200, Duration::from_secs(15)).await.is_some(),
        "never ready"
    );

    // Act
    let mut spell = ReadOnlySpell::begin(&path);
    let noticed = readyz_becomes(port, 503, SPELL).await;
    spell.undo();
    let ready_again = readyz_becomes(port, 200, Duration::from_secs(15)).await;
    child.signal("-TERM");
    let output = child.finish().await;

    // Assert: 503 within the poll interval and two seconds of slack for a loaded machine (the
    // heartbeat may be 10 s away).
    let logs = text(&output);
    eprintln!("idle daemon, read-only spell: /readyz 503 after {noticed:?}; 200 again {ready_again:?} after it ended");
    assert!(output.status.success(), "{logs}");
    assert!(
        noticed.is_some_and(|t| t < POLL + Duration::from_secs(2)),
        "/readyz said 503 only after {noticed:?}\n{logs}"
    );
    assert!(ready_again.is_some(), "/readyz never said 200 again\n{logs}");
}
