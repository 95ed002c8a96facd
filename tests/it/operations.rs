//! What operators meet: systemd notifications, health and metrics, status in the database,
//! requeue and prune, and the cost of an idle daemon.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use chrono::Utc;
use session_reaper::store::{OutcomeWrite, State};

use crate::helpers::{
    APIKEY, Daemon, TestDb, claim_at, daemon, daemon_env, finished, free_port, get, run_daemon, standin, text,
};

fn spawn(command: &mut std::process::Command) -> Daemon {
    Daemon::start(command)
}

fn sigterm(child: &Daemon) {
    child.signal("-TERM");
}

async fn finish(child: Daemon) -> std::process::Output {
    child.finish().await
}

#[tokio::test]
async fn systemd_hears_ready_then_watchdog_then_stopping() {
    let db = TestDb::sqlite().await;
    let api = standin().await;
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let env = daemon_env(&db.url, &api.base_url(), APIKEY);
    let child = spawn(
        daemon(&["run"], &env)
            .env("NOTIFY_SOCKET", &socket_path)
            .env("WATCHDOG_USEC", "1000000"),
    );
    let mut heard = Vec::new();
    let mut buffer = [0u8; 4096];
    let mut receive = |heard: &mut Vec<String>, wanted: &str| {
        while !heard.iter().any(|m| m.contains(wanted)) {
            let n = socket
                .recv(&mut buffer)
                .unwrap_or_else(|e| panic!("no {wanted} (heard {heard:?}): {e}"));
            heard.push(String::from_utf8_lossy(&buffer[..n]).into_owned());
        }
    };
    receive(&mut heard, "READY=1");
    receive(&mut heard, "WATCHDOG=1");
    sigterm(&child);
    receive(&mut heard, "STOPPING=1");
    let output = finish(child).await;
    assert!(output.status.success(), "{}", text(&output));
    let position = |wanted: &str| heard.iter().position(|m| m.contains(wanted)).unwrap();
    assert!(position("READY=1") <= position("WATCHDOG=1"), "{heard:?}");
    assert!(position("WATCHDOG=1") < position("STOPPING=1"), "{heard:?}");
}

