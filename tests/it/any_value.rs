//! Whatever a column can hold, nothing panics and nothing fails the whole table: arbitrary
//! values of each column's type (and, on SQLite, of other types) through claim, outcome,
//! status and prune on both backends. A property test (proptest) over generated rows.

use std::time::Duration;

use chrono::Utc;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use session_reaper::store::{OutcomeWrite, State, Store};

use crate::helpers::{TestDb, claim_at, finished};

/// One value as SQL text, for a column of SQLite's `INTEGER` time or count columns.
fn sqlite_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("NULL".to_owned()),
        any::<i64>().prop_map(|v| v.to_string()),
        (0i64..4_102_444_800_000).prop_map(|v| v.to_string()),
        any::<f64>()
            .prop_filter("finite", |v| v.is_finite())
            .prop_map(|v| format!("{v:e}")),
        "[ -~]{0,24}".prop_map(|s| format!("'{}'", s.replace('\'', "''"))),
        proptest::collection::vec(any::<u8>(), 0..12).prop_map(|b| format!("x'{}'", hex(&b))),
        Just("datetime('now', '-2 hours')".to_owned()),
        Just("'2026-01-01T00:00:00+05:30'".to_owned()),
    ]
}

/// One value as SQL text for a PostgreSQL `timestamptz` column.
fn pg_time() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("NULL".to_owned()),
        Just("'infinity'".to_owned()),
        Just("'-infinity'".to_owned()),
        Just("'4713-01-01 BC'".to_owned()),
        Just("'294276-12-31'".to_owned()),
        (-200_000_000_000i64..200_000_000_000).prop_map(|s| format!("to_timestamp({s})")),
    ]
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One generated row: session id text and the values of the other columns, as SQL.
#[derive(Debug, Clone)]
struct Row {
    columns: Vec<(&'static str, String)>,
}

fn sqlite_row() -> impl Strategy<Value = Row> {
    (
        sqlite_value(),
        sqlite_value(),
        sqlite_value(),
        sqlite_value(),
        sqlite_value(),
        sqlite_value(),
    )
        .prop_map(|(session, delete_after, activity, attempts, next, finished)| Row {
            columns: vec![
                ("session_id", session),
                ("delete_after", delete_after),
                ("last_activity_at", activity),
                ("attempts", attempts),
                ("next_attempt_at", next),
                ("finished_at", finished),
            ],
        })
}

fn pg_row() -> impl Strategy<Value = Row> {
    (
        "[ -~]{0,24}",
        pg_time(),
        pg_time(),
        0i32..=i32::MAX,
        pg_time(),
        prop_oneof![Just("pending"), Just("retrying"), Just("deleted"), Just("failed")],
    )
        .prop_map(|(session, delete_after, activity, attempts, next, state)| Row {
            columns: vec![
                ("session_id", format!("'{}'", session.replace('\'', "''"))),
                ("delete_after", delete_after),
                ("last_activity_at", activity),
                ("attempts", attempts.to_string()),
                ("next_attempt_at", next),
                ("state", format!("'{state}'")),
                ("finished_at", "now()".to_owned()),
            ],
        })
}

/// Claims everything, writes an outcome for each claimed row, reads the status and prunes:
/// each step must succeed, whatever the rows hold.
async fn exercise(store: &Store) -> Result<(), String> {
    let now = Utc::now();
    let claimed = store
        .claim(&claim_at("prop", now, 100))
        .await
        .map_err(|e| format!("claim: {e:#}"))?;
    let writes: Vec<OutcomeWrite> = claimed
        .rows
        .iter()
        .map(|row| finished(row.id, State::Deleted, now))
        .collect();
    store
        .write_outcomes("prop", &writes)
        .await
        .map_err(|e| format!("outcomes: {e:#}"))?;
    store
        .status(now, Duration::from_secs(1800))
        .await
        .map_err(|e| format!("status: {e:#}"))?;
    store
        .next_due(Duration::from_secs(1800))
        .await
        .map_err(|e| format!("next due: {e:#}"))?;
    store
        .backlog(Duration::from_secs(1800))
        .await
        .map_err(|e| format!("backlog: {e:#}"))?;
    store
        .prune(now + chrono::Duration::days(1), 1000)
        .await
        .map_err(|e| format!("prune: {e:#}"))?;
    Ok(())
}

async fn insert(db: &TestDb, rows: &[Row]) {
    for (i, row) in rows.iter().enumerate() {
        let names: Vec<&str> = row.columns.iter().map(|(n, _)| *n).collect();
        let mut values: Vec<String> = row.columns.iter().map(|(_, v)| v.clone()).collect();
        // Unique ids: the generated text may repeat.
        values[0] = format!("{} || '-{i}'", values[0].replace("NULL", "''"));
        let sql = format!(
            "INSERT INTO reaper_sessions ({}) VALUES ({})",
            names.join(", "),
            values.join(", ")
        );
        // Values the schema refuses are refused at INSERT; that is one of the answers.
        let _ = if db.name() == "sqlite" {
            let pool = sqlx::SqlitePool::connect(&db.url).await.unwrap();
            let done = sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&pool).await.map(|_| ());
            pool.close().await;
            done
        } else {
            let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
            let done = sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&pool).await.map(|_| ());
            pool.close().await;
            done
        };
    }
}

fn check(db: &TestDb, rows: Vec<Row>) -> Result<(), TestCaseError> {
    let result = tokio::task::block_in_place(|| {
        tokio::runtime::Handle::current().block_on(async {
            let wipe = "DELETE FROM reaper_sessions";
            if db.name() == "sqlite" {
                let pool = sqlx::SqlitePool::connect(&db.url).await.unwrap();
                sqlx::raw_sql(wipe).execute(&pool).await.unwrap();
                pool.close().await;
            } else {
                let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
                sqlx::raw_sql(wipe).execute(&pool).await.unwrap();
                pool.close().await;
            }
            insert(db, &rows).await;
            exercise(&db.store).await
        })
    });
    prop_assert!(result.is_ok(), "{}: {:?} with rows {rows:?}", db.name(), result);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_value_a_column_can_hold_goes_through_claim_outcome_status_and_prune() {
    let sqlite = TestDb::sqlite().await;
    // SQLite rows that predate the triggers (or bypass them): drop the guards that refuse
    // values at INSERT, so every type reaches the daemon's queries.
    let pool = sqlx::SqlitePool::connect(&sqlite.url).await.unwrap();
    for trigger in [
        "reaper_sessions_session_id_is_text",
        "reaper_sessions_attempts_not_negative",
        "reaper_sessions_times_are_epoch_ms_or_dates_on_insert",
        "reaper_sessions_final_state_has_finished_at",
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP TRIGGER {trigger}")))
            .execute(&pool)
            .await
            .unwrap();
    }
    pool.close().await;
    let mut runner = TestRunner::new(Config {
        cases: 24,
        ..Config::default()
    });
    runner
        .run(&proptest::collection::vec(sqlite_row(), 1..12), |rows| {
            check(&sqlite, rows)
        })
        .unwrap();

    if let Some(pg) = TestDb::postgres().await {
        let mut runner = TestRunner::new(Config {
            cases: 24,
            ..Config::default()
        });
        runner
            .run(&proptest::collection::vec(pg_row(), 1..12), |rows| check(&pg, rows))
            .unwrap();
        pg.cleanup().await;
    }
}
