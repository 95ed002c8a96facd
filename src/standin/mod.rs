//! A stand-in for the Office Integrator session API, for demos, tests and benchmarks on loopback.
//!
//! It answers the way `office-integrator-api.md` says the real service does, for each editor on
//! its own path (Writer `/writer/officeapi/v1/sessions/{id}`, Sheet `/sheet/officeapi/v1/session/{id}`,
//! Show `/show/officeapi/v1/session/{id}`, PDF editor `/pdfeditor/officeapi/v1/sessions/{id}`):
//! HTTP 200 with a documented success shape (Sheet: `{"session_delete":"true"}`, a string; the
//! others rotate through the three shapes), HTTP 400 with `{"code", "message"}` errors. A wrong or
//! missing key and a spent quota answer each editor's own code (Writer and PDF 1846 / 1845, Sheet
//! 2890 / 2893, Show 3890 / 3893; Writer answers 1837 without a key). What Sheet, Show and the PDF
//! editor answer for a session that is gone is not documented: the stand-in answers Writer's
//! codes there too, which the daemon reads as transient for those editors. A session id's prefix
//! picks a scenario, so one table can hold every kind of session:
//!
//! | prefix        | answer                                                             |
//! |---------------|--------------------------------------------------------------------|
//! | `gone-`       | 400, code 1833 (invalid session id: nothing to delete)              |
//! | `expired-`    | 400, code 1834 (session expired)                                    |
//! | `bad-`        | 400, code 1832 (a permanent error for that row)                     |
//! | `flakyN-`     | the first N requests get a proxy's HTML 502 page, then success      |
//! | `busyN-`      | the first N requests get code 1861 (server busy), then success      |
//! | `limitedN-`   | the first N requests get 429 with `Retry-After: 1`, then success    |
//! | anything else | success; a second delete of the same id answers 1833               |
//!
//! On top of that, [`Faults`] inject latency, 5xx, proxy pages, 1861, hangs, resets and 429s at
//! random; `set_quota_spent` answers 1845 to everything and `set_apikey` rotates the key.
//! `GET /__standin/stats` reports counts, the busiest second, repeats and `Retry-After` breaches.

mod faults;
mod scenario;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::Uri;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use faults::Faults;

use crate::editor::Editor;
use faults::Injected;
use scenario::scenario;

/// Requests arriving this soon after a 429 went out were already on their way.
const IN_FLIGHT_ALLOWANCE: Duration = Duration::from_millis(150);

/// One request as the stand-in saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRequest {
    pub method: String,
    pub path: String,
    pub apikey: Option<String>,
    /// When the request arrived.
    pub at: Instant,
}

/// What the stand-in knows and has seen; shared with the test that started it.
#[derive(Debug)]
pub struct StandInState {
    apikey: Mutex<String>,
    faults: Mutex<Faults>,
    quota_spent: Mutex<bool>,
    /// Keep every request (tests) or only counts (benchmarks of a million rows).
    keep_requests: bool,
    seen: Mutex<Seen>,
    started: Instant,
}

#[derive(Debug, Default)]
struct Seen {
    requests: Vec<SeenRequest>,
    per_session: HashMap<String, u32>,
    /// Requests that got past the key and quota checks, per id: what scenarios count.
    scenario_hits: HashMap<String, u32>,
    deleted: HashSet<String>,
    deleted_twice: u64,
    per_second: BTreeMap<u64, u64>,
    /// Requests on each editor's path, by the editor's label.
    per_editor: BTreeMap<&'static str, u64>,
    /// The latest `Retry-After` window we asked for: when the 429 went out, and its end.
    quiet: Option<(Instant, Instant)>,
    inside_retry_after: u64,
    off_contract: u64,
    total: u64,
}

/// Summary counts, also served as JSON at `GET /__standin/stats`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StandInStats {
    pub requests: u64,
    pub sessions: usize,
    /// Requests that did not match `DELETE /<editor's path>/<token>` for one of the editors.
    pub off_contract: u64,
    /// Requests that arrived inside a `Retry-After` window (after a short allowance for requests
    /// already in flight when the 429 went out).
    pub inside_retry_after: u64,
    /// Requests for an id that had already been deleted.
    pub deleted_twice: u64,
    pub max_per_second: u64,
    pub per_second: Vec<u64>,
    /// Requests on each editor's session path (every editor listed, also at 0).
    pub per_editor: BTreeMap<&'static str, u64>,
}

