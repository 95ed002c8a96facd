//! The table as the application writes it, directly in SQL: sessions whose users come back,
//! SQLite's own date text, PostgreSQL's infinities, and poison values mixed into good rows.

use std::time::{Duration, Instant};

use session_reaper::store::State;

use crate::helpers::{
    APIKEY, Daemon, TestDb, app_sql, daemon, daemon_env, on_each_backend, run_daemon, standin, text, wait_for_requests,
};

/// `now` minus `minutes`, in the backend's own time idiom.
fn ago(db: &TestDb, minutes: u32) -> String {
    if db.name() == "sqlite" {
        format!("CAST(unixepoch('now', '-{minutes} minutes') AS INTEGER) * 1000")
    } else {
        format!("now() - interval '{minutes} minutes'")
    }
}

/// Inserts `n` sessions as the application would, last active an hour ago (so due by
/// staleness), ids `{prefix}00…`; returns the ids.
async fn insert_active(db: &TestDb, prefix: &str, n: usize) -> Vec<String> {
    let ids: Vec<String> = (0..n)
        .map(|i| format!("{prefix}{i:02}d26aa7b8029bf4f8d34c7dd0013939"))
        .collect();
    let values: Vec<String> = ids
        .iter()
        .map(|id| format!("('{id}', NULL, {})", ago(db, 60)))
        .collect();
    let insert = format!(
        "INSERT INTO reaper_sessions (session_id, delete_after, last_activity_at) VALUES {}",
        values.join(", ")
    );
    app_sql(db, &insert).await.unwrap();
    ids
}

/// The application records activity on every session now, and commits.
async fn every_user_comes_back(db: &TestDb) {
    let update = format!("UPDATE reaper_sessions SET last_activity_at = {}", ago(db, 0));
    app_sql(db, &update).await.unwrap();
}

fn state_of(rows: &[session_reaper::store::SessionRow], session_id: &str) -> (State, i32) {
    let row = rows.iter().find(|r| r.session_id == session_id).expect("row exists");
    (row.state, row.attempts)
}

#[tokio::test]
async fn a_session_whose_user_came_back_during_its_retry_is_not_deleted() {
    on_each_backend!(|db| {
        // Arrange: due by activity, and the first request fails transiently.
        let api = standin().await;
        let id = "flaky1-d26aa7b8029bf4f8d34c7dd00139392357d12";
        let insert = format!(
            "INSERT INTO reaper_sessions (session_id, delete_after, last_activity_at) VALUES ('{id}', NULL, {})",
            ago(&db, 60)
        );
        app_sql(&db, &insert).await.unwrap();
        let env = daemon_env(&db.url, &api.base_url(), APIKEY);
        assert!(run_daemon(&["run", "--once"], &env).await.status.success());
        assert_eq!(state_of(&db.store.rows().await.unwrap(), id), (State::Retrying, 1));

        // Act: the user comes back; the retry time passes; another pass runs.
        let now = ago(&db, 0);
        let touch = format!(
            "UPDATE reaper_sessions SET last_activity_at = {now}, next_attempt_at = {} WHERE session_id = '{id}'",
            ago(&db, 1)
        );
        app_sql(&db, &touch).await.unwrap();
        let output = run_daemon(&["run", "--once"], &env).await;

        // Assert: no second request; the row waits, still retrying with its one attempt.
        assert!(output.status.success(), "{}", text(&output));
        assert_eq!(
            api.state.count_for(id),
            1,
            "{}: the session was requested again",
            db.name()
        );
        assert_eq!(state_of(&db.store.rows().await.unwrap(), id), (State::Retrying, 1));
    });
}

