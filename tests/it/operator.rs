//! What an operator meets at the command line: log lines that stand alone and keep session ids
//! to a prefix, a `status` that only reads, dry runs, a `requeue` that says what it did not do,
//! a `demo` that replaces only its own files, configuration that ignores unrelated variables,
//! `check-config` output that is TOML, and database errors in one plain line.

use std::io::{BufRead, BufReader};
use std::process::{Output, Stdio};
use std::time::Duration;

use chrono::Utc;
use figment::providers::Format;
use session_reaper::store::State;
use sqlx::Connection;

use crate::helpers::{
    APIKEY, STATUS_KEYS, TestDb, config_file, daemon, daemon_env, on_each_backend, run_daemon, standin, text,
};

/// A live-looking session id: hex, 45 characters, like the API's samples.
const LIVE_ID: &str = "58530adf0c1d4e7f9a2b3c4d5e6f708192a3b4c5d6e7f";
/// The part of `LIVE_ID` after its 8-character prefix: it must never reach a log by default.
const LIVE_ID_TAIL: &str = "0c1d4e7f9a2b3c4d5e6f708192a3b4c5d6e7f";

/// `env` with `key` set to `value` (replacing an earlier value).
fn with(mut env: Vec<(String, String)>, key: &str, value: &str) -> Vec<(String, String)> {
    env.retain(|(k, _)| k != key);
    env.push((key.to_owned(), value.to_owned()));
    env
}