#[tokio::test]
async fn health_and_metrics_tell_an_operator_what_is_happening() {
    let db = TestDb::sqlite().await;
    let api = standin().await;
    db.store
        .enqueue(&["m1".into(), "gone-m2".into(), "bad id".into()], Utc::now())
        .await
        .unwrap();
    let port = free_port();
    let mut env = daemon_env(&db.url, &api.base_url(), APIKEY);
    env.push(("SESSION_REAPER_HTTP__LISTEN".into(), format!("127.0.0.1:{port}")));
    env.push(("SESSION_REAPER_RETRY__KEY_PAUSE".into(), "300ms".into()));
    let child = spawn(&mut daemon(&["run"], &env));

    assert_eq!(get(port, "/livez").await.0, 200);
    let deadline = Instant::now() + Duration::from_secs(15);
    while db.store.rows().await.unwrap().iter().any(|r| !r.state.is_terminal()) {
        assert!(Instant::now() < deadline, "rows never finished");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(get(port, "/readyz").await, (200, "ready\n".to_owned()));
    let (status, metrics) = get(port, "/metrics").await;
    assert_eq!(status, 200);
    for line in [
        "session_reaper_deletions_total{outcome=\"deleted\"} 1",
        "session_reaper_deletions_total{outcome=\"gone\"} 1",
        "session_reaper_deletions_total{outcome=\"invalid\"} 1",
        "session_reaper_api_answers_total{class=\"deleted\"} 1",
        "session_reaper_api_request_duration_seconds_count 2",
        "session_reaper_attempts_total 2",
        "session_reaper_in_flight 0",
        "session_reaper_rate_limit_per_second 1000",
        "session_reaper_live_instances 1",
        "session_reaper_database_errors_total 0",
        "session_reaper_lease_takeovers_total 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "no {line:?} in:\n{metrics}");
    }
    for name in [
        "session_reaper_due_backlog",
        "session_reaper_oldest_due_age_seconds",
        "session_reaper_rate_limit_waits_total",
        "session_reaper_pauses_total{reason=\"rate_limited\"} 0",
    ] {
        assert!(metrics.contains(name), "no {name} in:\n{metrics}");
    }
    assert!(
        !metrics.contains("m1") && !metrics.contains(APIKEY),
        "ids or keys in labels:\n{metrics}"
    );

    // A rejected key makes the process unready (but still live).
    api.state.set_apikey("rotated");
    db.store.enqueue(&["m3".into()], Utc::now()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = get(port, "/readyz").await;
        if status == 503 {
            // The reason, then the cluster's pause it began.
            let lines: Vec<&str> = body.lines().collect();
            assert_eq!(lines[0], "the API rejected the apikey", "{body}");
            assert!(
                lines
                    .get(1)
                    .is_some_and(|l| l.starts_with("the cluster is paused: key_rejected until ")),
                "{body}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "/readyz never noticed the rejected key");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(get(port, "/livez").await.0, 200);
    api.state.set_apikey(APIKEY);
    let deadline = Instant::now() + Duration::from_secs(15);
    while get(port, "/readyz").await.0 != 200 {
        assert!(
            Instant::now() < deadline,
            "/readyz never recovered after the key was fixed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sigterm(&child);
    assert!(finish(child).await.status.success());
}

#[tokio::test]
async fn status_in_the_database_and_on_the_command_line_agree() {
    let db = TestDb::sqlite().await;
    let api = standin().await;
    db.store
        .enqueue(&["s1".into(), "gone-s2".into(), "bad-s3".into()], Utc::now())
        .await
        .unwrap();
    let env = daemon_env(&db.url, &api.base_url(), APIKEY);
    assert!(run_daemon(&["run", "--once"], &env).await.status.success());

    let output = run_daemon(&["status", "--json"], &env).await;
    assert!(output.status.success(), "{}", text(&output));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    for (state, count) in [
        ("pending", 0),
        ("retrying", 0),
        ("deleted", 1),
        ("gone", 1),
        ("failed", 1),
        ("invalid", 0),
    ] {
        assert_eq!(json[state], count, "{state} in {json}");
    }
    // The gone and the failed row were answered in the same instant; either may be the last.
    assert!(
        json["last_success"].is_string() && json["last_error"].is_string(),
        "{json}"
    );
    assert_eq!(json["instances"], serde_json::json!([]));

    let pool = sqlx::SqlitePool::connect(&db.url).await.unwrap();
    let (deleted, gone, failed, last_error): (i64, i64, i64, String) =
        sqlx::query_as("SELECT deleted, gone, failed, last_error FROM reaper_status")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((deleted, gone, failed), (1, 1, 1));
    assert_eq!(serde_json::Value::from(last_error), json["last_error"]);
}

#[tokio::test]
async fn requeue_moves_failed_rows_back_and_prune_deletes_old_finished_rows() {
    let db = TestDb::sqlite().await;
    let api = standin().await;
    db.store
        .enqueue(&["bad-r1".into(), "bad-r2".into(), "r3".into()], Utc::now())
        .await
        .unwrap();
    let env = daemon_env(&db.url, &api.base_url(), APIKEY);
    assert!(run_daemon(&["run", "--once"], &env).await.status.success());

    let output = run_daemon(&["requeue", "--failed"], &env).await;
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "requeued 2 sessions",
        "{}",
        text(&output)
    );
    let requeued: Vec<_> = db
        .store
        .rows()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.session_id.starts_with("bad"))
        .collect();
    assert!(
        requeued
            .iter()
            .all(|r| r.state == State::Pending && r.attempts == 0 && r.finished_at.is_none()),
        "{requeued:?}"
    );
    let output = run_daemon(&["requeue", "r3"], &env).await;
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "requeued 1 sessions",
        "{}",
        text(&output)
    );

    // Prune: only final rows finished before the cutoff go.
    let old = Utc::now() - chrono::Duration::days(40);
    let claimed = db.store.claim(&claim_at("test", Utc::now(), 2)).await.unwrap().rows;
    let writes: Vec<OutcomeWrite> = claimed
        .iter()
        .map(|row| finished(row.id, State::Deleted, old))
        .collect();
    db.store.write_outcomes("test", &writes).await.unwrap();
    let output = run_daemon(&["prune", "--older-than", "30d"], &env).await;
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "pruned 2 finished sessions older than 30days",
        "{}",
        text(&output)
    );
    assert_eq!(db.store.rows().await.unwrap().len(), 1);
}

#[tokio::test]
async fn an_idle_daemon_costs_about_one_query_per_poll_interval() {
    let db = TestDb::sqlite().await;
    let api = standin().await;
    let port = free_port();
    let mut env = daemon_env(&db.url, &api.base_url(), APIKEY);
    env.push(("SESSION_REAPER_HTTP__LISTEN".into(), format!("127.0.0.1:{port}")));
    env.push(("SESSION_REAPER_WORKER__POLL_INTERVAL".into(), "5s".into()));
    env.push(("SESSION_REAPER_WORKER__LEASE".into(), "30s".into()));
    let child = spawn(&mut daemon(&["run"], &env));
    let round_trips = |metrics: &str| -> u64 {
        let line = metrics
            .lines()
            .find(|l| l.starts_with("session_reaper_database_round_trips_total"))
            .unwrap();
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let cpu = |pid: u32| -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let fields: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    };
    let before = round_trips(&get(port, "/metrics").await.1);
    let cpu_before = cpu(child.id());
    tokio::time::sleep(Duration::from_secs(30)).await;
    let after = round_trips(&get(port, "/metrics").await.1);
    let cpu_ticks = cpu(child.id()) - cpu_before;
    sigterm(&child);
    assert!(finish(child).await.status.success());

    // 30 s: 6 polls (5 s) + 3 heartbeats (a third of the 30 s lease), one spare for timing.
    let made = after - before;
    eprintln!("idle daemon: {made} database round trips and {cpu_ticks} CPU ticks (1/100 s) in 30 s");
    assert!(made <= 10, "an idle daemon made {made} round trips in 30 s");
    assert!(
        made >= 6,
        "the idle daemon stopped polling ({made} round trips in 30 s)"
    );
}

#[tokio::test]
async fn enqueue_inserts_valid_ids_once_and_reports_malformed_lines() {
    let db = TestDb::sqlite().await;
    let env = daemon_env(&db.url, "http://127.0.0.1:9", APIKEY);
    let input = "abc123\n\nabc123\nd26aa7b8029bf4f8d34c7dd0013\nbad id\n../x\n";
    let mut command = daemon(&["enqueue"], &env);
    command.stdin(std::process::Stdio::piped());
    let output = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = command
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(output.status.code(), Some(65), "{}", text(&output));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "enqueued 2 new, 1 already present, 2 malformed"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("line 5: session id has a space at byte 3"), "{stderr}");
    assert!(stderr.contains("line 6:"), "{stderr}");
    let ids: Vec<String> = db
        .store
        .rows()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.session_id)
        .collect();
    assert_eq!(ids, ["abc123", "d26aa7b8029bf4f8d34c7dd0013"]);
}

