//! Every Office Integrator editor, on both backends, through the daemon as a process against the
//! stand-in: each row goes to its editor's path, each answer is read by its editor's codes, and a
//! rejected key or spent quota of any editor pauses the pool without charging a row.

use std::io::Write;
use std::process::Stdio;

use chrono::Utc;
use session_reaper::editor::Editor;
use session_reaper::store::{SessionRow, State};

use crate::helpers::{
    APIKEY, TestDb, app_sql, daemon, daemon_env, on_each_backend, run_daemon, standin, text, untouched,
};

/// Ids of `editor`'s sessions, `n` of them, with a scenario prefix (`""` for plain success).
fn ids(editor: Editor, prefix: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("{prefix}{}{i:02}d26aa7b8029bf4f8d34c7dd0013", editor.label()))
        .collect()
}

/// `n` sessions of every editor (see `ids`), due now.
async fn enqueue_for_each_editor(db: &TestDb, prefix: &str, n: usize) {
    for editor in Editor::ALL {
        db.store
            .enqueue_editor(&ids(editor, prefix, n), editor, Utc::now())
            .await
            .unwrap();
    }
}

async fn rows_of(db: &TestDb, editor: Editor) -> Vec<SessionRow> {
    let rows = db.store.rows().await.unwrap();
    rows.into_iter().filter(|r| r.editor == editor).collect()
}

/// `run --once` with `env`, which must exit with `code`; its output.
async fn run_once_exiting(db: &TestDb, editor: Editor, env: &[(String, String)], code: i32) -> std::process::Output {
    let output = run_daemon(&["run", "--once"], env).await;
    assert_eq!(
        output.status.code(),
        Some(code),
        "{}: {editor}: {}",
        db.name(),
        text(&output)
    );
    output
}

/// The run logged the pause `message` once, naming the editor's own API `code`.
fn assert_paused_once(db: &TestDb, editor: Editor, output: &std::process::Output, message: &str, code: &str) {
    let paused = log_lines(&output.stderr, message);
    let code: i64 = code.parse().unwrap();
    assert_eq!(paused.len(), 1, "{}: {editor}: {}", db.name(), text(output));
    assert_eq!(paused[0]["api_code"], code, "{}: {editor}", db.name());
}

/// Every row of `editor` is deleted, with one attempt each.
async fn assert_deleted_with_one_attempt(db: &TestDb, editor: Editor) {
    let rows = rows_of(db, editor).await;
    assert!(
        rows.iter().all(|r| r.state == State::Deleted && r.attempts == 1),
        "{}: {editor}: {rows:?}",
        db.name()
    );
}

/// `n` sessions of each editor (ids starting with `prefix`), then one `run --once` over them:
/// the stand-in that answered, the daemon's environment and its output.
async fn one_pass_over_each_editor(
    db: &TestDb,
    prefix: &str,
    n: usize,
) -> (
    session_reaper::standin::StandIn,
    Vec<(String, String)>,
    std::process::Output,
) {
    let api = standin().await;
    enqueue_for_each_editor(db, prefix, n).await;
    let env = daemon_env(&db.url, &api.base_url(), APIKEY);
    let output = run_daemon(&["run", "--once"], &env).await;
    (api, env, output)
}

/// The `fields` of every JSON log line with this message.
fn log_lines(stderr: &[u8], message: &str) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stderr)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|v| v["fields"]["message"] == message)
        .map(|v| v["fields"].clone())
        .collect()
}

#[tokio::test]
async fn each_editor_is_sent_to_its_own_path_and_its_success_shape_counts_as_deleted() {
    on_each_backend!(|db| {
        // Arrange, Act: three sessions of each editor, one pass.
        let (api, env, output) = one_pass_over_each_editor(&db, "", 3).await;

        // Assert: every row deleted, each request on its editor's path, three per editor.
        assert_eq!(output.status.code(), Some(0), "{}: {}", db.name(), text(&output));
        let requests = api.state.requests();
        assert_eq!(requests.len(), 12, "{}: {requests:?}", db.name());
        for editor in Editor::ALL {
            let rows = rows_of(&db, editor).await;
            assert_eq!(rows.len(), 3, "{}: {editor}", db.name());
            for row in rows {
                assert_eq!(row.state, State::Deleted, "{}: {row:?}", db.name());
                let path = format!("/{}/{}", editor.sessions_path().join("/"), row.session_id);
                assert_eq!(
                    requests
                        .iter()
                        .filter(|r| r.path == path && r.method == "DELETE")
                        .count(),
                    1,
                    "{}: {path} in {requests:?}",
                    db.name()
                );
            }
            assert_eq!(
                api.state.stats().per_editor[editor.label()],
                3,
                "{}: {editor}",
                db.name()
            );
        }
        assert_eq!(api.state.stats().off_contract, 0);
        // The `deletion finished` line names the editor.
        let finished = log_lines(&output.stderr, "deletion finished");
        for editor in Editor::ALL {
            let n = finished.iter().filter(|f| f["editor"] == editor.label()).count();
            assert_eq!(n, 3, "{}: {editor}: {finished:?}", db.name());
        }
        // `status --json` counts per editor (every editor, every state).
        let output = run_daemon(&["status", "--json"], &env).await;
        assert!(output.status.success(), "{}", text(&output));
        let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        for editor in Editor::ALL {
            assert_eq!(status["editors"][editor.label()]["deleted"], 3, "{status}");
            assert_eq!(status["editors"][editor.label()]["pending"], 0, "{status}");
        }
        assert_eq!(status["deleted"], 12, "{status}");
        let output = run_daemon(&["status"], &env).await;
        assert!(text(&output).contains("editor sheet: deleted 3"), "{}", text(&output));
    });
}