fn db_only(url: &str) -> Vec<(String, String)> {
    vec![("SESSION_REAPER_DATABASE__URL".to_owned(), url.to_owned())]
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The JSON log lines of a run.
fn log_lines(output: &Output) -> Vec<serde_json::Value> {
    stderr(output)
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

fn deletion_lines(output: &Output) -> Vec<serde_json::Value> {
    log_lines(output)
        .into_iter()
        .filter(|line| line["fields"]["message"] == "deletion finished")
        .collect()
}

/// `session-reaper enqueue` with `input` on stdin.
async fn enqueue_stdin(env: &[(String, String)], input: String) -> Output {
    let mut command = daemon(&["enqueue"], env);
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = command.spawn().unwrap();
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

fn admin_url() -> String {
    testkit::postgres::admin_url()
}

// ---------------------------------------------------------------------------------------------
// 1. Logs

#[tokio::test]
async fn a_log_level_that_is_not_a_level_is_a_config_error_naming_the_key_and_the_levels() {
    // Arrange
    let db = TestDb::sqlite().await;
    let broken = with(db_only(&db.url), "SESSION_REAPER_LOG__LEVEL", "warning");
    let filter = with(
        db_only(&db.url),
        "SESSION_REAPER_LOG__LEVEL",
        "info,session_reaper=debug",
    );

    // Act
    let checked = run_daemon(
        &["check-config"],
        &with(broken.clone(), "SESSION_REAPER_API__APIKEY", "k"),
    )
    .await;
    let status = run_daemon(&["status"], &broken).await;
    let valid = run_daemon(&["status"], &filter).await;

    // Assert
    for output in [&checked, &status] {
        assert_eq!(output.status.code(), Some(78), "{}", text(output));
        let report = stderr(output);
        assert!(
            report.contains("log.level: \"warning\" is not a level")
                && report.contains("error, warn, info, debug, trace")
                && report.contains("info,session_reaper=debug")
                && report.contains("(from environment variable SESSION_REAPER_LOG__LEVEL)"),
            "{report}"
        );
    }
    assert!(
        valid.status.success(),
        "a filter directive is a valid level: {}",
        text(&valid)
    );
}

#[tokio::test]
async fn at_log_level_warn_a_failed_deletion_line_carries_its_own_fields_and_only_a_session_prefix() {
    // Arrange
    let db = TestDb::sqlite().await;
    let api = standin().await;
    let id = format!("bad-{LIVE_ID}");
    db.store.enqueue(std::slice::from_ref(&id), Utc::now()).await.unwrap();
    let env = with(
        daemon_env(&db.url, &api.base_url(), APIKEY),
        "SESSION_REAPER_LOG__LEVEL",
        "warn",
    );

    // Act
    let output = run_daemon(&["run", "--once"], &env).await;

    // Assert
    assert!(output.status.success(), "{}", text(&output));
    let row_id = db.store.rows().await.unwrap()[0].id;
    let lines = deletion_lines(&output);
    assert_eq!(lines.len(), 1, "{}", stderr(&output));
    let line = &lines[0];
    assert_eq!(line["level"], "WARN", "{line}");
    let fields = &line["fields"];
    assert_eq!(fields["row_id"], row_id.get(), "{line}");
    assert_eq!(fields["session"], "bad-5853", "{line}");
    assert_eq!(fields["attempt"], 1, "{line}");
    assert_eq!(fields["outcome"], "failed", "{line}");
    assert_eq!(fields["http_status"], 400, "{line}");
    assert_eq!(fields["api_code"], 1832, "{line}");
    assert!(fields["error"].is_string(), "{line}");
    let all = stderr(&output);
    assert!(!all.contains("58530adf0c1d"), "more than the prefix was logged:\n{all}");
    for line in log_lines(&output) {
        for (key, value) in line["fields"].as_object().unwrap() {
            let shown = value.as_str().unwrap_or_default();
            assert!(!shown.contains('"'), "field {key} carries quotes: {line}");
        }
    }
}

#[tokio::test]
async fn with_log_session_ids_full_a_log_line_carries_the_whole_id() {
    // Arrange
    let db = TestDb::sqlite().await;
    let api = standin().await;
    db.store.enqueue(&[LIVE_ID.to_owned()], Utc::now()).await.unwrap();
    let default_env = with(
        daemon_env(&db.url, &api.base_url(), APIKEY),
        "SESSION_REAPER_LOG__LEVEL",
        "info",
    );
    let full_env = with(default_env.clone(), "SESSION_REAPER_LOG__SESSION_IDS", "full");

    // Act
    let by_default = run_daemon(&["run", "--once"], &default_env).await;
    db.store
        .enqueue(&[format!("gone-{LIVE_ID}")], Utc::now())
        .await
        .unwrap();
    let with_full = run_daemon(&["run", "--once"], &full_env).await;

    // Assert
    assert!(by_default.status.success() && with_full.status.success());
    assert_eq!(deletion_lines(&by_default)[0]["fields"]["session"], "58530adf");
    assert!(!stderr(&by_default).contains(LIVE_ID_TAIL), "{}", stderr(&by_default));
    assert_eq!(
        deletion_lines(&with_full)[0]["fields"]["session"],
        format!("gone-{LIVE_ID}")
    );
}

#[tokio::test]
async fn pretty_logs_written_into_a_pipe_carry_no_colour_codes() {
    // Arrange
    let db = TestDb::sqlite().await;
    let api = standin().await;
    db.store
        .enqueue(&["p1".into(), "bad-p2".into()], Utc::now())
        .await
        .unwrap();
    let env = with(
        daemon_env(&db.url, &api.base_url(), APIKEY),
        "SESSION_REAPER_LOG__FORMAT",
        "pretty",
    );

    // Act
    let output = run_daemon(&["run", "--once"], &env).await;

    // Assert
    assert!(output.status.success(), "{}", text(&output));
    let logs = stderr(&output);
    assert!(logs.contains("deletion finished"), "{logs}");
    assert!(!logs.contains('\x1b'), "ANSI escape codes in a pipe:\n{logs:?}");
}

// ---------------------------------------------------------------------------------------------
// 2. status

#[tokio::test]
async fn status_of_a_missing_sqlite_file_is_an_error_naming_it_and_creates_nothing() {
    // Arrange
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("typo.db");
    let url = format!("sqlite://{}", path.display());

    // Act
    let output = run_daemon(&["status"], &db_only(&url)).await;

    // Assert
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        stderr(&output).contains(&path.display().to_string()),
        "{}",
        text(&output)
    );
    assert!(stdout(&output).is_empty(), "{}", text(&output));
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "status created files"
    );
}

#[tokio::test]
async fn status_of_an_unmigrated_database_is_an_error_and_migrates_nothing() {
    // Arrange: a SQLite file of someone else's, and a bare PostgreSQL database.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.db");
    let sqlite_url = format!("sqlite://{}?mode=rwc", path.display());
    let mut other = sqlx::SqliteConnection::connect(&sqlite_url).await.unwrap();
    sqlx::query("CREATE TABLE notes (body TEXT)")
        .execute(&mut other)
        .await
        .unwrap();
    other.close().await.unwrap();
    let bytes_before = std::fs::read(&path).unwrap();
    let postgres = TestDb::postgres_with(false).await;

    // Act
    let sqlite_output = run_daemon(&["status"], &db_only(&format!("sqlite://{}", path.display()))).await;
    let postgres_output = match &postgres {
        Some(db) => Some(run_daemon(&["status", "--json"], &db_only(&db.url)).await),
        None => None,
    };

    // Assert
    assert_eq!(sqlite_output.status.code(), Some(1), "{}", text(&sqlite_output));
    let report = stderr(&sqlite_output);
    assert!(
        report.contains(&path.display().to_string()) && report.contains("not migrated"),
        "{report}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), bytes_before, "status changed the file");
    if let (Some(db), Some(output)) = (postgres, postgres_output) {
        assert_eq!(output.status.code(), Some(1), "{}", text(&output));
        assert!(stderr(&output).contains("not migrated"), "{}", text(&output));
        assert!(stdout(&output).is_empty(), "{}", text(&output));
        let mut check = sqlx::PgConnection::connect(&db.url).await.unwrap();
        let table: Option<String> = sqlx::query_scalar("SELECT to_regclass('reaper_sessions')::text")
            .fetch_one(&mut check)
            .await
            .unwrap();
        assert_eq!(table, None, "status migrated the database");
        check.close().await.unwrap();
        db.cleanup().await;
    }
}

#[tokio::test]
async fn status_names_the_database_shows_ages_in_human_units_and_leaves_the_file_unchanged() {
    // Arrange: a row due 30 minutes ago.
    let db = TestDb::sqlite().await;
    let due = Utc::now() - chrono::Duration::seconds(30 * 60 + 1);
    db.store.enqueue(&["late-1".into()], due).await.unwrap();
    let path = db.url.trim_start_matches("sqlite://").to_owned();
    let bytes_before = std::fs::read(&path).unwrap();

    // Act
    let as_text = run_daemon(&["status"], &db_only(&db.url)).await;
    let as_json = run_daemon(&["status", "--json"], &db_only(&db.url)).await;

    // Assert
    assert!(as_text.status.success(), "{}", text(&as_text));
    let shown = stdout(&as_text);
    assert!(shown.starts_with(&format!("database: {}\n", db.url)), "{shown}");
    let oldest = shown.lines().find(|l| l.starts_with("oldest due: ")).unwrap();
    assert!(
        oldest.starts_with("oldest due: 30m") && !oldest.contains('.'),
        "not in human units: {oldest:?}"
    );
    assert!(shown.contains("pending    1"), "{shown}");
    let json: serde_json::Value = serde_json::from_slice(&as_json.stdout).unwrap();
    for key in std::iter::once("database").chain(STATUS_KEYS) {
        assert!(json.get(key).is_some(), "no {key} in {json}");
    }
    assert_eq!(json["database"], db.url);
    assert!(json["oldest_due_age_seconds"].as_f64().unwrap() >= 1800.0, "{json}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        bytes_before,
        "status wrote the database file"
    );
}

#[tokio::test]
async fn status_works_for_a_read_only_postgres_role_and_redacts_the_password() {
    // Arrange: a role that may only read the three objects status and operators read.
    let Some(db) = TestDb::postgres().await else { return };
    db.store
        .enqueue(&["ro-1".into(), "ro-2".into()], Utc::now())
        .await
        .unwrap();
    let role = format!("reaper_ro_{}", uuid::Uuid::new_v4().simple());
    let database = db.url.rsplit('/').next().unwrap().to_owned();
    let mut owner = sqlx::PgConnection::connect(&db.url).await.unwrap();
    for statement in [
        format!("CREATE ROLE {role} LOGIN"),
        format!("GRANT CONNECT ON DATABASE {database} TO {role}"),
        format!("GRANT USAGE ON SCHEMA public TO {role}"),
        format!("GRANT SELECT ON reaper_sessions, reaper_instances, reaper_budget, reaper_status TO {role}"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(&mut owner)
            .await
            .unwrap();
    }
    owner.close().await.unwrap();
    let mut url = reqwest::Url::parse(&db.url).unwrap();
    url.set_username(&role).unwrap();
    url.set_password(Some("hunter2")).unwrap();
    let role_url = url.to_string();
    let mut as_role = sqlx::PgConnection::connect(&role_url).await.unwrap();
    let write = sqlx::query("INSERT INTO reaper_sessions (session_id) VALUES ('x')")
        .execute(&mut as_role)
        .await;
    assert!(write.is_err(), "the role is not read-only; the test proves nothing");
    as_role.close().await.unwrap();

    // Act
    let output = run_daemon(&["status", "--json"], &db_only(&role_url)).await;
    let as_text = run_daemon(&["status"], &db_only(&role_url)).await;

    // Assert
    assert!(output.status.success(), "{}", text(&output));
    assert!(as_text.status.success(), "{}", text(&as_text));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["pending"], 2, "{json}");
    assert_eq!(
        json["database"].as_str().unwrap(),
        role_url.replace("hunter2", "redacted")
    );
    assert!(!text(&output).contains("hunter2") && !text(&as_text).contains("hunter2"));

    db.cleanup().await;
    let mut admin = sqlx::PgConnection::connect(&admin_url()).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP ROLE IF EXISTS {role}")))
        .execute(&mut admin)
        .await
        .unwrap();
}

#[tokio::test]
async fn status_watch_shows_a_fresh_reading_each_interval_until_interrupted() {
    // Arrange
    let db = TestDb::sqlite().await;
    db.store.enqueue(&["w1".into()], Utc::now()).await.unwrap();
    let mut command = daemon(&["status", "--watch", "1"], &db_only(&db.url));
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let out = child.stdout.take().unwrap();

    // Act: wait for two readings (the second one comes after the interval), then Ctrl-C.
    let reader = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(out).lines();
        let mut seen = Vec::new();
        while seen.iter().filter(|l: &&String| l.starts_with("database: ")).count() < 2 {
            match lines.next() {
                Some(Ok(line)) => seen.push(line),
                _ => break,
            }
        }
        (seen, lines)
    });
    let pid = child.id().to_string();
    let Ok(readings) = tokio::time::timeout(Duration::from_secs(30), reader).await else {
        // Kill it first: the reader blocks on its pipe until it closes.
        let _ = std::process::Command::new("kill").args(["-KILL", &pid]).status();
        panic!("no two readings within 30 s");
    };
    let (seen, rest) = readings.unwrap();
    std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    // Bounded: a child that ignores the interrupt is killed after 10 s (and the test fails on
    // its exit status), so a hang cannot stall the whole suite.
    let status = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let exited = loop {
            match child.try_wait().unwrap() {
                Some(exit) => break exit,
                None if std::time::Instant::now() >= deadline => {
                    let _ = child.kill();
                    break child.wait().unwrap();
                }
                None => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        let rest: Vec<String> = rest.map_while(Result::ok).collect();
        (exited, rest)
    })
    .await
    .unwrap();

    // Assert
    assert_eq!(
        seen.iter().filter(|l| l.starts_with("database: ")).count(),
        2,
        "{seen:?}"
    );
    assert_eq!(
        seen.iter().filter(|l| l.starts_with("pending    1")).count(),
        1,
        "{seen:?}"
    );
    assert!(
        seen.iter().all(|l| !l.contains('\x1b')),
        "screen codes written into a pipe: {seen:?}"
    );
    assert!(status.0.success(), "Ctrl-C ends a watch normally: {:?}", status.0);
}

