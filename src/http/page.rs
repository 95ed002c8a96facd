//! The status page (`/`) and its data as JSON (`/status.json`): counts per state, final rows per
//! minute over the last hour, this process's budget and pauses, the live instances and the most
//! common recent errors. Server-rendered HTML with an inline SVG chart and inline CSS: no script,
//! no external file (it works air-gapped), reloaded by the browser every `REFRESH_SECONDS`.
//!
//! Nothing runs for the page unless someone looks: each view makes its reads then and there,
//! through a read-only store of its own (`Store::connect_reader`), created at the first view and
//! bounded (counts per state as `status` reads them, one hour of the `finished_at` index, at most
//! `ERROR_SCAN` rows of the error index, the instances table).
//!
//! Everything shown is escaped (`last_error` is application and API text), and no whole session
//! id is ever shown: a sample row shows its id and an 8-character prefix of its session id, and
//! error texts have session ids cut to such a prefix (`redact`). `/status.json` carries the same
//! keys as `status --json` with the same values (`commands::status::to_json`), plus the page's own.
//!
//! The pause shown is what this process's health and metrics know: a rejected key (readiness)
//! and the pauses counted since start per reason. When a 429 or quota pause ends is known only to
//! the work loop's gate, which this listener cannot reach.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::config::Config;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::outcome::AnswerClass;
use crate::store::budget::BudgetReport;
use crate::store::{FinishedPerMinute, InstanceRow, RecentErrors, StatusReport, Store};

/// The browser reloads the page this often (`<meta http-equiv="refresh">`).
pub const REFRESH_SECONDS: u32 = 10;
/// Minutes in the chart (the last hour, the current minute last).
pub(super) const CHART_MINUTES: usize = 60;
/// How far back the error table looks (by `last_attempt_at`).
pub(super) const ERROR_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// At most this many of the newest error rows are grouped (the read stays bounded).
pub(super) const ERROR_SCAN: u32 = 10_000;
/// Error texts shown.
pub(super) const ERROR_GROUPS: u32 = 10;
/// Characters of a session id the page shows.
pub(super) const SHOWN_ID_CHARS: usize = 8;
/// A run of id characters at least this long, with letters and digits, is taken for a session
/// id in an error text and cut to its prefix.
pub(super) const ID_LIKE_LEN: usize = 20;
/// Answers to both paths: the browser must not keep an old status; no script may run.
pub(super) const SECURITY_POLICY: &str =
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'";

/// What the page reads from: its own read-only store, this process's metrics and health, and
/// the configured budget.
pub struct Page {
    pub(super) database_url: String,
    pub(super) store: OnceLock<Result<Store, String>>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) health: Arc<Health>,
    pub(super) rate_per_second: u32,
    pub(super) burst: u32,
    pub(super) lease: Duration,
    pub(super) stale_after: Duration,
    pub(super) key_pause: Duration,
    pub(super) quota_pause: Duration,
    pub(super) host: String,
    pub(super) pid: u32,
}

/// Everything one view shows, read at one moment.
pub(super) struct Facts {
    pub(super) now: DateTime<Utc>,
    pub(super) report: StatusReport,
    pub(super) instances: Vec<InstanceRow>,
    pub(super) minutes: FinishedPerMinute,
    pub(super) errors: RecentErrors,
    /// The cluster's budget and pause, from the database.
    pub(super) budget: BudgetReport,
    pub(super) live_instances: Option<f64>,
    /// Pauses since this process started, by reason (`session_reaper_pauses_total`).
    pub(super) pauses: Vec<(&'static str, f64)>,
    pub(super) not_ready: Option<&'static str>,
    pub(super) since_tick: Duration,
}

impl Page {
    pub fn new(config: &Config, metrics: Arc<Metrics>, health: Arc<Health>) -> Self {
        Self {
            database_url: config.database.url.clone(),
            store: OnceLock::new(),
            metrics,
            health,
            rate_per_second: config.worker.rate_per_second,
            burst: config.worker.burst,
            lease: config.worker.lease,
            stale_after: config.worker.stale_after,
            key_pause: config.retry.key_pause,
            quota_pause: config.retry.quota_pause,
            host: crate::worker::hostname(),
            pid: std::process::id(),
        }
    }