/// Rows due by activity are queued behind a slow rate limit; mid-run the application records new
/// activity on all of them. No request may leave after the commit, beyond the recheck window.
#[tokio::test]
async fn sessions_reactivated_while_queued_behind_the_rate_limit_are_spared() {
    on_each_backend!(|db| {
        // Arrange
        let api = standin().await;
        let ids = insert_active(&db, "queued", 30).await;
        let mut env = daemon_env(&db.url, &api.base_url(), APIKEY);
        env.push(("SESSION_REAPER_WORKER__RATE_PER_SECOND".into(), "4".into()));
        env.push(("SESSION_REAPER_WORKER__BURST".into(), "1".into()));
        let running = Daemon::start(&mut daemon(&["run"], &env));
        wait_for_requests(&api, 3).await;

        // Act: the application records activity on every session, and commits.
        every_user_comes_back(&db).await;
        let committed = Instant::now();
        tokio::time::sleep(Duration::from_secs(2)).await;
        running.signal("-TERM");
        let output = running.finish().await;

        // Assert: every request after the commit came within the recheck window, and every row
        // not requested is still open with no attempt charged.
        assert!(output.status.success(), "{}", text(&output));
        let late: Vec<Duration> = api
            .state
            .requests()
            .iter()
            .filter_map(|r| r.at.checked_duration_since(committed))
            .collect();
        let window = late.iter().max().copied().unwrap_or_default();
        eprintln!(
            "{}: {} requests after the commit, the last {window:?} after it",
            db.name(),
            late.len()
        );
        assert!(
            window < Duration::from_millis(500),
            "{}: a request left {window:?} after the commit",
            db.name()
        );
        let rows = db.store.rows().await.unwrap();
        let requested = api.state.requests().len();
        assert!(requested < ids.len(), "{}: all {requested} were requested", db.name());
        let spared = rows.iter().filter(|r| !r.state.is_terminal()).count();
        assert_eq!(spared, ids.len() - requested);
        assert!(
            rows.iter()
                .filter(|r| !r.state.is_terminal())
                .all(|r| r.attempts == 0 && r.lease_owner.is_none())
        );
        assert!(text(&output).contains("not deleted: the session is no longer due"));
    });
}

#[tokio::test]
async fn sessions_reactivated_during_a_quota_pause_are_not_sent_when_it_ends() {
    on_each_backend!(|db| {
        // Arrange: the quota is spent; rows are claimed and wait in the pause.
        let api = standin().await;
        api.state.set_quota_spent(true);
        insert_active(&db, "paused", 10).await;
        let mut env = daemon_env(&db.url, &api.base_url(), APIKEY);
        env.push(("SESSION_REAPER_RETRY__QUOTA_PAUSE".into(), "1500ms".into()));
        let running = Daemon::start(&mut daemon(&["run"], &env));
        wait_for_requests(&api, 1).await;

        // Act: users come back during the pause; the quota is restored before it ends.
        every_user_comes_back(&db).await;
        let committed = Instant::now();
        api.state.set_quota_spent(false);
        tokio::time::sleep(Duration::from_secs(3)).await;
        running.signal("-TERM");
        let output = running.finish().await;

        // Assert: nothing was sent after the commit, nothing deleted, nothing charged.
        assert!(output.status.success(), "{}", text(&output));
        let after = api.state.requests().iter().filter(|r| r.at > committed).count();
        assert_eq!(after, 0, "{}: {after} requests after the users came back", db.name());
        let rows = db.store.rows().await.unwrap();
        assert!(
            rows.iter().all(|r| r.state == State::Pending && r.attempts == 0),
            "{}: {rows:?}",
            db.name()
        );
    });
}