// ---------------------------------------------------------------------------------------------
// 4. Commands that cannot surprise

#[tokio::test]
async fn dry_runs_of_prune_and_requeue_say_what_would_change_and_change_nothing() {
    on_each_backend!(|db| {
        // Arrange: two failed rows and one deleted row.
        let api = standin().await;
        let failed = [format!("bad-{LIVE_ID}"), format!("bad-b{LIVE_ID}")];
        db.store
            .enqueue(&[failed[0].clone(), failed[1].clone(), "ok-1".into()], Utc::now())
            .await
            .unwrap();
        let env = daemon_env(&db.url, &api.base_url(), APIKEY);
        assert!(run_daemon(&["run", "--once"], &env).await.status.success());
        let before = db.store.rows().await.unwrap();

        // Act
        let prune = run_daemon(&["prune", "--older-than", "0s", "--dry-run"], &env).await;
        let requeue = run_daemon(&["requeue", "--failed", "--dry-run"], &env).await;

        // Assert
        let backend = db.name();
        assert!(prune.status.success(), "{backend}: {}", text(&prune));
        assert_eq!(
            stdout(&prune).trim(),
            "would prune 3 finished sessions older than 0s (deleted 1, failed 2)",
            "{backend}"
        );
        assert!(requeue.status.success(), "{backend}: {}", text(&requeue));
        let listing = stdout(&requeue);
        assert!(
            listing.starts_with("would requeue 2 sessions\n"),
            "{backend}: {listing}"
        );
        let failed_rows: Vec<_> = before.iter().filter(|r| r.state == State::Failed).collect();
        assert_eq!(failed_rows.len(), 2, "{backend}: {before:?}");
        for row in failed_rows {
            let line = format!("  row {}  session {}  failed", row.id, &row.session_id[..8]);
            assert!(
                listing.lines().any(|l| l == line),
                "{backend}: no {line:?} in {listing}"
            );
        }
        assert!(
            !listing.contains(LIVE_ID_TAIL),
            "{backend}: whole ids listed: {listing}"
        );
        assert_eq!(
            db.store.rows().await.unwrap(),
            before,
            "{backend}: a dry run changed rows"
        );
    });
}

