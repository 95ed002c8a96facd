//! The Office Integrator session API: one shared HTTP client, the DELETE call exactly as the
//! API page shows it, and the classification of its answers.
//!
//! The apikey travels in the query string, and reqwest errors carry the full URL; every error
//! leaves this module stripped of its URL and scrubbed of the key.

mod answer;
mod retry_after;

use std::time::SystemTime;

use anyhow::Context;
use reqwest::header::{ACCEPT, CONTENT_LENGTH, RETRY_AFTER};
use reqwest::{Client, Url};
use secrecy::{ExposeSecret, SecretString};

pub use answer::{Answer, CODE_DEPRECATED, Verdict, classify, classify_for};
pub use retry_after::{MAX_RETRY_AFTER, parse_retry_after};

use crate::config::ApiConfig;
use crate::editor::Editor;
use crate::session_id::SessionId;

/// Largest answer body we read; real answers are under 200 bytes, proxy pages a few kB.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Path of the Writer session resource, below the data centre's base URL (each editor's is
/// `Editor::sessions_path`).
pub const SESSIONS_PATH: [&str; 4] = Editor::Writer.sessions_path();

/// Sends deletions. Cheap to clone: the connection pool is shared.
#[derive(Clone)]
pub struct ApiClient {
    http: Client,
    base_url: Url,
    apikey: SecretString,
}

impl ApiClient {
    pub fn new(config: &ApiConfig) -> anyhow::Result<Self> {
        let apikey = config.apikey.clone().context("No apikey configured")?;
        let http = Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.connect_timeout)
            .user_agent(concat!("session-reaper/", env!("CARGO_PKG_VERSION")))
            // Redirects would resend the query string (and its key) to wherever they point.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("Failed to build the HTTP client")?;
        Ok(Self {
            http,
            base_url: config.base_url.clone(),
            apikey,
        })
    }

    /// `DELETE {base}/writer/officeapi/v1/sessions/{id}?apikey={key}` (a Writer session).
    pub async fn delete_session(&self, id: &SessionId) -> Answer {
        self.delete_editor_session(Editor::Writer, id).await
    }

    /// `DELETE {base}/{editor's path}/{id}?apikey={key}`, the answer read by that editor's codes.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn delete_editor_session(&self, editor: Editor, id: &SessionId) -> Answer {
        let mut url = self.base_url.clone();
        url.path_segments_mut()
            .expect("base URLs are http(s) and so have a path")
            .pop_if_empty()
            .extend(editor.sessions_path())
            .push(id.as_str());
        url.query_pairs_mut().append_pair("apikey", self.apikey.expose_secret());

        let sent = self
            .http
            .delete(url)
            .header(CONTENT_LENGTH, 0)
            .header(ACCEPT, "application/json")
            .send()
            .await;
        let mut response = match sent {
            Ok(response) => response,
            Err(e) => return Answer::no_answer(self.scrub(describe(e))),
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) if body.len() + chunk.len() > MAX_BODY_BYTES => {
                    return Answer {
                        verdict: Verdict::Transient { retry_after },
                        http_status: Some(status),
                        api_code: None,
                        message: Some(format!("HTTP {status} with a body over {MAX_BODY_BYTES} bytes")),
                    };
                }
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) => break,
                Err(e) => {
                    let mut answer = Answer::no_answer(self.scrub(describe(e)));
                    answer.http_status = Some(status);
                    return answer;
                }
            }
        }
        // Scrub before classifying: the message is cut to a length there, and a key straddling
        // the cut would no longer be found whole.
        let body = match String::from_utf8(body) {
            Ok(text) => self.scrub(text).into_bytes(),
            Err(raw) => raw.into_bytes(),
        };
        let mut answer = classify_for(editor, status, &body, retry_after);
        answer.message = answer.message.map(|m| self.scrub(m));
        answer
    }

    /// Removes the apikey from text that came from the outside (some services echo parameters).
    fn scrub(&self, text: String) -> String {
        let key = self.apikey.expose_secret();
        if key.is_empty() || !text.contains(key) {
            text
        } else {
            text.replace(key, "[redacted]")
        }
    }
}

/// A transport error as one line, without the URL (it holds the key) and with its causes.
fn describe(e: reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "the answer broke off"
    } else {
        "request failed"
    };
    let e = e.without_url();
    let mut line = format!("{kind}: {e}");
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        line.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    line
}