#[tokio::test]
async fn only_writer_reads_1833_as_gone_the_other_editors_retry_it() {
    on_each_backend!(|db| {
        // Arrange, Act: a session the stand-in answers 1833 for, per editor; one pass (retries
        // scheduled for later wait for the next one).
        let (_api, _env, output) = one_pass_over_each_editor(&db, "gone-", 1).await;

        // Assert
        assert!(output.status.success(), "{}: {}", db.name(), text(&output));
        let writer = &rows_of(&db, Editor::Writer).await[0];
        assert_eq!(
            (writer.state, writer.attempts, writer.last_api_code),
            (State::Gone, 1, Some(1833))
        );
        for editor in [Editor::Sheet, Editor::Show, Editor::Pdf] {
            let row = &rows_of(&db, editor).await[0];
            assert_eq!(
                (row.state, row.attempts, row.last_api_code),
                (State::Retrying, 1, Some(1833)),
                "{}: {editor}: an undocumented code must not end the row as gone",
                db.name()
            );
        }
    });
}

#[tokio::test]
async fn a_rejected_key_of_any_editor_pauses_the_pool_and_charges_nothing() {
    on_each_backend!(|db| {
        for editor in Editor::ALL {
            // Arrange: only this editor's sessions, and a wrong key.
            let api = standin().await;
            let sessions = ids(editor, "key-", 5);
            db.store.enqueue_editor(&sessions, editor, Utc::now()).await.unwrap();
            let wrong = daemon_env(&db.url, &api.base_url(), "not-the-key");

            // Act, and Assert: exit 77 from the editor's own code, the rows untouched.
            let output = run_once_exiting(&db, editor, &wrong, 77).await;
            assert_paused_once(
                &db,
                editor,
                &output,
                "the API rejected the apikey: all calls stopped, rows untouched; fix api.apikey",
                editor.key_rejected_code(),
            );
            let requests = api.state.requests();
            assert!(
                requests
                    .iter()
                    .all(|r| r.path.starts_with(&format!("/{}/", editor.sessions_path()[0]))),
                "{requests:?}"
            );
            let rows = db.store.rows().await.unwrap();
            for row in rows.iter().filter(|r| sessions.contains(&r.session_id)) {
                assert!(untouched(row), "{}: {row:?}", db.name());
            }

            // And with the right key, they go.
            run_once_exiting(&db, editor, &daemon_env(&db.url, &api.base_url(), APIKEY), 0).await;
            assert_deleted_with_one_attempt(&db, editor).await;
        }
    });
}

#[tokio::test]
async fn a_spent_quota_of_any_editor_pauses_the_pool_and_charges_nothing() {
    on_each_backend!(|db| {
        for editor in Editor::ALL {
            // Arrange
            let api = standin().await;
            api.state.set_quota_spent(true);
            let sessions = ids(editor, "quota-", 5);
            db.store.enqueue_editor(&sessions, editor, Utc::now()).await.unwrap();
            let env = daemon_env(&db.url, &api.base_url(), APIKEY);

            // Act, and Assert: exit 75 (rows left for the next run) on the editor's own quota code.
            let output = run_once_exiting(&db, editor, &env, 75).await;
            assert_paused_once(
                &db,
                editor,
                &output,
                "the account's API quota is spent: all calls paused",
                editor.quota_code(),
            );
            for row in rows_of(&db, editor).await {
                assert_eq!((row.state, row.attempts), (State::Pending, 0), "{}: {row:?}", db.name());
            }

            // Quota back: deleted, one attempt each.
            api.state.set_quota_spent(false);
            run_once_exiting(&db, editor, &env, 0).await;
            assert_deleted_with_one_attempt(&db, editor).await;
        }
    });
}