#[tokio::test]
async fn requeue_reports_unknown_and_unfinished_ids_exits_65_and_counts_only_rows_that_moved() {
    on_each_backend!(|db| {
        // Arrange: a failed row, a pending row, and an id without a row.
        let api = standin().await;
        db.store.enqueue(&["bad-rq1".into()], Utc::now()).await.unwrap();
        let env = daemon_env(&db.url, &api.base_url(), APIKEY);
        assert!(run_daemon(&["run", "--once"], &env).await.status.success());
        db.store.enqueue(&["waiting-rq2".into()], Utc::now()).await.unwrap();

        // Act
        let mixed = run_daemon(&["requeue", "bad-rq1", "waiting-rq2", "nosuch-rq3"], &env).await;
        let unknown = run_daemon(&["requeue", "nosuch-rq3"], &env).await;

        // Assert
        let backend = db.name();
        assert_eq!(mixed.status.code(), Some(65), "{backend}: {}", text(&mixed));
        assert_eq!(stdout(&mixed).trim(), "requeued 1 sessions", "{backend}");
        let report = stderr(&mixed);
        assert!(
            report.contains("argument 3 (session nosuch-r): no such session"),
            "{backend}: {report}"
        );
        assert!(
            report.contains("(session waiting-) is pending, not final: left alone"),
            "{backend}: {report}"
        );
        assert_eq!(unknown.status.code(), Some(65), "{backend}: {}", text(&unknown));
        assert_eq!(stdout(&unknown).trim(), "requeued 0 sessions", "{backend}");
        let rows = db.store.rows().await.unwrap();
        assert_eq!(rows.len(), 2, "{backend}: {rows:?}");
        assert!(rows.iter().all(|r| r.state == State::Pending), "{backend}: {rows:?}");
    });
}