/// A running stand-in.
pub struct StandIn {
    pub addr: SocketAddr,
    pub state: Arc<StandInState>,
    stop: CancellationToken,
}

impl StandIn {
    /// Serves on `listen` (use port 0 for any free port) until dropped or stopped.
    pub async fn start(listen: SocketAddr, apikey: &str, keep_requests: bool) -> std::io::Result<Self> {
        let state = Arc::new(StandInState {
            apikey: Mutex::new(apikey.to_owned()),
            faults: Mutex::new(Faults::default()),
            quota_spent: Mutex::new(false),
            keep_requests,
            seen: Mutex::new(Seen::default()),
            started: Instant::now(),
        });
        let mut app = Router::new();
        for editor in Editor::ALL {
            app = app.route(
                &format!("/{}/{{id}}", editor.sessions_path().join("/")),
                any(delete_session),
            );
        }
        let app = app
            .route("/__standin/stats", get(stats))
            .route("/__standin/faults", post(set_faults))
            .fallback(off_contract)
            .with_state(state.clone());
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(stopped.cancelled_owned())
                .await;
        });
        Ok(Self { addr, state, stop })
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn stop(&self) {
        self.stop.cancel();
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl StandInState {
    pub fn set_apikey(&self, apikey: &str) {
        *self.apikey.lock().expect("lock") = apikey.to_owned();
    }

    pub fn set_latency(&self, latency: Duration) {
        self.faults.lock().expect("lock").latency_ms = latency.as_millis() as u64;
    }

    /// Replaces the injected faults; `quota_spent` and `apikey` switch those states too.
    pub fn set_faults(&self, mut faults: Faults) {
        self.set_quota_spent(faults.quota_spent);
        if let Some(apikey) = faults.apikey.take() {
            self.set_apikey(&apikey);
        }
        *self.faults.lock().expect("lock") = faults;
    }

    /// While spent, every call answers 1845 (API call limit exceeded).
    pub fn set_quota_spent(&self, spent: bool) {
        *self.quota_spent.lock().expect("lock") = spent;
    }

    /// Answers 429 and remembers the window, to catch requests that do not honour it.
    fn rate_limited(&self, wait: Duration) -> Response {
        let mut seen = self.seen.lock().expect("lock");
        let now = Instant::now();
        let until = now + wait;
        if seen.quiet.is_none_or(|(_, current)| current < until) {
            seen.quiet = Some((now, until));
        }
        faults::too_many_requests(wait)
    }

    pub fn requests(&self) -> Vec<SeenRequest> {
        self.seen.lock().expect("lock").requests.clone()
    }

    /// How many requests named this session id.
    pub fn count_for(&self, session_id: &str) -> u32 {
        self.seen
            .lock()
            .expect("lock")
            .per_session
            .get(session_id)
            .copied()
            .unwrap_or(0)
    }

    pub fn stats(&self) -> StandInStats {
        let seen = self.seen.lock().expect("lock");
        let per_second: Vec<u64> = seen.per_second.values().copied().collect();
        StandInStats {
            requests: seen.total,
            sessions: seen.per_session.len(),
            off_contract: seen.off_contract,
            deleted_twice: seen.deleted_twice,
            inside_retry_after: seen.inside_retry_after,
            max_per_second: per_second.iter().copied().max().unwrap_or(0),
            per_second,
            per_editor: Editor::ALL
                .into_iter()
                .map(|e| (e.label(), seen.per_editor.get(e.label()).copied().unwrap_or(0)))
                .collect(),
        }
    }
}

async fn set_faults(State(state): State<Arc<StandInState>>, axum::Json(faults): axum::Json<Faults>) -> Response {
    state.set_faults(faults);
    StatusCode::NO_CONTENT.into_response()
}

async fn stats(State(state): State<Arc<StandInState>>) -> Response {
    axum::Json(state.stats()).into_response()
}

async fn off_contract(State(state): State<Arc<StandInState>>, request: axum::extract::Request) -> Response {
    let mut seen = state.seen.lock().expect("lock");
    seen.off_contract += 1;
    seen.total += 1;
    if state.keep_requests {
        let path = request.uri().path().to_owned();
        seen.requests.push(SeenRequest {
            method: request.method().to_string(),
            path,
            apikey: None,
            at: Instant::now(),
        });
    }
    (StatusCode::NOT_FOUND, "<html><body>404 Not Found</body></html>").into_response()
}

fn api_error(code: &str, message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({"code": code, "message": message})),
    )
        .into_response()
}