    /// The page's store, created at the first view (it connects at its first query).
    fn store(&self) -> anyhow::Result<&Store> {
        self.store
            .get_or_init(|| Store::connect_reader(&self.database_url).map_err(|e| format!("{e:#}")))
            .as_ref()
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    async fn facts(&self) -> anyhow::Result<Facts> {
        let store = self.store()?;
        let now = Utc::now();
        // The current minute last, whole minutes before it.
        let minute = now.timestamp() - now.timestamp().rem_euclid(60);
        let start =
            DateTime::from_timestamp(minute, 0).unwrap_or(now) - chrono::Duration::minutes(CHART_MINUTES as i64 - 1);
        let since = now - crate::store::chrono_duration(ERROR_WINDOW);
        let (report, instances, budget, minutes, errors) = tokio::try_join!(
            store.status(now, self.stale_after),
            store.instances(),
            store.budget(),
            store.finished_per_minute(start, CHART_MINUTES),
            store.recent_errors(since, ERROR_SCAN, ERROR_GROUPS),
        )?;
        let metrics = self.metrics.render();
        let pauses = AnswerClass::PAUSES
            .iter()
            .map(|reason| {
                let series = format!("session_reaper_pauses_total{{reason=\"{}\"}}", reason.label());
                (reason.label(), metric_value(&metrics, &series).unwrap_or(0.0))
            })
            .collect();
        Ok(Facts {
            now,
            report,
            instances,
            minutes,
            errors,
            budget,
            live_instances: metric_value(&metrics, "session_reaper_live_instances"),
            pauses,
            not_ready: self.health.not_ready(),
            since_tick: self.health.since_tick(),
        })
    }
}

/// `GET /`: the status page.
pub async fn html(State(page): State<Arc<Page>>) -> Response {
    let (status, body) = match page.facts().await {
        Ok(facts) => (StatusCode::OK, render(&page, &facts)),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, render_error(&page, &e)),
    };
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::CONTENT_SECURITY_POLICY, SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// `GET /status.json`: the page's data. The keys `status --json` prints have its values.
pub async fn json(State(page): State<Arc<Page>>) -> Response {
    let (status, body) = match page.facts().await {
        Ok(facts) => (StatusCode::OK, to_json(&page, &facts)),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, json!({ "error": format!("{e:#}") })),
    };
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
            (header::CONTENT_SECURITY_POLICY, SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        format!("{body}\n"),
    )
        .into_response()
}

pub(super) fn to_json(page: &Page, facts: &Facts) -> Value {
    let mut json = crate::commands::status::to_json(&facts.report);
    json["instances"] = facts
        .instances
        .iter()
        .map(crate::commands::status::instance_json)
        .collect();
    let known = known_ids(&facts.errors);
    json["finished_per_minute"] = json!({
        "start": facts.minutes.start.to_rfc3339(),
        "minutes": facts.minutes.counts,
        "total": facts.minutes.total(),
    });
    json["recent_errors"] = json!({
        "since": (facts.now - crate::store::chrono_duration(ERROR_WINDOW)).to_rfc3339(),
        "scanned": facts.errors.scanned,
        "scan_limit": ERROR_SCAN,
        "distinct": facts.errors.distinct,
        "groups": facts.errors.groups.iter().map(|group| json!({
            "error": redact(&group.error, &known),
            "state": group.state,
            "count": group.count,
            "latest_at": group.latest_at.to_rfc3339(),
            "sample_row_id": group.sample_id,
            "sample_session_id_prefix": session_id_prefix(&group.sample_session_id),
        })).collect::<Vec<_>>(),
    });
    json["budget"] = crate::commands::status::budget_json(&facts.budget);
    json["budget"]["configured_here"] = json!({ "rate_per_second": page.rate_per_second, "burst": page.burst });
    json["budget"]["live_instances"] = json!(facts.live_instances);
    json["pauses_since_start"] = facts
        .pauses
        .iter()
        .map(|(reason, n)| ((*reason).to_owned(), json!(n)))
        .collect();
    json["ready"] = json!(facts.not_ready.is_none());
    json["not_ready_reason"] = json!(facts.not_ready);
    json["generated_at"] = json!(facts.now.to_rfc3339());
    json
}

/// The value of the sample `series` (name and labels exactly as rendered) in a Prometheus text
/// exposition.
pub(super) fn metric_value(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?.strip_prefix(' ')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// HTML-escapes text for an element or a quoted attribute.
pub(super) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `1234567` as `1,234,567`.
pub(super) fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

use super::render::*;
pub use super::render::{redact, session_id_prefix};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_leaves_no_markup() {
        assert_eq!(
            escape(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
    }

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_000_000), "1,000,000");
        assert_eq!(thousands(-12_345), "-12,345");
        assert_eq!(thousands(i64::MIN), "-9,223,372,036,854,775,808");
    }