#[tokio::test]
async fn demo_refuses_to_replace_a_file_it_did_not_create_but_replaces_its_own() {
    // Arrange: a text file, and a real database the daemon made, at demo paths.
    let dir = tempfile::tempdir().unwrap();
    let precious = dir.path().join("precious.db");
    std::fs::write(&precious, "not yours\n").unwrap();
    let foreign = TestDb::sqlite().await;
    let foreign_path = foreign.url.trim_start_matches("sqlite://").to_owned();
    let foreign_bytes = std::fs::read(&foreign_path).unwrap();
    let own = dir.path().join("demo.db").display().to_string();
    let demo = |path: String| async move { run_daemon(&["demo", "--database", &path, "--sessions", "5"], &[]).await };

    // Act
    let refused = demo(precious.display().to_string()).await;
    let refused_db = demo(foreign_path.clone()).await;
    let first = demo(own.clone()).await;
    let second = demo(own.clone()).await;

    // Assert
    for output in [&refused, &refused_db] {
        assert_eq!(output.status.code(), Some(1), "{}", text(output));
        assert!(
            stderr(output).contains("is not a database an earlier `demo` created"),
            "{}",
            text(output)
        );
    }
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "not yours\n");
    assert_eq!(std::fs::read(&foreign_path).unwrap(), foreign_bytes);
    assert!(first.status.success(), "{}", text(&first));
    assert!(
        second.status.success(),
        "the demo's own file is replaced: {}",
        text(&second)
    );
    assert!(stdout(&second).contains("pending    0"), "{}", text(&second));
}

