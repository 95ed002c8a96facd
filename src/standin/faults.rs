//! Faults the stand-in can inject on top of its per-id scenarios, for resilience runs and
//! benchmarks: set at start (`stand-in --faults JSON`) or live (`POST /__standin/faults`).

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rand::Rng;

/// Percentages are per request and drawn independently, in the order of the fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Delay before every answer.
    pub latency_ms: u64,
    /// Answer with an empty 503.
    pub error_5xx_percent: u8,
    /// Answer with a proxy's HTML 502 page.
    pub html_502_percent: u8,
    /// Answer 400 with code 1861 (server busy).
    pub busy_1861_percent: u8,
    /// Sleep `hang_ms` before answering (past the client's timeout).
    pub hang_percent: u8,
    pub hang_ms: u64,
    /// Start a 200 answer and break the connection mid-body.
    pub reset_percent: u8,
    /// Answer 429 with `Retry-After: retry_after_s`.
    pub limit_429_percent: u8,
    pub retry_after_s: u64,
    /// Answer 1845 (API call limit exceeded) to everything while set.
    pub quota_spent: bool,
    /// Rotate the accepted apikey (absent: keep the current one).
    pub apikey: Option<String>,
}

/// What a drawn fault does to one request.
pub enum Injected {
    Answer(Response),
    /// Answer with 429; the caller records the window it asked for.
    RateLimited(Duration),
    Hang(Duration),
}

impl Faults {
    pub fn latency(&self) -> Duration {
        Duration::from_millis(self.latency_ms)
    }

    /// Draws this request's fault, if any.
    pub fn draw(&self) -> Option<Injected> {
        let mut rng = rand::thread_rng();
        let mut hit = |percent: u8| percent > 0 && rng.gen_range(0..100u8) < percent;
        if hit(self.error_5xx_percent) {
            return Some(Injected::Answer(StatusCode::SERVICE_UNAVAILABLE.into_response()));
        }
        if hit(self.html_502_percent) {
            return Some(Injected::Answer(proxy_page()));
        }
        if hit(self.busy_1861_percent) {
            return Some(Injected::Answer(super::api_error("1861", "Server may be down or busy")));
        }
        if hit(self.hang_percent) {
            return Some(Injected::Hang(Duration::from_millis(self.hang_ms.max(1))));
        }
        if hit(self.reset_percent) {
            return Some(Injected::Answer(broken_body()));
        }
        if hit(self.limit_429_percent) {
            return Some(Injected::RateLimited(Duration::from_secs(self.retry_after_s)));
        }
        None
    }
}

pub fn proxy_page() -> Response {
    let page = "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>";
    let mut response = (StatusCode::BAD_GATEWAY, page).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
    response
}

pub fn too_many_requests(retry_after: Duration) -> Response {
    let mut response = (StatusCode::TOO_MANY_REQUESTS, "Too Many Requests").into_response();
    let seconds = HeaderValue::from_str(&retry_after.as_secs().to_string()).expect("digits");
    response.headers_mut().insert(header::RETRY_AFTER, seconds);
    response
}

/// A 200 whose body fails after the first bytes: the client sees the connection break.
fn broken_body() -> Response {
    let chunks: Vec<Result<&'static [u8], std::io::Error>> =
        vec![Ok(b"{\"session_del"), Err(std::io::Error::other("injected reset"))];
    let mut response = Response::new(Body::from_stream(futures_util::stream::iter(chunks)));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