/// 500 good rows and, among them, values the daemon cannot use. On SQLite the triggers of
/// migration 0004 refuse these at INSERT, so they are dropped first: the rows stand for data
/// written before the migration, or by a tool that bypassed it.
#[tokio::test]
async fn poison_rows_are_set_aside_and_every_good_row_is_deleted() {
    on_each_backend!(|db| {
        // Arrange
        let api = standin().await;
        let good: Vec<String> = (0..500)
            .map(|i| format!("good{i:03}d26aa7b8029bf4f8d34c7dd0013939"))
            .collect();
        db.store.enqueue(&good, chrono::Utc::now()).await.unwrap();
        let poison: &[(&str, &str)] = if db.name() == "sqlite" {
            app_sql(
                &db,
                "DROP TRIGGER reaper_sessions_session_id_is_text; DROP TRIGGER reaper_sessions_attempts_not_negative",
            )
            .await
            .unwrap();
            &[
                ("x'00ff10'", "0"),
                ("CAST(x'ff61' AS TEXT)", "0"),
                ("'attempts-huge'", "4294967296"),
                ("'attempts-real'", "1.5"),
                ("'attempts-text'", "'three'"),
                ("'attempts-negative'", "-1"),
            ]
        } else {
            &[("'attempts-max'", "2147483647")]
        };
        for (session_id, attempts) in poison {
            let insert =
                format!("INSERT INTO reaper_sessions (session_id, attempts) VALUES ({session_id}, {attempts})");
            app_sql(&db, &insert).await.unwrap();
        }
        let env = daemon_env(&db.url, &api.base_url(), APIKEY);

        // Act
        let output = run_daemon(&["run", "--once"], &env).await;

        // Assert: all good rows deleted, no outage reported, each poison row final.
        let logs = text(&output);
        assert!(output.status.success(), "{logs}");
        assert!(!logs.contains("database unavailable"), "{}: {logs}", db.name());
        let report = db
            .store
            .status(chrono::Utc::now(), Duration::from_secs(1800))
            .await
            .unwrap();
        assert_eq!(report.count(State::Deleted), 500 + i64::from(db.name() != "sqlite"));
        assert_eq!(report.open(), 0);
        if db.name() == "sqlite" {
            assert_eq!(report.count(State::Invalid), poison.len() as i64);
            let pool = sqlx::SqlitePool::connect(&db.url).await.unwrap();
            let errors: Vec<String> =
                sqlx::query_scalar("SELECT last_error FROM reaper_sessions WHERE state = 'invalid' ORDER BY id")
                    .fetch_all(&pool)
                    .await
                    .unwrap();
            assert!(errors[0].contains("session_id is blob"), "{errors:?}");
            assert!(errors[1].contains("not valid UTF-8"), "{errors:?}");
            assert!(errors[2..].iter().all(|e| e.contains("attempts")), "{errors:?}");
        }
    });
}

#[tokio::test]
async fn postgres_infinities_mean_due_now_and_never_and_nothing_panics() {
    let Some(db) = TestDb::postgres().await else { return };
    // Arrange
    let api = standin().await;
    app_sql(
        &db,
        "INSERT INTO reaper_sessions (session_id, delete_after, last_activity_at) VALUES
            ('minusinf1', '-infinity', NULL), ('plusinf1', 'infinity', NULL),
            ('actminus1', NULL, '-infinity'), ('actplus1', NULL, 'infinity'),
            ('both1', 'infinity', '-infinity')",
    )
    .await
    .unwrap();
    let env = daemon_env(&db.url, &api.base_url(), APIKEY);

    // Act
    let run = run_daemon(&["run", "--once"], &env).await;
    let status = run_daemon(&["status", "--json"], &env).await;
    let view = app_sql(&db, "SELECT * FROM reaper_status").await;

    // Assert
    assert!(run.status.success(), "{}", text(&run));
    assert!(status.status.success(), "{}", text(&status));
    assert!(view.is_ok(), "{view:?}");
    let rows = db.store.rows().await.unwrap();
    for (id, state) in [
        ("minusinf1", State::Deleted),
        ("plusinf1", State::Pending),
        ("actminus1", State::Deleted),
        ("actplus1", State::Pending),
        ("both1", State::Deleted),
    ] {
        assert_eq!(state_of(&rows, id).0, state, "{id}");
    }
    db.cleanup().await;
}

