//! The API client against a local HTTP mock: the request's exact shape, and every answer class.

use std::time::Duration;

use session_reaper::api::{ApiClient, Verdict};
use session_reaper::session_id::SessionId;
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{APIKEY, config_from, daemon_env};

const ID: &str = "d26aa7b8029bf4f8d34c7dd00139392357d12ffcb21c1";

async fn client_for(server: &MockServer) -> ApiClient {
    let mut env = daemon_env("sqlite://unused.db", &server.uri(), APIKEY);
    env.push(("SESSION_REAPER_API__TIMEOUT".into(), "300ms".into()));
    ApiClient::new(&config_from(env).api).unwrap()
}

async fn answer_to(template: ResponseTemplate) -> session_reaper::api::Answer {
    let server = MockServer::start().await;
    Mock::given(method("DELETE"))
        .respond_with(template)
        .mount(&server)
        .await;
    client_for(&server)
        .await
        .delete_session(&SessionId::parse(ID).unwrap())
        .await
}

fn json(status: u16, body: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_raw(body.as_bytes().to_vec(), "application/json")
}

#[tokio::test]
async fn the_request_is_a_delete_of_the_session_path_with_the_key_in_the_query() {
    let server = MockServer::start().await;
    Mock::given(method("DELETE"))
        .and(path(format!("/writer/officeapi/v1/sessions/{ID}")))
        .and(query_param("apikey", APIKEY))
        .respond_with(json(200, r#"{"session_delete": true}"#))
        .expect(1)
        .mount(&server)
        .await;
    let answer = client_for(&server)
        .await
        .delete_session(&SessionId::parse(ID).unwrap())
        .await;
    assert_eq!(answer.verdict, Verdict::Deleted);
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests[0].body.len(), 0);
    assert_eq!(requests[0].url.query(), Some(format!("apikey={APIKEY}").as_str()));
}

#[tokio::test]
async fn the_three_documented_success_shapes_are_deleted() {
    for body in [
        r#"{"session_delete": true}"#,
        r#"{"session_deleted": true}"#,
        r#"{"session_delete": "true"}"#,
    ] {
        assert_eq!(answer_to(json(200, body)).await.verdict, Verdict::Deleted, "{body}");
    }
}

#[tokio::test]
async fn invalid_and_expired_sessions_are_gone_whether_code_is_a_string_or_a_number() {
    for body in [
        r#"{"code": "1833", "message": "Invalid session id"}"#,
        r#"{"code": 1834}"#,
    ] {
        let answer = answer_to(json(400, body)).await;
        assert_eq!(answer.verdict, Verdict::Gone, "{body}");
        assert_eq!(answer.http_status, Some(400));
    }
}

#[tokio::test]
async fn quota_and_key_problems_are_recognised() {
    assert_eq!(
        answer_to(json(400, r#"{"code": "1845"}"#)).await.verdict,
        Verdict::QuotaExhausted
    );
    for code in ["1846", "1837", "1877"] {
        let body = format!(r#"{{"code": "{code}", "message": "Invalid API Key"}}"#);
        assert_eq!(
            answer_to(json(400, &body)).await.verdict,
            Verdict::KeyRejected,
            "{code}"
        );
    }
}

#[tokio::test]
async fn permanent_errors_are_permanent() {
    for code in ["1831", "1832", "1838", "1839", "1848", "1844", "1879"] {
        let body = format!(r#"{{"code": {code}}}"#);
        assert_eq!(answer_to(json(400, &body)).await.verdict, Verdict::Permanent, "{code}");
    }
}

#[tokio::test]
async fn a_429_carries_its_retry_after_in_seconds_or_as_a_date() {
    let seconds = answer_to(ResponseTemplate::new(429).insert_header("Retry-After", "7")).await;
    assert_eq!(
        seconds.verdict,
        Verdict::RateLimited {
            retry_after: Some(Duration::from_secs(7))
        }
    );
    let date = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(120));
    let dated = answer_to(ResponseTemplate::new(429).insert_header("Retry-After", date.as_str())).await;
    let Verdict::RateLimited {
        retry_after: Some(wait),
    } = dated.verdict
    else {
        panic!("{dated:?}")
    };
    assert!(
        wait > Duration::from_secs(100) && wait <= Duration::from_secs(120),
        "{wait:?}"
    );
}

#[tokio::test]
async fn server_errors_proxy_pages_and_busy_codes_are_transient() {
    let page = ResponseTemplate::new(502).set_body_raw(b"<html>Bad Gateway</html>".to_vec(), "text/html");
    for template in [
        page,
        ResponseTemplate::new(500),
        ResponseTemplate::new(503),
        json(400, r#"{"code": "1861"}"#),
        json(400, r#"{"code": 1801}"#),
    ] {
        let answer = answer_to(template).await;
        assert!(matches!(answer.verdict, Verdict::Transient { .. }), "{answer:?}");
    }
}

#[tokio::test]
async fn an_unrecognised_answer_is_never_gone() {
    for template in [
        json(200, r#"{"ok": true}"#),
        json(200, "not json"),
        json(404, "{}"),
        json(400, r#"{"code": "9999"}"#),
    ] {
        let answer = answer_to(template).await;
        assert!(matches!(answer.verdict, Verdict::Transient { .. }), "{answer:?}");
    }
}

#[tokio::test]
async fn a_timeout_is_transient_and_its_message_has_no_key() {
    let answer = answer_to(json(200, r#"{"session_delete": true}"#).set_delay(Duration::from_secs(3))).await;
    assert!(matches!(answer.verdict, Verdict::Transient { .. }), "{answer:?}");
    assert_eq!(answer.http_status, None);
    let message = answer.message.unwrap();
    assert!(message.contains("timed out"), "{message}");
    assert!(!message.contains(APIKEY), "{message}");
}

#[tokio::test]
async fn a_refused_connection_is_transient_and_its_message_has_no_key() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let env = daemon_env("sqlite://unused.db", &format!("http://{addr}"), APIKEY);
    let client = ApiClient::new(&config_from(env).api).unwrap();
    let answer = client.delete_session(&SessionId::parse(ID).unwrap()).await;
    assert!(matches!(answer.verdict, Verdict::Transient { .. }));
    let message = answer.message.unwrap();
    assert!(message.contains("could not connect"), "{message}");
    assert!(!message.contains(APIKEY) && !message.contains("apikey"), "{message}");
}

#[tokio::test]
async fn a_huge_body_is_cut_off_and_not_trusted() {
    let huge = format!(r#"{{"session_delete": true, "pad": "{}"}}"#, "x".repeat(1 << 20));
    let answer = answer_to(json(200, &huge)).await;
    assert!(matches!(answer.verdict, Verdict::Transient { .. }), "{answer:?}");
}

#[tokio::test]
async fn an_error_message_that_echoes_the_key_is_scrubbed() {
    let body = format!(r#"{{"code": "1846", "message": "Invalid API Key {APIKEY}"}}"#);
    let answer = answer_to(json(400, &body)).await;
    assert_eq!(answer.message.as_deref(), Some("Invalid API Key [redacted]"));
}

#[tokio::test]
async fn a_key_echoed_across_the_message_length_cut_is_still_scrubbed() {
    // The message is cut to 200 characters; the key straddles the cut.
    let body = format!(r#"{{"code": "1846", "message": "{}{APIKEY}"}}"#, "x".repeat(190));
    let answer = answer_to(json(400, &body)).await;
    let message = answer.message.unwrap();
    assert!(!message.contains(&APIKEY[..6]), "{message}");
    assert!(message.starts_with(&"x".repeat(190)), "{message}");
}