    #[test]
    fn a_session_id_shows_at_most_eight_characters_and_half_of_a_short_one() {
        assert_eq!(
            session_id_prefix("d26aa7b8029bf4f8d34c7dd00139392357d12ffcb21c1"),
            "d26aa7b8…"
        );
        assert_eq!(session_id_prefix("abcdef"), "abc…");
        assert_eq!(session_id_prefix("a"), "…");
        assert_eq!(session_id_prefix(""), "…");
    }

    #[test]
    fn errors_lose_their_session_ids() {
        let id = "d26aa7b8029bf4f8d34c7dd00139392357d12ffcb21c1";
        let shown = redact(&format!("session {id} not found"), &[]);
        assert_eq!(shown, "session d26aa7b8… not found");
        // A known id is cut even when short or full of odd characters (as the daemon escapes it).
        let odd = "bad id/\"x\"";
        let message = format!("session id \"{}\" contains characters", odd.escape_default());
        assert!(!redact(&message, &[odd]).contains(&odd.escape_default().to_string()));
        assert_eq!(redact("short-1", &["short-1"]), "sho…");
        // Ordinary words, codes and numbers stay.
        let plain = "HTTP 502 with an HTML page (gave up after 4 attempts: API error code 1861)";
        assert_eq!(redact(plain, &[]), plain);
        assert_eq!(redact("connection_reset_by_peer", &[]), "connection_reset_by_peer");
    }

    #[test]
    fn metrics_are_read_from_the_exposition() {
        let metrics = Metrics::new();
        metrics.set_rate_limit(42);
        metrics.pause(AnswerClass::RateLimited);
        metrics.pause(AnswerClass::RateLimited);
        let text = metrics.render();
        assert_eq!(metric_value(&text, "session_reaper_rate_limit_per_second"), Some(42.0));
        assert_eq!(
            metric_value(&text, "session_reaper_pauses_total{reason=\"rate_limited\"}"),
            Some(2.0),
            "{text}"
        );
        assert_eq!(
            metric_value(&text, "session_reaper_pauses_total{reason=\"quota_exhausted\"}"),
            Some(0.0)
        );
        assert_eq!(metric_value(&text, "session_reaper_rate_limit"), None);
    }

    #[test]
    fn ages_read_like_words() {
        let now = DateTime::parse_from_rfc3339("2026-11-30T10:00:00Z").unwrap().to_utc();
        let ago = |s| age(now, now - chrono::Duration::seconds(s));
        assert_eq!(ago(5), "5 s ago");
        assert_eq!(ago(600), "10 min ago");
        assert_eq!(ago(3 * 3600), "3 h ago");
        assert_eq!(ago(3 * 86_400), "3 d ago");
        assert_eq!(ago(-4), "in 4 s");
    }
}