#[tokio::test]
async fn the_readme_demo_runs_every_kind_of_session_to_a_final_state() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("demo.db").display().to_string();
    let demo = Daemon::start(&mut daemon(&["demo", "--database", &database, "--sessions", "60"], &[]));
    let output = tokio::time::timeout(Duration::from_secs(60), demo.finish())
        .await
        .expect("demo finished within 60 s");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", text(&output));
    for line in [
        "pending    0",
        "retrying   0",
        "in flight  0",
        "0 off the contract path",
    ] {
        assert!(stdout.contains(line), "no {line:?} in:\n{stdout}");
    }
    for state in ["deleted", "gone", "failed", "invalid"] {
        let count: i64 = stdout
            .lines()
            .find(|l| l.starts_with(state))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(count > 0, "no {state} sessions in the demo:\n{stdout}");
    }
}

#[tokio::test]
async fn a_daemon_whose_last_claim_found_nothing_still_claims_new_rows() {
    // Arrange: a row that looks due but that this daemon may not claim (its own expired lease),
    // so a claim comes back empty; then real work arrives.
    let db = TestDb::sqlite().await;
    let api = standin().await;
    let env = daemon_env(&db.url, &api.base_url(), APIKEY);
    let child = spawn(&mut daemon(&["run"], &env));
    let deadline = Instant::now() + Duration::from_secs(15);
    let owner = loop {
        if let Some(instance) = db.store.instances().await.unwrap().first() {
            break instance.beat.instance_id.clone();
        }
        assert!(Instant::now() < deadline, "the daemon never registered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    db.store.enqueue(&["ghost1".into()], Utc::now()).await.unwrap();
    let pool = sqlx::SqlitePool::connect(&db.url).await.unwrap();
    sqlx::query("UPDATE reaper_sessions SET lease_owner = ?1, lease_expires_at = 0 WHERE session_id = 'ghost1'")
        .bind(&owner)
        .execute(&pool)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Act
    db.store
        .enqueue(&["late1".into(), "late2".into()], Utc::now())
        .await
        .unwrap();

    // Assert
    let deadline = Instant::now() + Duration::from_secs(15);
    while api.state.count_for("late1") + api.state.count_for("late2") < 2 {
        assert!(
            Instant::now() < deadline,
            "rows enqueued after an empty claim were never claimed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        api.state.count_for("ghost1"),
        0,
        "a row under the daemon's own expired lease was sent"
    );
    sigterm(&child);
    assert!(finish(child).await.status.success());
}
