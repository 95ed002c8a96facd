//! The whole daemon, as a process, against the stand-in API: a mix of sessions of every kind
//! through `run --once` until every row is final, on SQLite and PostgreSQL.

use std::collections::HashMap;

use chrono::Utc;
use session_reaper::store::{SessionRow, State};

use crate::helpers::{APIKEY, daemon_env, on_each_backend, run_daemon, standin, text};

/// Bound on `run --once` passes; the mix needs about five.
const MAX_PASSES: usize = 15;

/// What each kind of session must end as: (id prefix, count, final state, attempts, requests).
const MIX: &[(&str, usize, State, i32, u32)] = &[
    ("good", 10, State::Deleted, 1, 1),
    ("gone", 3, State::Gone, 1, 1),
    ("expired", 3, State::Gone, 1, 1),
    ("flaky2", 3, State::Deleted, 3, 3),
    ("busy1", 2, State::Deleted, 2, 2),
    // 429 charges no attempt: one attempt on the row, two requests seen.
    ("limited1", 3, State::Deleted, 1, 2),
    ("bad", 2, State::Failed, 1, 1),
    // Fails more often than retry.max_attempts (4) allows.
    ("flaky9", 1, State::Failed, 4, 4),
];

/// Ids that must never be sent: each ends `invalid` with no request made.
fn malformed_ids() -> Vec<String> {
    [
        "a/b",
        "../etc",
        "..",
        ".",
        "a?b=1",
        "a#frag",
        "a%2Fb",
        "x&apikey=stolen",
        "a b",
        "tab\there",
        "nul\0byte",
        "caf\u{e9}",
        "rtl\u{202e}mark",
        "",
    ]
    .into_iter()
    .map(str::to_owned)
    .chain([format!("long{}", "a".repeat(10_000))])
    .collect()
}

fn session_ids() -> Vec<(String, &'static str)> {
    MIX.iter()
        .flat_map(|(prefix, count, ..)| {
            (0..*count).map(move |i| (format!("{prefix}-{i:02}d26aa7b8029bf4f8d34c7dd0013"), *prefix))
        })
        .collect()
}

#[tokio::test]
async fn a_mixed_table_ends_with_every_row_final_and_every_request_on_contract() {
    on_each_backend!(|db| {
        // Arrange
        let api = standin().await;
        let good: Vec<String> = session_ids().into_iter().map(|(id, _)| id).collect();
        db.store.enqueue(&good, Utc::now()).await.unwrap();
        // PostgreSQL text cannot hold NUL, so such an id can only reach the daemon through SQLite.
        let malformed: Vec<String> = malformed_ids()
            .into_iter()
            .filter(|id| db.name() == "sqlite" || !id.contains('\0'))
            .collect();
        db.store.enqueue(&malformed, Utc::now()).await.unwrap();
        let env = daemon_env(&db.url, &api.base_url(), APIKEY);

        // Act: cron-style passes until nothing is open.
        let mut passes = 0;
        loop {
            let output = run_daemon(&["run", "--once"], &env).await;
            assert!(
                output.status.success(),
                "{}: run --once failed:\n{}",
                db.name(),
                text(&output)
            );
            for line in String::from_utf8_lossy(&output.stderr).lines() {
                serde_json::from_str::<serde_json::Value>(line)
                    .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
            }
            passes += 1;
            let open = db
                .store
                .status(Utc::now(), std::time::Duration::from_secs(1800))
                .await
                .unwrap()
                .open();
            if open == 0 {
                break;
            }
            assert!(
                passes < MAX_PASSES,
                "{}: {open} rows still open after {passes} passes",
                db.name()
            );
            tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        }

        // Assert: every row's final state.
        let rows: HashMap<String, SessionRow> = db
            .store
            .rows()
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.session_id.clone(), r))
            .collect();
        assert_eq!(rows.len(), good.len() + malformed.len());
        for (id, prefix) in session_ids() {
            let (_, _, state, attempts, requests) = MIX.iter().find(|m| m.0 == prefix).unwrap();
            let row = &rows[&id];
            assert_eq!(
                (row.state, row.attempts),
                (*state, *attempts),
                "{}: {id}: {row:?}",
                db.name()
            );
            assert_eq!(api.state.count_for(&id), *requests, "{}: requests for {id}", db.name());
            assert!(row.lease_owner.is_none() && row.finished_at.is_some(), "{row:?}");
        }
        assert_eq!(rows["bad-00d26aa7b8029bf4f8d34c7dd0013"].last_api_code, Some(1832));
        assert!(
            rows["flaky9-00d26aa7b8029bf4f8d34c7dd0013"]
                .last_error
                .as_deref()
                .unwrap()
                .starts_with("gave up after 4 attempts")
        );
        for id in malformed {
            let row = &rows[&id];
            assert_eq!(
                (row.state, row.attempts),
                (State::Invalid, 0),
                "{}: {:?}",
                db.name(),
                row.session_id
            );
            assert!(row.last_error.is_some());
        }

        // Assert: every request the stand-in received.
        let requests = api.state.requests();
        let expected: u32 = MIX.iter().map(|(_, count, _, _, per)| *count as u32 * per).sum();
        assert_eq!(requests.len() as u32, expected);
        for request in &requests {
            assert_eq!(request.method, "DELETE");
            assert_eq!(request.apikey.as_deref(), Some(APIKEY));
            let id = request
                .path
                .strip_prefix("/writer/officeapi/v1/sessions/")
                .expect("contract path");
            assert!(
                rows.get(id).is_some_and(|r| r.state != State::Invalid),
                "unexpected request {}",
                request.path
            );
        }
        assert_eq!(api.state.stats().off_contract, 0);
    });
}
