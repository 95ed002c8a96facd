//! The status page's HTML: the page and its parts, the ages and times it shows, and the cutting
//! of session ids in error texts to a prefix. Everything written here is escaped.

use std::fmt::Write;

use chrono::{DateTime, Utc};

use super::page::*;
use crate::store::{ErrorGroup, RecentErrors, State as RowState};

/// What the page shows of a session id: at most 8 characters, and never more than half of it,
/// then an ellipsis.
pub fn session_id_prefix(session_id: &str) -> String {
    let shown = SHOWN_ID_CHARS.min(session_id.chars().count() / 2);
    format!("{}…", session_id.chars().take(shown).collect::<String>())
}

/// The sample session ids of the error groups, whole, as `redact` needs them.
pub(super) fn known_ids(errors: &RecentErrors) -> Vec<&str> {
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
pub(super) fn age(now: DateTime<Utc>, then: DateTime<Utc>) -> String {
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
pub(super) fn span(seconds: f64) -> String {
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
pub(super) fn when(now: DateTime<Utc>, at: DateTime<Utc>) -> String {
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

pub(super) const STYLE: &str = include_str!("style.css");

pub(super) fn head(out: &mut String, title: &str) {
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

pub(super) fn render_error(page: &Page, error: &anyhow::Error) -> String {
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

pub(super) fn render(page: &Page, facts: &Facts) -> String {
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
    let budget = &facts.budget;
    let _ = write!(
        out,
        r#"<dt>budget</dt><dd><span data-key="rate_per_second">{}</span>/s, burst <span data-key="burst">{}</span> <span class="muted small">(one budget for the whole cluster; {} live)</span></dd>"#,
        thousands(i64::from(page.rate_per_second)),
        thousands(i64::from(page.burst)),
        facts.live_instances.map_or("–".to_owned(), |n| format!("{n:.0}")),
    );
    let _ = write!(
        out,
        r#"<dt>used</dt><dd><span data-key="used_last_minute" data-value="{last}">{}</span> in the last whole minute <span class="muted small">({} so far in this one)</span></dd>"#,
        thousands(budget.used_last_minute),
        thousands(budget.used_this_minute),
        last = budget.used_last_minute,
    );
    let pause = match &budget.pause {
        None => r#"<span class="pill ok" data-key="pause_reason" data-value="">none</span>"#.to_owned(),
        Some(pause) => {
            let ends = match (pause.probe, pause.probing) {
                (false, _) => "ends".to_owned(),
                (true, true) => "a probe request is out; next probe no sooner than".to_owned(),
                (true, false) => "one probe request".to_owned(),
            };
            format!(
                r#"<span class="pill bad" data-key="pause_reason" data-value="{reason}">{reason}</span> since {since}; {ends} at <span data-key="pause_until">{until}</span> <span class="muted small">(paused by {by}; every replica waits)</span>"#,
                reason = escape(&pause.reason),
                since = when(facts.now, pause.since),
                until = when(facts.now, pause.until),
                by = escape(pause.paused_by.as_deref().unwrap_or("?")),
            )
        }
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
        r#"<div class="muted small">A 429 pauses every replica for its Retry-After, a spent quota for {}, a rejected key for {}; then one probe request, for the whole cluster, ends it.</div></dd>"#,
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

pub(super) fn error_row(out: &mut String, now: DateTime<Utc>, group: &ErrorGroup, known: &[&str]) {
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
