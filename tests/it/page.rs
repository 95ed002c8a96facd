//! The status page (`/`) and `/status.json` of a running daemon, without a browser (the browser
//! check is `.ci/check-page`): the counts are on the page, markup in `last_error` is escaped, no
//! whole session id appears, and `/status.json` says what `status --json` says, on both backends.

use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::Value;
use session_reaper::store::{OutcomeWrite, State};

use crate::helpers::{
    APIKEY, Daemon, STATUS_KEYS, claim_at, daemon, daemon_env, free_port, get, on_each_backend, run_daemon, standin,
    text,
};

/// The error text a row ends with before the daemon starts: markup the page must not render.
const HOSTILE: &str = "<script>alert('page')</script><img src=x onerror=alert(1)> & \"quoted\"";

fn shared(json: &Value) -> Vec<(&'static str, Value)> {
    STATUS_KEYS.iter().map(|key| (*key, json[*key].clone())).collect()
}

#[tokio::test]
async fn the_status_page_shows_the_counts_escapes_errors_hides_session_ids_and_matches_status_json() {
    on_each_backend!(|db| {
        // Arrange: one row failed with markup as its error, then a mix for the daemon.
        let hostile_id = format!("hostile-{}", uuid::Uuid::new_v4().simple());
        db.store
            .enqueue(std::slice::from_ref(&hostile_id), Utc::now())
            .await
            .unwrap();
        let claimed = db.store.claim(&claim_at("test", Utc::now(), 1)).await.unwrap().rows;
        assert_eq!(claimed.len(), 1);
        let attempted = Utc::now() - chrono::Duration::minutes(5);
        let write = OutcomeWrite::Finish {
            id: claimed[0].id,
            state: State::Failed,
            charge: true,
            http_status: Some(400),
            api_code: Some(1832),
            error: Some(HOSTILE.to_owned()),
            attempted_at: Some(attempted),
            next_attempt_at: None,
            decided_at: attempted,
        };
        assert_eq!(db.store.write_outcomes("test", &[write]).await.unwrap(), 1);
        let mix: Vec<String> = [("", 6), ("gone-", 3), ("bad-", 2)]
            .iter()
            .flat_map(|(prefix, n)| (0..*n).map(move |_| format!("{prefix}{}", uuid::Uuid::new_v4().simple())))
            .collect();
        db.store.enqueue(&mix, Utc::now()).await.unwrap();
        let api = standin().await;
        let port = free_port();
        let mut env = daemon_env(&db.url, &api.base_url(), APIKEY);
        env.push(("SESSION_REAPER_HTTP__LISTEN".into(), format!("127.0.0.1:{port}")));
        // One heartbeat at the start and none while the test compares (a third of the lease).
        env.push(("SESSION_REAPER_WORKER__LEASE".into(), "300s".into()));
        let child = Daemon::start(&mut daemon(&["run"], &env));
        let deadline = Instant::now() + Duration::from_secs(30);
        while db.store.rows().await.unwrap().iter().any(|r| !r.state.is_terminal()) {
            assert!(Instant::now() < deadline, "{}: rows never finished", db.name());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // Act
        let (status, html) = get(port, "/").await;
        let (json_status, page_json) = get(port, "/status.json").await;
        let output = run_daemon(&["status", "--json"], &env).await;

        // Assert: the counts, as the database has them.
        assert_eq!(status, 200, "{}: {html}", db.name());
        let report = db.store.status(Utc::now(), Duration::from_secs(1800)).await.unwrap();
        assert_eq!(
            (
                report.count(State::Deleted),
                report.count(State::Gone),
                report.count(State::Failed)
            ),
            (6, 3, 3)
        );
        for state in State::ALL {
            let cell = format!(r#"data-state="{state}" data-value="{}""#, report.count(state));
            assert!(html.contains(&cell), "{}: no {cell} in:\n{html}", db.name());
        }
        assert!(html.contains(r#"<meta http-equiv="refresh" content="10">"#));
        assert_eq!(html.matches("<rect").count(), 60, "one bar per minute");
        // The markup is text, never an element.
        assert!(
            html.contains("&lt;script&gt;alert(&#39;page&#39;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;"),
            "{}: the error is not escaped:\n{html}",
            db.name()
        );
        assert!(
            !html.to_lowercase().contains("<script") && !html.contains("<img"),
            "{html}"
        );
        // No whole session id, only prefixes.
        let rows = db.store.rows().await.unwrap();
        for row in &rows {
            assert!(
                !html.contains(&row.session_id) && !page_json.contains(&row.session_id),
                "{}: session id {} shown whole",
                db.name(),
                row.session_id
            );
        }
        assert!(
            html.contains(&format!("{}…", &hostile_id[..8])),
            "the sample row's prefix"
        );

        // /status.json says what `status --json` says, for every key both have.
        assert_eq!(json_status, 200, "{page_json}");
        assert!(output.status.success(), "{}", text(&output));
        let page: Value = serde_json::from_str(&page_json).unwrap();
        let cli: Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(
            shared(&page),
            shared(&cli),
            "{}: /status.json and status --json",
            db.name()
        );
        assert_eq!(page["instances"].as_array().map(Vec::len), Some(1));
        // The errors, most common first, with the state their rows ended in.
        let groups: Vec<(String, String, i64)> = page["recent_errors"]["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| {
                (
                    g["error"].as_str().unwrap().to_owned(),
                    g["state"].as_str().unwrap().to_owned(),
                    g["count"].as_i64().unwrap(),
                )
            })
            .collect();
        let expected = [
            ("Invalid session id", "gone", 3),
            ("Invalid parameter value", "failed", 2),
            (HOSTILE, "failed", 1),
        ]
        .map(|(e, s, n)| (e.to_owned(), s.to_owned(), n));
        assert_eq!(groups, expected, "{}: {page_json}", db.name());
        assert_eq!(page["finished_per_minute"]["total"], 12, "{page_json}");

        child.signal("-TERM");
        let output = child.finish().await;
        assert!(output.status.success(), "{}", text(&output));
    });
}