#[tokio::test]
async fn sqlite_date_text_and_epoch_seconds_mean_what_the_application_meant() {
    let db = TestDb::sqlite().await;
    // Arrange: stale ones in every accepted form, and fresh ones that must stay.
    let api = standin().await;
    let stale = [
        ("datetime1", "datetime('now', '-1 hour')"),
        ("isot1", "strftime('%Y-%m-%dT%H:%M:%SZ', 'now', '-1 hour')"),
        ("isofrac1", "strftime('%Y-%m-%dT%H:%M:%f', 'now', '-1 hour')"),
        (
            "offset1",
            "strftime('%Y-%m-%dT%H:%M:%S', 'now', '+2 hours') || '+03:00'",
        ),
        ("seconds1", "CAST(unixepoch('now', '-1 hour') AS INTEGER)"),
        (
            "digits1",
            "CAST(CAST(unixepoch('now', '-1 hour') AS INTEGER) * 1000 AS TEXT)",
        ),
    ];
    let fresh = [
        ("current1", "CURRENT_TIMESTAMP"),
        ("freshiso1", "strftime('%Y-%m-%dT%H:%M:%SZ', 'now')"),
    ];
    for (id, value) in stale.iter().chain(fresh.iter()) {
        let insert = format!(
            "INSERT INTO reaper_sessions (session_id, delete_after, last_activity_at) VALUES ('{id}', NULL, {value})"
        );
        app_sql(&db, &insert).await.unwrap();
    }
    let refused = [
        ("real1", "1733000000000.5"),
        ("nodate1", "'yesterday'"),
        ("negative1", "-5"),
        ("blobtime1", "x'01'"),
    ];
    for (id, value) in refused {
        let insert = format!("INSERT INTO reaper_sessions (session_id, delete_after) VALUES ('{id}', {value})");
        let error = app_sql(&db, &insert).await.expect_err(id).to_string();
        assert!(
            error.contains("reaper_sessions_times_are_epoch_ms_or_dates"),
            "{id}: {error}"
        );
    }
    let env = daemon_env(&db.url, &api.base_url(), APIKEY);

    // Act
    let output = run_daemon(&["run", "--once"], &env).await;

    // Assert: every stored time is epoch milliseconds now, stale ones deleted, fresh ones kept.
    assert!(output.status.success(), "{}", text(&output));
    let rows = db.store.rows().await.unwrap();
    let hour_ago = chrono::Utc::now() - chrono::Duration::hours(1);
    for (id, _) in stale {
        let row = rows.iter().find(|r| r.session_id == id).unwrap();
        assert_eq!(row.state, State::Deleted, "{id}");
        let at = row.last_activity_at.unwrap();
        assert!((at - hour_ago).num_seconds().abs() < 120, "{id}: {at}");
    }
    for (id, _) in fresh {
        assert_eq!(state_of(&rows, id).0, State::Pending, "{id}");
    }
    let pool = sqlx::SqlitePool::connect(&db.url).await.unwrap();
    let kinds: Vec<String> = sqlx::query_scalar("SELECT DISTINCT typeof(last_activity_at) FROM reaper_sessions")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(kinds, ["integer"]);
}

#[tokio::test]
async fn constraints_refuse_what_cannot_be_meant_at_insert_with_readable_names() {
    on_each_backend!(|db| {
        let cases: Vec<(&str, &str)> = vec![
            (
                "INSERT INTO reaper_sessions (session_id, attempts) VALUES ('neg1', -1)",
                "reaper_sessions_attempts_not_negative",
            ),
            (
                "INSERT INTO reaper_sessions (session_id, state) VALUES ('final1', 'deleted')",
                "reaper_sessions_final_state_has_finished_at",
            ),
        ];
        let mut cases = cases;
        if db.name() == "sqlite" {
            cases.push((
                "INSERT INTO reaper_sessions (session_id) VALUES (x'0102')",
                "reaper_sessions_session_id_is_text",
            ));
        }
        for (sql, name) in cases {
            let error = app_sql(&db, sql).await.expect_err(sql).to_string();
            assert!(error.contains(name), "{}: {sql}: {error}", db.name());
        }
    });
}
