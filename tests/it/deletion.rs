//! The deletion step alone: `Deleter::delete` against wiremock, no database, no daemon process,
//! at a fixed `t0`. One test per answer class asserts the outcome and the write it asks for.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use session_reaper::api::ApiClient;
use session_reaper::clock::Clock;
use session_reaper::health::Health;
use session_reaper::metrics::Metrics;
use session_reaper::outcome::DeletionOutcome;
use session_reaper::store::Store;
use session_reaper::store::{ClaimedRow, OutcomeWrite, RowId, State};
use session_reaper::worker::{Budget, BudgetConfig, Deleter, Gate, RetryPolicy, Stop};
use tokio_util::sync::CancellationToken;
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{APIKEY, config_from, daemon_env};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap()
}

fn row(session_id: &str, attempts: i32) -> ClaimedRow {
    ClaimedRow {
        id: RowId(7),
        session_id: session_id.to_owned(),
        editor: Default::default(),
        attempts,
        taken_over: false,
        claimed_at: tokio::time::Instant::now(),
    }
}

fn stop() -> Stop {
    Stop {
        no_new_requests: CancellationToken::new(),
        abandon_in_flight: CancellationToken::new(),
    }
}

/// A deleter for `base_url`, with short pauses so pause-then-retry cases finish quickly. Its
/// budget row is in an in-memory SQLite database of its own.
async fn deleter(base_url: &str) -> (Deleter, Arc<Metrics>, Arc<Health>) {
    let config = config_from(daemon_env("sqlite::memory:", base_url, APIKEY));
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let store = Store::connect("sqlite::memory:").await.unwrap();
    store.migrate().await.unwrap();
    let gate = Arc::new(Gate::default());
    let budget = Budget::new(
        store,
        "deletion-test".into(),
        BudgetConfig {
            rate_per_second: 1000,
            burst: 100,
            probe_lease: Duration::from_secs(5),
            concurrency: 1,
        },
        gate.clone(),
        health.clone(),
        metrics.clone(),
    );
    let deleter = Deleter {
        api: ApiClient::new(&config.api).unwrap(),
        gate,
        budget: Arc::new(budget),
        policy: RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
        },
        quota_pause: Duration::from_millis(50),
        key_pause: Duration::from_millis(50),
        metrics: metrics.clone(),
        health: health.clone(),
        clock: Clock::fixed(t0()),
        recheck: None,
    };
    (deleter, metrics, health)
}

async fn api_answering(status: u16, body: &str) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("DELETE"))
        .and(path_regex("^/writer/officeapi/v1/sessions/[a-z0-9]+$"))
        .respond_with(ResponseTemplate::new(status).set_body_raw(body.to_owned(), "application/json"))
        .mount(&server)
        .await;
    server
}

/// The state, charge and error a `Finish` write carries.
fn finish(write: &OutcomeWrite) -> (State, bool, Option<String>, Option<DateTime<Utc>>) {
    match write {
        OutcomeWrite::Finish {
            state,
            charge,
            error,
            next_attempt_at,
            ..
        } => (*state, *charge, error.clone(), *next_attempt_at),
        OutcomeWrite::Release { .. } => panic!("expected a Finish, got {write:?}"),
    }
}