#[tokio::test]
async fn enqueue_takes_an_editor_and_the_table_refuses_an_unknown_one_by_name() {
    on_each_backend!(|db| {
        let api = standin().await;
        let env = daemon_env(&db.url, &api.base_url(), APIKEY);
        // enqueue --editor show
        let mut command = daemon(&["enqueue", "--editor", "show"], &env);
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(b"show-a1\nshow-a2\n").unwrap();
        let output = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
            .await
            .unwrap();
        assert!(output.status.success(), "{}", text(&output));
        let rows = db.store.rows().await.unwrap();
        assert_eq!(rows.len(), 2);
        assert!(rows.iter().all(|r| r.editor == Editor::Show), "{rows:?}");

        // An editor the daemon does not know is a usage error.
        let output = run_daemon(&["enqueue", "--editor", "word"], &env).await;
        assert_eq!(output.status.code(), Some(2), "{}", text(&output));

        // The application's INSERT: the default is writer, an unknown editor is refused by name.
        let default = "plain-1";
        app_sql(&db, "INSERT INTO reaper_sessions (session_id) VALUES ('plain-1')")
            .await
            .unwrap();
        let refused = app_sql(
            &db,
            "INSERT INTO reaper_sessions (session_id, editor) VALUES ('w-1', 'word')",
        )
        .await;
        if db.name() == "sqlite" {
            // SQLite's trigger also refuses an UPDATE to a name it does not know.
            assert!(
                app_sql(&db, "UPDATE reaper_sessions SET editor = 'Sheet'")
                    .await
                    .is_err()
            );
        }
        let error = format!("{:#}", refused.unwrap_err());
        assert!(
            error.contains("reaper_sessions_editor_is_known"),
            "{}: {error}",
            db.name()
        );
        let rows = db.store.rows().await.unwrap();
        assert_eq!(
            rows.iter().find(|r| r.session_id == default).unwrap().editor,
            Editor::Writer
        );
    });
}