/// Which editor's route a request came in on (every route is one editor's session path).
fn editor_of(uri: &Uri) -> Editor {
    let first = uri.path().trim_start_matches('/').split('/').next().unwrap_or_default();
    Editor::ALL
        .into_iter()
        .find(|e| e.sessions_path()[0] == first)
        .unwrap_or(Editor::Writer)
}

async fn delete_session(
    State(state): State<Arc<StandInState>>,
    method: axum::http::Method,
    uri: Uri,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let editor = editor_of(&uri);
    let apikey = query.as_deref().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "apikey")
            .map(|(_, v)| v.into_owned())
    });
    let token = crate::session_id::SessionId::parse(&id).is_ok();
    {
        let mut seen = state.seen.lock().expect("lock");
        seen.total += 1;
        let second = state.started.elapsed().as_secs();
        *seen.per_second.entry(second).or_default() += 1;
        *seen.per_editor.entry(editor.label()).or_default() += 1;
        // Requests that left the client before it read the 429 arrive just after it went out.
        let allowance = IN_FLIGHT_ALLOWANCE + state.faults.lock().expect("lock").latency();
        let now = Instant::now();
        if seen
            .quiet
            .is_some_and(|(from, until)| now > from + allowance && now < until)
        {
            seen.inside_retry_after += 1;
        }
        if method != axum::http::Method::DELETE || !token {
            seen.off_contract += 1;
        }
        if state.keep_requests {
            seen.requests.push(SeenRequest {
                method: method.to_string(),
                path: uri.path().to_owned(),
                apikey: apikey.clone(),
                at: Instant::now(),
            });
        }
        *seen.per_session.entry(id.clone()).or_default() += 1;
    }
    let faults = state.faults.lock().expect("lock").clone();
    if !faults.latency().is_zero() {
        tokio::time::sleep(faults.latency()).await;
    }
    if method != axum::http::Method::DELETE {
        return match editor {
            Editor::Writer => api_error("1838", "Invalid method"),
            _ => StatusCode::METHOD_NOT_ALLOWED.into_response(),
        };
    }
    match apikey {
        None if editor == Editor::Writer => return api_error("1837", "Mandatory parameter(s) missing"),
        None => return api_error(editor.key_rejected_code(), "Invalid API Key"),
        Some(key) if key != *state.apikey.lock().expect("lock") => {
            // The real service's messages are not known to omit the key; echo it to prove we scrub.
            return api_error(editor.key_rejected_code(), &format!("Invalid API Key {key}"));
        }
        Some(_) => {}
    }
    if *state.quota_spent.lock().expect("lock") {
        return api_error(editor.quota_code(), "API call limit exceeded");
    }
    match faults.draw() {
        Some(Injected::Answer(response)) => return response,
        Some(Injected::Hang(wait)) => {
            tokio::time::sleep(wait).await;
            return api_error("1801", "Internal server error");
        }
        Some(Injected::RateLimited(wait)) => return state.rate_limited(wait),
        None => {}
    }
    let (name, failures) = scenario(&id);
    let (failing, already_deleted) = {
        let mut seen = state.seen.lock().expect("lock");
        let hits = seen.scenario_hits.entry(id.clone()).or_default();
        *hits += 1;
        let failing = *hits <= failures;
        (failing, seen.deleted.contains(&id))
    };
    match name {
        "gone" => return api_error("1833", "Invalid session id"),
        "expired" => return api_error("1834", "Session expired"),
        "bad" => return api_error("1832", "Invalid parameter value"),
        "flaky" if failing => {
            let page = "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>";
            let mut response = (StatusCode::BAD_GATEWAY, page).into_response();
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
            return response;
        }
        "busy" if failing => return api_error("1861", "Server may be down or busy"),
        "limited" if failing => {
            let mut response = (StatusCode::TOO_MANY_REQUESTS, "Too Many Requests").into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return response;
        }
        _ => {}
    }
    // Deleting twice: the session no longer exists, as the real service most likely answers.
    if already_deleted {
        state.seen.lock().expect("lock").deleted_twice += 1;
        return api_error("1833", "Invalid session id");
    }
    state.seen.lock().expect("lock").deleted.insert(id.clone());
    let body = match id.len() % 3 {
        // The Sheet page documents a string.
        _ if editor == Editor::Sheet => json!({"session_delete": "true"}),
        0 => json!({"session_delete": true}),
        1 => json!({"session_deleted": true}),
        _ => json!({"session_delete": "true"}),
    };
    axum::Json(body).into_response()
}