#[tokio::test]
async fn other_session_reaper_variables_are_not_configuration_but_a_misspelt_key_still_is() {
    // Arrange
    let db = TestDb::sqlite().await;
    let base = with(db_only(&db.url), "SESSION_REAPER_API__APIKEY", "k-1");
    let others = with(
        with(base.clone(), "SESSION_REAPER_TEST_POSTGRES", "postgres://x@127.0.0.1/x"),
        "SESSION_REAPER_STANDIN_APIKEY",
        "standin-key",
    );
    let lookalike = with(base.clone(), "SESSION_REAPER_APIKEY", "k-2");
    let misspelt = with(base.clone(), "SESSION_REAPER_WORKER__CONCURENCY", "8");

    // Act
    let checked = run_daemon(&["check-config"], &others).await;
    let status = run_daemon(&["status"], &others).await;
    let hinted = run_daemon(&["check-config"], &lookalike).await;
    let refused = run_daemon(&["check-config"], &misspelt).await;

    // Assert
    assert!(checked.status.success(), "{}", text(&checked));
    assert!(
        stderr(&checked).is_empty(),
        "known variables warned about: {}",
        text(&checked)
    );
    assert!(status.status.success(), "{}", text(&status));
    assert!(hinted.status.success(), "{}", text(&hinted));
    assert!(
        stderr(&hinted).contains(
            "warning: ignoring SESSION_REAPER_APIKEY: configuration variables are \
             SESSION_REAPER_<SECTION>__<KEY>; did you mean SESSION_REAPER_API__APIKEY?"
        ),
        "{}",
        text(&hinted)
    );
    assert!(
        !text(&hinted).contains("k-2"),
        "the value of an ignored variable was printed"
    );
    assert_eq!(refused.status.code(), Some(78), "{}", text(&refused));
    assert!(
        stderr(&refused).contains("worker.concurency: unknown key"),
        "{}",
        text(&refused)
    );
}

#[tokio::test]
async fn check_config_prints_toml_with_each_source_that_loads_back_unchanged() {
    // Arrange
    let (dir, file) = config_file("[worker]\nburst = 7\n[log]\nlevel = \"info,session_reaper=debug\"\n");
    let shown_file = file.display().to_string();
    let env = vec![
        ("SESSION_REAPER_API__APIKEY".to_owned(), "k-1".to_owned()),
        ("SESSION_REAPER_WORKER__CONCURRENCY".to_owned(), "32".to_owned()),
    ];

    // Act
    let output = run_daemon(&["--config", &shown_file, "check-config"], &env).await;
    let printed = stdout(&output);
    let reprinted_file = dir.path().join("printed.toml");
    std::fs::write(&reprinted_file, &printed).unwrap();
    let again = run_daemon(
        &["--config", &reprinted_file.display().to_string(), "check-config"],
        &[],
    )
    .await;

    // Assert
    assert!(output.status.success(), "{}", text(&output));
    let parse = |toml: &str| -> figment::value::Dict {
        figment::Figment::from(figment::providers::Toml::string(toml))
            .extract()
            .unwrap_or_else(|e| panic!("not TOML ({e}):\n{toml}"))
    };
    let parsed = parse(&printed);
    let worker = parsed["worker"].as_dict().unwrap();
    assert_eq!(worker["concurrency"].to_i128(), Some(32));
    assert_eq!(worker["burst"].to_i128(), Some(7));
    assert!(!parsed["http"].as_dict().unwrap().contains_key("listen"), "{printed}");
    for line in [
        "concurrency = 32  # from environment variable SESSION_REAPER_WORKER__CONCURRENCY".to_owned(),
        format!("burst = 7  # from file {shown_file}"),
        "rate_per_second = 10  # default".to_owned(),
        "session_ids = \"prefix\"  # default".to_owned(),
        "# listen: not set: off".to_owned(),
    ] {
        assert!(printed.lines().any(|l| l == line), "no line {line:?} in:\n{printed}");
    }
    assert!(!printed.contains("k-1"), "{printed}");
    assert!(
        again.status.success(),
        "the printed TOML is not a valid config: {}",
        text(&again)
    );
    assert_eq!(
        parse(&stdout(&again)),
        parsed,
        "values changed when the output was loaded back"
    );
}