#[tokio::test]
async fn a_sqlite_row_written_around_the_check_is_set_aside_naming_the_editor() {
    let db = TestDb::sqlite().await;
    let api = standin().await;
    let pool = sqlx::SqlitePool::connect(&db.url).await.unwrap();
    let mut conn = pool.acquire().await.unwrap();
    sqlx::raw_sql(
        "PRAGMA ignore_check_constraints = ON;
         INSERT INTO reaper_sessions (session_id, editor) VALUES ('odd-1', 'word');
         INSERT INTO reaper_sessions (session_id, editor) VALUES ('odd-2', x'00ff');
         INSERT INTO reaper_sessions (session_id) VALUES ('fine-1');
         PRAGMA ignore_check_constraints = OFF;",
    )
    .execute(&mut *conn)
    .await
    .unwrap();
    drop(conn);
    pool.close().await;

    let output = run_daemon(&["run", "--once"], &daemon_env(&db.url, &api.base_url(), APIKEY)).await;

    assert!(output.status.success(), "{}", text(&output));
    // The odd rows cannot be read back as `SessionRow`s (their editor is unknown): look directly.
    let pool = sqlx::SqlitePool::connect(&db.url).await.unwrap();
    let found: Vec<(String, String, Option<String>)> =
        sqlx::query_as("SELECT session_id, state, last_error FROM reaper_sessions ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    pool.close().await;
    assert_eq!(found[0].1, "invalid", "{found:?}");
    assert!(found[0].2.as_deref().unwrap().contains("editor = 'word'"), "{found:?}");
    assert_eq!(found[1].1, "invalid", "{found:?}");
    assert!(found[1].2.as_deref().unwrap().contains("editor = X'00FF'"), "{found:?}");
    assert_eq!(found[2].1, "deleted", "{found:?}");
    assert_eq!(api.state.requests().len(), 1);
    db.cleanup().await;
}

// ---- `[source]`: stale sessions read from the application's own table ----

/// The application's sessions: (id, editor or NULL, minutes since last activity).
const APP_SESSIONS: &[(&str, Option<&str>, i64)] = &[
    ("stale-w1", None, 45),
    ("stale-w2", Some("writer"), 90),
    ("stale-s1", Some("sheet"), 31),
    ("stale-h1", Some("show"), 120),
    ("stale-p1", Some("pdf"), 300),
    ("fresh-w1", None, 1),
    ("fresh-s1", Some("sheet"), 29),
    // Stale, but older than the window (a session expires by itself after 6 hours).
    ("ancient-w1", None, 60 * 24 * 3),
];

const SQLITE_APP_QUERY: &str = "SELECT sid AS session_id, kind AS editor FROM app_sessions
     WHERE last_seen < CAST(strftime('%s', 'now') AS INTEGER) - 30 * 60
       AND last_seen > CAST(strftime('%s', 'now') AS INTEGER) - 7 * 3600";
const PG_APP_QUERY: &str = "SELECT sid AS session_id, kind AS editor FROM app_sessions
     WHERE last_seen < now() - interval '30 minutes' AND last_seen > now() - interval '7 hours'";

/// The application's own SQLite file (rollback journal, as most applications leave it).
async fn sqlite_app(dir: &std::path::Path) -> (std::path::PathBuf, String) {
    let path = dir.join("app.db");
    let url = format!("sqlite://{}", path.display());
    let options = <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(&url)
        .unwrap()
        .create_if_missing(true);
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    sqlx::query("CREATE TABLE app_sessions (sid TEXT PRIMARY KEY, kind TEXT, last_seen INTEGER NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("CREATE INDEX app_sessions_last_seen ON app_sessions (last_seen)")
        .execute(&pool)
        .await
        .unwrap();
    for (sid, kind, minutes) in APP_SESSIONS {
        sqlx::query("INSERT INTO app_sessions VALUES (?1, ?2, CAST(strftime('%s', 'now') AS INTEGER) - ?3 * 60)")
            .bind(sid)
            .bind(kind)
            .bind(minutes)
            .execute(&pool)
            .await
            .unwrap();
    }
    pool.close().await;
    (path, url)
}

/// Waits until `n` rows are final, or panics after 30 s.
async fn wait_final(db: &TestDb, n: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let rows = db.store.rows().await.unwrap();
        if rows.iter().filter(|r| r.state.is_terminal()).count() >= n {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{}: {rows:?}", db.name());
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

fn source_env(db: &TestDb, api: &session_reaper::standin::StandIn, url: &str, query: &str) -> Vec<(String, String)> {
    let mut env = daemon_env(&db.url, &api.base_url(), APIKEY);
    env.push(("SESSION_REAPER_SOURCE__URL".into(), url.into()));
    env.push(("SESSION_REAPER_SOURCE__QUERY".into(), query.into()));
    env.push(("SESSION_REAPER_SOURCE__INTERVAL".into(), "200ms".into()));
    env
}

/// The stale sessions ended deleted on their editors' paths, each requested once; the fresh and
/// the ancient ones never reached the table.
fn assert_source_outcome(db_name: &str, rows: &[SessionRow], api: &session_reaper::standin::StandIn) {
    for (sid, kind, _) in APP_SESSIONS {
        let row = rows.iter().find(|r| r.session_id == *sid);
        if sid.starts_with("stale-") {
            let row = row.unwrap_or_else(|| panic!("{db_name}: {sid} not queued: {rows:?}"));
            assert_eq!(row.state, State::Deleted, "{db_name}: {row:?}");
            assert_eq!(
                row.editor,
                Editor::parse(kind.unwrap_or("writer")).unwrap(),
                "{db_name}: {row:?}"
            );
            // Found again every interval, but final: never sent again.
            assert_eq!(api.state.count_for(sid), 1, "{db_name}: {sid}");
        } else {
            assert!(row.is_none(), "{db_name}: {sid} must not be queued: {row:?}");
            assert_eq!(api.state.count_for(sid), 0, "{db_name}: {sid}");
        }
    }
}

#[tokio::test]
async fn a_sqlite_source_feeds_the_daemon_read_only_on_either_backend() {
    on_each_backend!(|db| {
        // Arrange: the application's file, not writable, and its bytes.
        let dir = tempfile::tempdir().unwrap();
        let (path, url) = sqlite_app(dir.path()).await;
        let mut permissions = std::fs::metadata(&path).unwrap().permissions();
        permissions.set_readonly(true);
        std::fs::set_permissions(&path, permissions).unwrap();
        let before = std::fs::read(&path).unwrap();
        let api = standin().await;
        let env = source_env(&db, &api, &format!("{url}?mode=ro"), SQLITE_APP_QUERY);

        // Act: the daemon until the stale sessions are done, then a few more intervals.
        let child = crate::helpers::Daemon::start(&mut daemon(&["run"], &env));
        wait_final(&db, 5).await;
        tokio::time::sleep(std::time::Duration::from_millis(800)).await;
        child.signal("-TERM");
        let output = child.finish().await;

        // Assert
        assert!(output.status.success(), "{}: {}", db.name(), text(&output));
        let rows = db.store.rows().await.unwrap();
        assert_eq!(rows.len(), 5, "{}: {rows:?}", db.name());
        assert_source_outcome(db.name(), &rows, &api);
        assert_eq!(std::fs::read(&path).unwrap(), before, "the application's file changed");
        let companions: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            companions.len(),
            1,
            "files appeared next to the application's: {companions:?}"
        );
    });
}

#[tokio::test]
async fn a_postgres_source_feeds_a_daemon_on_sqlite() {
    // Arrange: the application's table in its own PostgreSQL database.
    let Some((app, pool)) = TestDb::postgres_for_the_application().await else {
        return;
    };
    sqlx::query("CREATE TABLE app_sessions (sid TEXT PRIMARY KEY, kind TEXT, last_seen TIMESTAMPTZ NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    for (sid, kind, minutes) in APP_SESSIONS {
        sqlx::query("INSERT INTO app_sessions VALUES ($1, $2, now() - make_interval(mins => $3))")
            .bind(sid)
            .bind(kind)
            .bind(*minutes as i32)
            .execute(&pool)
            .await
            .unwrap();
    }
    const DIGEST: &str =
        "SELECT md5(string_agg(sid || coalesce(kind, '') || last_seen::text, ',' ORDER BY sid)) FROM app_sessions";
    let before: String = sqlx::query_scalar(DIGEST).fetch_one(&pool).await.unwrap();
    let db = TestDb::sqlite().await;
    let api = standin().await;
    let env = source_env(&db, &api, &app.url, PG_APP_QUERY);

    // Act
    let child = crate::helpers::Daemon::start(&mut daemon(&["run"], &env));
    wait_final(&db, 5).await;
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    child.signal("-TERM");
    let output = child.finish().await;

    // Assert: deleted, and the application's table untouched.
    assert!(output.status.success(), "{}", text(&output));
    let rows = db.store.rows().await.unwrap();
    assert_eq!(rows.len(), 5, "{rows:?}");
    assert_source_outcome("postgres source", &rows, &api);
    let after: String = sqlx::query_scalar(DIGEST).fetch_one(&pool).await.unwrap();
    assert_eq!(before, after, "the application's table changed");
    pool.close().await;
    db.cleanup().await;
    app.cleanup().await;
}

#[tokio::test]
async fn a_broken_source_query_is_exit_78_at_start_with_the_databases_message() {
    on_each_backend!(|db| {
        let api = standin().await;
        // The daemon's own database as the source (the default), a table that does not exist.
        let mut env = daemon_env(&db.url, &api.base_url(), APIKEY);
        env.push((
            "SESSION_REAPER_SOURCE__QUERY".into(),
            "SELECT sid AS session_id FROM no_such_table".into(),
        ));
        for args in [&["check-config"][..], &["run", "--once"][..], &["run"][..]] {
            let output = run_daemon(args, &env).await;
            let logs = text(&output);
            assert_eq!(output.status.code(), Some(78), "{}: {args:?}: {logs}", db.name());
            assert!(logs.contains("source.query"), "{logs}");
            assert!(logs.contains("no_such_table"), "{}: {logs}", db.name());
        }
    });
}

#[tokio::test]
async fn a_source_query_failing_at_run_time_is_logged_once_and_deletions_go_on() {
    let db = TestDb::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let (_path, url) = sqlite_app(dir.path()).await;
    let api = standin().await;
    let env = source_env(&db, &api, &url, SQLITE_APP_QUERY);
    let child = crate::helpers::Daemon::start(&mut daemon(&["run"], &env));
    wait_final(&db, 5).await;

    // Act: the application drops its table; sessions keep coming through `enqueue`.
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query("DROP TABLE app_sessions").execute(&pool).await.unwrap();
    pool.close().await;
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    db.store
        .enqueue_editor(&ids(Editor::Sheet, "later-", 3), Editor::Sheet, Utc::now())
        .await
        .unwrap();
    wait_final(&db, 8).await;
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    child.signal("-TERM");
    let output = child.finish().await;

    // Assert
    assert!(output.status.success(), "{}", text(&output));
    let failed = log_lines(
        &output.stderr,
        "the source query failed; retried every source.interval (logged again only once it works); \
         deletions already queued go on",
    );
    assert_eq!(failed.len(), 1, "{}", text(&output));
    assert!(
        failed[0]["error"].as_str().unwrap().contains("no such table"),
        "{failed:?}"
    );
    assert!(
        rows_of(&db, Editor::Sheet)
            .await
            .iter()
            .all(|r| r.state == State::Deleted)
    );
    db.cleanup().await;
}
