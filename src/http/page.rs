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

use std::fmt::Write;
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
use crate::store::{ErrorGroup, FinishedPerMinute, InstanceRow, RecentErrors, State as RowState, StatusReport, Store};

/// The browser reloads the page this often (`<meta http-equiv="refresh">`).
pub const REFRESH_SECONDS: u32 = 10;
/// Minutes in the chart (the last hour, the current minute last).
const CHART_MINUTES: usize = 60;
/// How far back the error table looks (by `last_attempt_at`).
const ERROR_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// At most this many of the newest error rows are grouped (the read stays bounded).
const ERROR_SCAN: u32 = 10_000;
/// Error texts shown.
const ERROR_GROUPS: u32 = 10;
/// Characters of a session id the page shows.
const SHOWN_ID_CHARS: usize = 8;
/// A run of id characters at least this long, with letters and digits, is taken for a session
/// id in an error text and cut to its prefix.
const ID_LIKE_LEN: usize = 20;
/// Answers to both paths: the browser must not keep an old status; no script may run.
const SECURITY_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'";

/// What the page reads from: its own read-only store, this process's metrics and health, and
/// the configured budget.
pub struct Page {
    database_url: String,
    store: OnceLock<Result<Store, String>>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    rate_per_second: u32,
    burst: u32,
    lease: Duration,
    stale_after: Duration,
    key_pause: Duration,
    quota_pause: Duration,
    host: String,
    pid: u32,
}