#[tokio::test]
async fn a_database_that_cannot_be_reached_is_one_plain_line_naming_it_without_the_password() {
    // Arrange
    let dir = tempfile::tempdir().unwrap();
    let missing_dir = dir.path().join("no-such-dir");
    let sqlite_url = format!("sqlite://{}/reaper.db", missing_dir.display());
    let refused_url = "postgres://postgres:hunter2@127.0.0.1:1/reaper";
    let absent_db = match TestDb::postgres().await {
        Some(db) => {
            let mut url = reqwest::Url::parse(&db.url).unwrap();
            url.set_path("reaper_no_such_database");
            db.cleanup().await;
            Some(url.to_string())
        }
        None => None,
    };

    // Act
    let refused = run_daemon(&["status"], &db_only(refused_url)).await;
    let refused_enqueue = enqueue_stdin(&db_only(refused_url), "abc\n".into()).await;
    let sqlite_status = run_daemon(&["status"], &db_only(&sqlite_url)).await;
    let sqlite_enqueue = enqueue_stdin(&db_only(&sqlite_url), "abc\n".into()).await;
    let absent = match &absent_db {
        Some(url) => Some(run_daemon(&["status"], &db_only(url)).await),
        None => None,
    };

    // Assert
    let one_line = |output: &Output, needles: &[&str]| {
        assert_eq!(output.status.code(), Some(1), "{}", text(output));
        let report = stderr(output);
        assert_eq!(report.lines().count(), 1, "more than one line:\n{report}");
        for needle in needles {
            assert!(report.contains(needle), "no {needle:?} in: {report}");
        }
        for internal in ["hunter2", "pool timed out", "at line", "error returned from database"] {
            assert!(!report.contains(internal), "{internal:?} in: {report}");
        }
    };
    one_line(&refused, &["database 127.0.0.1:1/reaper", "connection refused"]);
    one_line(&refused_enqueue, &["database 127.0.0.1:1/reaper", "connection refused"]);
    let dir_shown = missing_dir.display().to_string();
    one_line(&sqlite_status, &[&dir_shown, "does not exist"]);
    one_line(&sqlite_enqueue, &[&dir_shown, "does not exist"]);
    assert!(!missing_dir.exists(), "a command created the missing directory");
    if let Some(absent) = absent {
        one_line(
            &absent,
            &[
                "reaper_no_such_database",
                "database \"reaper_no_such_database\" does not exist",
            ],
        );
    }
}

#[tokio::test]
async fn enqueue_into_a_pipe_draws_no_progress() {
    // Arrange
    let db = TestDb::sqlite().await;
    let input: String = (0..25_000).map(|n| format!("pipe{n:06}\n")).collect();

    // Act
    let output = enqueue_stdin(&db_only(&db.url), input).await;

    // Assert
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(
        stdout(&output).trim(),
        "enqueued 25000 new, 0 already present, 0 malformed"
    );
    assert!(
        stderr(&output).is_empty(),
        "progress drawn into a pipe: {:?}",
        stderr(&output)
    );
}