#[tokio::test]
async fn a_confirmed_deletion_is_deleted_and_charged_once() {
    let server = api_answering(200, r#"{"session_delete": true}"#).await;
    let (deleter, metrics, _) = deleter(&server.uri()).await;

    let (outcome, write) = deleter.delete(&row("abc123", 0), &stop()).await;

    assert_eq!(outcome, DeletionOutcome::Deleted);
    assert_eq!(finish(&write), (State::Deleted, true, None, None));
    assert_eq!(metrics.outcome_counts().deleted, 1);
}

#[tokio::test]
async fn an_invalid_or_expired_session_is_gone() {
    for code in ["1833", "1834"] {
        let server = api_answering(400, &format!(r#"{{"code": "{code}", "message": "Invalid"}}"#)).await;
        let (deleter, _, _) = deleter(&server.uri()).await;

        let (outcome, write) = deleter.delete(&row("abc123", 0), &stop()).await;

        assert_eq!(outcome, DeletionOutcome::Gone, "code {code}");
        assert_eq!(finish(&write).0, State::Gone);
    }
}

#[tokio::test]
async fn a_transient_answer_schedules_a_retry_within_the_backoff_ceiling_from_t0() {
    let server = api_answering(502, "<html>Bad Gateway</html>").await;
    let (deleter, _, _) = deleter(&server.uri()).await;

    let (outcome, write) = deleter.delete(&row("abc123", 2), &stop()).await;

    assert_eq!(outcome, DeletionOutcome::RetryScheduled);
    let (state, charged, error, next) = finish(&write);
    assert_eq!((state, charged), (State::Retrying, true));
    assert!(error.unwrap().contains("HTTP 502"));
    // Third attempt: the ceiling is base × 2² = 4 s after t0.
    let next = next.expect("a retry time");
    assert!(next >= t0() && next <= t0() + chrono::Duration::seconds(4), "{next}");
}

#[tokio::test]
async fn a_transient_answer_on_the_last_attempt_fails_the_row() {
    let server = api_answering(400, r#"{"code": 1861}"#).await;
    let (deleter, _, _) = deleter(&server.uri()).await;

    let (outcome, write) = deleter.delete(&row("abc123", 3), &stop()).await;

    assert_eq!(outcome, DeletionOutcome::Failed);
    assert!(finish(&write).2.unwrap().starts_with("gave up after 4 attempts"));
}

#[tokio::test]
async fn no_answer_at_all_is_retried_not_gone() {
    // A port nothing listens on any more: connection refused.
    let port = crate::helpers::free_port();
    let (deleter, _, _) = deleter(&format!("http://127.0.0.1:{port}")).await;

    let (outcome, write) = deleter.delete(&row("abc123", 0), &stop()).await;

    assert_eq!(outcome, DeletionOutcome::RetryScheduled);
    assert_eq!(finish(&write).0, State::Retrying);
}

#[tokio::test]
async fn a_permanent_error_fails_the_row_at_once() {
    let server = api_answering(400, r#"{"code": 1831, "message": "Invalid parameter value"}"#).await;
    let (deleter, _, _) = deleter(&server.uri()).await;

    let (outcome, write) = deleter.delete(&row("abc123", 0), &stop()).await;

    assert_eq!(outcome, DeletionOutcome::Failed);
    assert_eq!(finish(&write).2.as_deref(), Some("Invalid parameter value"));
}

#[tokio::test]
async fn a_malformed_session_id_is_invalid_and_never_sent() {
    let server = api_answering(200, r#"{"session_delete": true}"#).await;
    let (deleter, metrics, _) = deleter(&server.uri()).await;

    let (outcome, write) = deleter.delete(&row("../etc/passwd", 0), &stop()).await;

    assert_eq!(outcome, DeletionOutcome::Invalid);
    assert!(!finish(&write).1, "an id never sent is not charged");
    assert!(server.received_requests().await.unwrap().is_empty());
    assert_eq!(metrics.outcome_counts().invalid, 1);
}

/// A pause answer once, then success: the row is deleted and the pause charged nothing.
async fn paused_once_then_deleted(status: u16, body: &str) -> (DeletionOutcome, OutcomeWrite, Arc<Health>, usize) {
    let server = MockServer::start().await;
    Mock::given(method("DELETE"))
        .respond_with(
            ResponseTemplate::new(status)
                .insert_header("Retry-After", "0")
                .set_body_raw(body.to_owned(), "application/json"),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(r#"{"session_deleted": true}"#, "application/json"))
        .mount(&server)
        .await;
    let (deleter, _, health) = deleter(&server.uri()).await;
    let (outcome, write) = tokio::time::timeout(Duration::from_secs(10), deleter.delete(&row("abc123", 1), &stop()))
        .await
        .expect("the pause ends and the row is tried again");
    let requests = server.received_requests().await.unwrap().len();
    (outcome, write, health, requests)
}

#[tokio::test]
async fn a_429_pauses_and_retries_the_same_row_without_charging_the_pause() {
    let (outcome, write, _, requests) = paused_once_then_deleted(429, "").await;

    assert_eq!(outcome, DeletionOutcome::Deleted);
    assert_eq!(requests, 2);
    // The one charge is the concluding answer's.
    assert_eq!(finish(&write), (State::Deleted, true, None, None));
}

#[tokio::test]
async fn a_spent_quota_pauses_then_the_probe_succeeds() {
    let (outcome, _, health, requests) = paused_once_then_deleted(400, r#"{"code": "1845"}"#).await;

    assert_eq!((outcome, requests), (DeletionOutcome::Deleted, 2));
    assert_eq!(health.not_ready(), None);
}

#[tokio::test]
async fn a_rejected_key_pauses_and_marks_the_process_not_ready_until_a_probe_succeeds() {
    let server = api_answering(400, r#"{"code": "1846", "message": "Invalid API Key"}"#).await;
    let (deleter, _, health) = deleter(&server.uri()).await;
    let stop = stop();

    // The key stays rejected: the row waits, paused, until shutdown releases it untouched.
    let shutdown = stop.no_new_requests.clone();
    let stopper = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        shutdown.cancel();
    });
    let (outcome, write) = deleter.delete(&row("abc123", 0), &stop).await;
    stopper.await.unwrap();

    assert_eq!(outcome, DeletionOutcome::Released);
    assert_eq!(write, OutcomeWrite::Release { id: RowId(7) });
    assert_eq!(health.not_ready(), Some("the API rejected the apikey"));
    // One request, then one probe per (50 ms) pause: far fewer than one per attempt of a loop.
    let requests = server.received_requests().await.unwrap().len();
    assert!(
        (1..=8).contains(&requests),
        "{requests} requests with a rejected key in 300 ms"
    );
}