/// Everything one view shows, read at one moment.
struct Facts {
    now: DateTime<Utc>,
    report: StatusReport,
    instances: Vec<InstanceRow>,
    minutes: FinishedPerMinute,
    errors: RecentErrors,
    /// This process's share of the budget (`session_reaper_rate_limit_per_second`).
    rate_limit: Option<f64>,
    live_instances: Option<f64>,
    /// Pauses since this process started, by reason (`session_reaper_pauses_total`).
    pauses: Vec<(&'static str, f64)>,
    not_ready: Option<&'static str>,
    since_tick: Duration,
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
        let (report, instances, minutes, errors) = tokio::try_join!(
            store.status(now, self.stale_after),
            store.instances(),
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
            rate_limit: metric_value(&metrics, "session_reaper_rate_limit_per_second"),
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

fn to_json(page: &Page, facts: &Facts) -> Value {
    let mut json = crate::commands::status::to_json(&facts.report);
    json["instances"] = facts.instances.iter().map(instance_json).collect();
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
    json["budget"] = json!({
        "rate_per_second": page.rate_per_second,
        "burst": page.burst,
        "this_process_rate_limit": facts.rate_limit,
        "live_instances": facts.live_instances,
    });
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

/// One instance as `status --json` prints it.
fn instance_json(instance: &InstanceRow) -> Value {
    let beat = &instance.beat;
    let mut json = json!({
        "instance_id": beat.instance_id, "host": beat.host, "pid": beat.pid, "version": beat.version,
        "started_at": beat.started_at.to_rfc3339(), "heartbeat_at": instance.heartbeat_at.to_rfc3339(),
        "in_flight": beat.in_flight, "rate_limit": beat.rate_limit,
    });
    for (outcome, count) in beat.counts.iter() {
        json[outcome.label()] = json!(count);
    }
    json
}

/// The value of the sample `series` (name and labels exactly as rendered) in a Prometheus text
/// exposition.
fn metric_value(exposition: &str, series: &str) -> Option<f64> {
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

/// What the page shows of a session id: at most 8 characters, and never more than half of it,
/// then an ellipsis.
pub fn session_id_prefix(session_id: &str) -> String {
    let shown = SHOWN_ID_CHARS.min(session_id.chars().count() / 2);
    format!("{}…", session_id.chars().take(shown).collect::<String>())
}

/// The sample session ids of the error groups, whole, as `redact` needs them.
fn known_ids(errors: &RecentErrors) -> Vec<&str> {
    errors
        .groups
        .iter()
        .map(|group| group.sample_session_id.as_str())
        .filter(|id| !id.is_empty())
        .collect()
}

/// `error` with every session id cut to its prefix: the `known` ones (as written and as the
/// daemon's messages escape them), then any run of id characters long enough, with letters and
/// digits, to be one.
pub fn redact(error: &str, known: &[&str]) -> String {
    let mut text = error.to_owned();
    for id in known {
        for form in [id.to_string(), id.escape_default().to_string()] {
            if !form.is_empty() && text.contains(&form) {
                text = text.replace(&form, &session_id_prefix(id));
            }
        }
    }
    let is_id_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        let id_like = run.len() >= ID_LIKE_LEN
            && run.chars().any(|c| c.is_ascii_digit())
            && run.chars().any(|c| c.is_ascii_alphabetic());
        if id_like {
            out.push_str(&session_id_prefix(run));
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in text.chars() {
        if is_id_char(c) {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

/// "12 s ago", "3 min ago", "2 h ago", "5 d ago" (or "in 4 s" for a time ahead).
fn age(now: DateTime<Utc>, then: DateTime<Utc>) -> String {
    let seconds = (now - then).num_seconds();
    let (ahead, s) = (seconds < 0, seconds.unsigned_abs());
    let span = match s {
        0..120 => format!("{s} s"),
        120..7200 => format!("{} min", s / 60),
        7200..172_800 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    };
    if ahead {
        format!("in {span}")
    } else {
        format!("{span} ago")
    }
}

/// A duration in words: "45 s", "12 min", "3.5 h".
fn span(seconds: f64) -> String {
    if seconds < 120.0 && seconds.fract() == 0.0 {
        format!("{seconds:.0} s")
    } else if seconds < 120.0 {
        format!("{seconds:.1} s")
    } else if seconds < 7200.0 {
        format!("{:.0} min", seconds / 60.0)
    } else {
        format!("{:.1} h", seconds / 3600.0)
    }
}

/// A time with its age (the date only when it is not today), the exact value in the tooltip.
fn when(now: DateTime<Utc>, at: DateTime<Utc>) -> String {
    let format = if at.date_naive() == now.date_naive() {
        "%H:%M:%S UTC"
    } else {
        "%Y-%m-%d %H:%M UTC"
    };
    format!(
        r#"<time datetime="{iso}" title="{iso}">{shown}</time> <span class="muted age">({age})</span>"#,
        iso = escape(&at.to_rfc3339()),
        shown = at.format(format),
        age = age(now, at),
    )
}

const STYLE: &str = r#"
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       background: #f3f4f7; color: #1d2330; }
header { background: #1e293b; color: #f8fafc; padding: 14px 24px; display: flex; flex-wrap: wrap;
         align-items: baseline; gap: 6px 18px; }
header h1 { font-size: 18px; margin: 0; font-weight: 600; }
header .meta { color: #cbd5e1; font-size: 13px; }
header .pill { margin-left: auto; }
main { padding: 14px 24px 20px; display: grid; gap: 14px; grid-template-columns: repeat(3, minmax(0, 1fr)); }
section { background: #fff; border: 1px solid #dde1e8; border-radius: 8px; padding: 10px 16px 12px; min-width: 0; }
section.wide { grid-column: 1 / -1; }
h2 { font-size: 12px; text-transform: uppercase; letter-spacing: .06em; color: #5b6474; margin: 0 0 8px; font-weight: 600; }
table { border-collapse: collapse; width: 100%; }
th, td { padding: 4px 8px; border-bottom: 1px solid #eef0f4; text-align: left; vertical-align: top; }
th { font-size: 12px; color: #5b6474; font-weight: 600; }
tr:last-child td { border-bottom: none; }
.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.muted { color: #6b7280; }
.small { font-size: 12px; }
.dot { display: inline-block; width: 10px; height: 10px; border-radius: 50%; margin-right: 8px; vertical-align: -1px; }
.s-pending { background: #94a3b8; } .s-retrying { background: #f59e0b; } .s-deleted { background: #16a34a; }
.s-gone { background: #0ea5e9; } .s-failed { background: #dc2626; } .s-invalid { background: #7c3aed; }
time, .age { white-space: nowrap; }
.pill { white-space: nowrap; display: inline-block; border-radius: 999px; padding: 1px 10px; font-size: 12px; font-weight: 600; }
.ok { background: #dcfce7; color: #14532d; } .warn { background: #fef3c7; color: #78350f; } .bad { background: #fee2e2; color: #7f1d1d; }
.mono { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12px; }
.error-text { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12px; word-break: break-word; white-space: pre-wrap; }
.total td { font-weight: 600; border-top: 1px solid #dde1e8; }
.chart { display: block; margin-top: 4px; }
.chart .bar { fill: #16a34a; } .chart .bar:hover { fill: #15803d; }
.chart .grid { stroke: #eef0f4; } .chart .axis { stroke: #9ca3af; }
.chart text { font-size: 11px; fill: #6b7280; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 4px 14px; margin: 0; }
dt { color: #5b6474; } dd { margin: 0; }
footer { padding: 0 24px 20px; color: #6b7280; font-size: 12px; }
"#;

fn head(out: &mut String, title: &str) {
    let _ = write!(
        out,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{REFRESH_SECONDS}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{STYLE}</style></head><body>
"#,
        title = escape(title)
    );
}

fn render_error(page: &Page, error: &anyhow::Error) -> String {
    let mut out = String::new();
    head(&mut out, "session-reaper: database unavailable");
    let _ = write!(
        out,
        r#"<header><h1>session-reaper</h1><span class="meta">{host} · pid {pid}</span><span class="pill bad">database unavailable</span></header>
<main><section class="wide"><h2>The status could not be read</h2><p class="error-text" id="page-error">{error}</p>
<p class="muted">The page tries again at its next refresh ({REFRESH_SECONDS} s). <a href="/readyz">/readyz</a> says whether the work loop reaches the database.</p></section></main>
</body></html>
"#,
        host = escape(&page.host),
        pid = page.pid,
        error = escape(&redact(&format!("{error:#}"), &[])),
    );
    out
}

fn render(page: &Page, facts: &Facts) -> String {
    let now = facts.now;
    let report = &facts.report;
    let mut out = String::with_capacity(32 * 1024);
    head(&mut out, &format!("session-reaper on {}", page.host));
    let (pill, state) = match (facts.not_ready, facts.since_tick > super::LIVENESS_LIMIT) {
        (_, true) => ("bad", format!("work loop silent for {} s", facts.since_tick.as_secs())),
        (Some(why), false) => ("bad", format!("not ready: {why}")),
        (None, false) => ("ok", "ready".to_owned()),
    };
    let _ = write!(
        out,
        r#"<header><h1>session-reaper</h1><span class="meta">{host} · pid {pid} · v{version} · {at} · refreshes every {REFRESH_SECONDS} s · <a href="/status.json" style="color:#cbd5e1">status.json</a></span><span class="pill {pill}" id="readiness">{state}</span></header>
<main>
"#,
        host = escape(&page.host),
        pid = page.pid,
        version = escape(env!("CARGO_PKG_VERSION")),
        at = now.format("%Y-%m-%d %H:%M:%S UTC"),
        state = escape(&state),
    );

    // Counts per state.
    out.push_str(r#"<section id="states"><h2>Sessions by state</h2><table><tbody>"#);
    let mut total = 0;
    for state in RowState::ALL {
        let n = report.count(state);
        total += n;
        let _ = write!(
            out,
            r#"<tr><td><span class="dot s-{name}"></span>{name}{final_}</td><td class="num" data-state="{name}" data-value="{n}">{shown}</td></tr>"#,
            name = state.as_str(),
            final_ = if state.is_terminal() {
                ""
            } else {
                r#" <span class="muted small">open</span>"#
            },
            shown = thousands(n),
        );
    }
    let _ = write!(
        out,
        r#"<tr class="total"><td>all rows</td><td class="num" data-key="total" data-value="{total}">{shown}</td></tr></tbody></table></section>"#,
        shown = thousands(total),
    );

    // Now: in flight, backlog, last success and error.
    let oldest = report
        .earliest_due
        .map(|due| (now - due).num_milliseconds() as f64 / 1000.0)
        .filter(|age| *age >= 0.0);
    out.push_str(r#"<section id="now"><h2>Right now</h2><dl>"#);
    let _ = write!(
        out,
        r#"<dt>in flight</dt><dd class="num" style="text-align:left" data-key="in_flight" data-value="{n}">{shown}</dd>"#,
        n = report.in_flight,
        shown = thousands(report.in_flight),
    );
    let _ = write!(
        out,
        r#"<dt>open rows</dt><dd data-key="open" data-value="{n}">{shown}</dd>"#,
        n = report.open(),
        shown = thousands(report.open()),
    );
    let _ = write!(
        out,
        r#"<dt>oldest due</dt><dd data-key="oldest_due_age_seconds" data-value="{raw}">{shown}</dd>"#,
        raw = oldest.map_or(String::new(), |s| format!("{s:.3}")),
        shown = oldest.map_or("nothing due".to_owned(), |s| format!("waiting {}", span(s))),
    );
    let _ = write!(
        out,
        r#"<dt>last success</dt><dd data-key="last_success">{}</dd>"#,
        report.last_success.map_or("never".to_owned(), |t| when(now, t)),
    );
    let known = known_ids(&facts.errors);
    match &report.last_error {
        Some((at, error)) => {
            let _ = write!(
                out,
                r#"<dt>last error</dt><dd data-key="last_error_at">{}</dd><dt></dt><dd class="error-text" data-key="last_error">{}</dd>"#,
                when(now, *at),
                escape(&redact(error, &known)),
            );
        }
        None => out.push_str(r#"<dt>last error</dt><dd data-key="last_error_at">none</dd>"#),
    }
    out.push_str("</dl></section>");

    // Budget and pauses.
    out.push_str(r#"<section id="budget"><h2>Budget and pauses</h2><dl>"#);
    let _ = write!(
        out,
        r#"<dt>budget</dt><dd><span data-key="rate_per_second">{}</span>/s, burst <span data-key="burst">{}</span> <span class="muted small">(all replicas)</span></dd>"#,
        thousands(i64::from(page.rate_per_second)),
        thousands(i64::from(page.burst)),
    );
    let _ = write!(
        out,
        r#"<dt>this process</dt><dd><span data-key="this_process_rate_limit">{}</span>/s <span class="muted small">(its share, {} live)</span></dd>"#,
        facts.rate_limit.map_or("–".to_owned(), |r| format!("{r:.0}")),
        facts.live_instances.map_or("–".to_owned(), |n| format!("{n:.0}")),
    );
    let pause = if facts.not_ready == Some("the API rejected the apikey") {
        format!(
            r#"<span class="pill bad">paused: the API rejected the apikey</span> <span class="muted small">one probe every {} until it is accepted</span>"#,
            span(page.key_pause.as_secs_f64())
        )
    } else {
        r#"<span class="pill ok">no key pause</span>"#.to_owned()
    };
    let _ = write!(out, r#"<dt>pause</dt><dd id="pause">{pause}</dd>"#);
    out.push_str(r#"<dt>pauses since start</dt><dd>"#);
    for (i, (reason, n)) in facts.pauses.iter().enumerate() {
        let _ = write!(
            out,
            r#"{sep}{reason} <b data-pauses="{reason}">{n:.0}</b>"#,
            sep = if i > 0 { " · " } else { "" },
            reason = escape(reason),
        );
    }
    let _ = write!(
        out,
        r#"<div class="muted small">A 429 pauses for its Retry-After, a spent quota for {}, a rejected key for {}; the end of a running 429 or quota pause is in the log only.</div></dd>"#,
        span(page.quota_pause.as_secs_f64()),
        span(page.key_pause.as_secs_f64()),
    );
    out.push_str("</dl></section>");

    // The chart.
    let minutes = &facts.minutes;
    let peak = minutes.counts.iter().copied().max().unwrap_or(0);
    let _ = write!(
        out,
        r#"<section class="wide" id="per-minute"><h2>Rows finished per minute, last hour</h2><div class="small muted"><b data-key="finished_last_hour" data-value="{total}">{total_shown}</b> rows reached a final state (deleted, gone, failed, invalid) since {since}; busiest minute {peak_shown}.</div>{svg}</section>"#,
        total = minutes.total(),
        total_shown = thousands(minutes.total()),
        since = minutes.start.format("%H:%M UTC"),
        peak_shown = thousands(peak),
        svg = super::chart::per_minute(minutes.start, &minutes.counts),
    );

    // Instances.
    let _ = write!(
        out,
        r#"<section class="wide" id="instances"><h2>Instances (<span data-key="instances" data-value="{n}">{n}</span>)</h2>"#,
        n = facts.instances.len(),
    );
    if facts.instances.is_empty() {
        out.push_str(r#"<p class="muted">No instance has beaten yet.</p>"#);
    } else {
        out.push_str(
            r#"<table><thead><tr><th>instance</th><th>host</th><th class="num">pid</th><th>version</th><th>started</th><th>last heartbeat</th><th class="num">in flight</th><th class="num">rate/s</th><th class="num">deleted</th><th class="num">gone</th><th class="num">failed</th><th class="num">invalid</th><th class="num">retries</th></tr></thead><tbody>"#,
        );
        let lease = crate::store::chrono_duration(page.lease);
        for instance in &facts.instances {
            let beat = &instance.beat;
            let this = beat.host == page.host && u32::try_from(beat.pid).ok() == Some(page.pid);
            let fresh = now - instance.heartbeat_at <= lease;
            let _ = write!(
                out,
                r#"<tr data-instance="{id}"><td class="mono">{id}</td><td>{host}{this}</td><td class="num">{pid}</td><td>{version}</td><td class="small">{started}</td><td class="small">{beat_at} {stale}</td><td class="num">{in_flight}</td><td class="num">{rate}</td><td class="num">{deleted}</td><td class="num">{gone}</td><td class="num">{failed}</td><td class="num">{invalid}</td><td class="num">{retries}</td></tr>"#,
                id = escape(&beat.instance_id),
                this = if this {
                    r#" <span class="pill ok">this process</span>"#
                } else {
                    ""
                },
                host = escape(&beat.host),
                pid = beat.pid,
                version = escape(&beat.version),
                started = when(now, beat.started_at),
                beat_at = when(now, instance.heartbeat_at),
                stale = if fresh {
                    ""
                } else {
                    r#"<span class="pill warn">silent</span>"#
                },
                in_flight = thousands(i64::from(beat.in_flight)),
                rate = thousands(i64::from(beat.rate_limit)),
                deleted = thousands(beat.counts.deleted),
                gone = thousands(beat.counts.gone),
                failed = thousands(beat.counts.failed),
                invalid = thousands(beat.counts.invalid),
                retries = thousands(beat.counts.retry_scheduled),
            );
        }
        out.push_str("</tbody></table>");
    }
    out.push_str("</section>");

    // Errors.
    let errors = &facts.errors;
    let _ = write!(
        out,
        r#"<section class="wide" id="errors"><h2>Most common errors, last 24 h</h2><div class="small muted">{} distinct (error, state) among the newest <span data-key="errors_scanned" data-value="{}">{}</span> rows with an error (at most {}), by last attempt.</div>"#,
        thousands(errors.distinct),
        errors.scanned,
        thousands(errors.scanned),
        thousands(i64::from(ERROR_SCAN)),
    );
    if errors.groups.is_empty() {
        out.push_str(r#"<p class="muted">No errors in the last 24 hours.</p>"#);
    } else {
        out.push_str(
            r#"<table><thead><tr><th class="num">rows</th><th>error</th><th>state now</th><th>latest</th><th>sample row</th></tr></thead><tbody>"#,
        );
        for group in &errors.groups {
            error_row(&mut out, now, group, &known);
        }
        out.push_str("</tbody></table>");
    }
    out.push_str("</section></main>\n");
    let _ = write!(
        out,
        r#"<footer>Read from the database at each view (nothing runs when nobody looks). The same data: <a href="/status.json">/status.json</a>; the metrics: <a href="/metrics">/metrics</a>.</footer>
</body></html>
"#
    );
    out
}

fn error_row(out: &mut String, now: DateTime<Utc>, group: &ErrorGroup, known: &[&str]) {
    let _ = write!(
        out,
        r#"<tr class="error-group"><td class="num" data-value="{n}">{shown}</td><td class="error-text">{error}</td><td class="small"><span class="dot s-{state}"></span>{state}</td><td class="small">{latest}</td><td class="small">row {id} <span class="muted">({prefix})</span></td></tr>"#,
        n = group.count,
        state = escape(&group.state),
        shown = thousands(group.count),
        error = escape(&redact(&group.error, known)),
        latest = when(now, group.latest_at),
        id = group.sample_id,
        prefix = escape(&session_id_prefix(&group.sample_session_id)),
    );
}

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
