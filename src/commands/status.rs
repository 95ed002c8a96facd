//! `status`: counts per state, backlog age and last success, as text or one JSON object; with
//! `--watch`, again every few seconds until Ctrl-C.
//!
//! It only reads: the database is opened read-only and never created or migrated, so a wrong
//! `database.url` is an error instead of a new, empty database that reports "nothing due".

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::name_database;
use crate::config::{Config, redact_url};
use crate::editor::Editor;
use crate::store::budget::BudgetReport;
use crate::store::{InstanceRow, State, StatusReport, Store};

/// The tables `status` reads; without them the database was never migrated.
const TABLES: &[&str] = &["reaper_sessions", "reaper_instances", "reaper_budget"];
/// Clears a terminal and moves the cursor home, before each redraw of `--watch`.
const CLEAR_SCREEN: &str = "\x1b[2J\x1b[H";

pub async fn status(config: &Config, as_json: bool, watch: Option<u64>) -> anyhow::Result<()> {
    let named = |e| name_database(config, e);
    let store = Store::open_read_only(&config.database.url).await.map_err(named)?;
    let missing = store.missing_tables(TABLES).await.map_err(named)?;
    if !missing.is_empty() {
        store.close().await;
        return Err(named(anyhow::anyhow!(
            "not migrated: missing {} (status only reads; `session-reaper migrate` creates the tables)",
            missing.join(", ")
        )));
    }
    let result = match watch {
        None => match snapshot(&store, config, as_json).await {
            Ok(text) => {
                print!("{text}");
                Ok(())
            }
            Err(e) => Err(named(e)),
        },
        Some(every) => watch_loop(&store, config, as_json, Duration::from_secs(every)).await,
    };
    store.close().await;
    result
}

/// Shows a snapshot every `every` until Ctrl-C (or SIGTERM). On a terminal each one replaces
/// the last; into a pipe they follow each other (JSON: one object per line). A failed read
/// after the first is shown in place of the counts, and the watch goes on.
async fn watch_loop(store: &Store, config: &Config, as_json: bool, every: Duration) -> anyhow::Result<()> {
    let terminal = std::io::stdout().is_terminal();
    // Both streams live across readings: a signal that comes while a reading runs waits in its
    // stream (a fresh `ctrl_c()` per wait would miss it, and the watch would go on).
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("Failed to install the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("Failed to install the SIGINT handler")?;
    let mut first = true;
    loop {
        let shown = match snapshot(store, config, as_json).await {
            Ok(text) => text,
            Err(e) if first => return Err(name_database(config, e)),
            Err(e) if as_json => format!("{}\n", json!({ "error": super::describe(&name_database(config, e)) })),
            Err(e) => format!("error: {}\n", super::describe(&name_database(config, e))),
        };
        first = false;
        let mut out = std::io::stdout().lock();
        if terminal && !as_json {
            let now = Utc::now().format("%H:%M:%S");
            write!(
                out,
                "{CLEAR_SCREEN}every {}s, Ctrl-C stops; {now} UTC\n\n{shown}",
                every.as_secs()
            )?;
        } else if as_json {
            write!(out, "{shown}")?;
        } else {
            writeln!(out, "{shown}")?;
        }
        out.flush()?;
        drop(out);
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = interrupt.recv() => return Ok(()),
            _ = terminate.recv() => return Ok(()),
        }
    }
}

/// One reading, as the text or the JSON line to print.
async fn snapshot(store: &Store, config: &Config, as_json: bool) -> anyhow::Result<String> {
    let now = Utc::now();
    let report = store.status(now, config.worker.stale_after).await?;
    let instances = store.instances().await?;
    let budget = store.budget().await?;
    let database = redact_url(&config.database.url);
    if as_json {
        let mut json = to_json(&report);
        json["database"] = json!(database);
        json["instances"] = instances.iter().map(instance_json).collect();
        json["budget"] = budget_json(&budget);
        return Ok(format!("{json}\n"));
    }
    let mut out = format!("database: {database}\n");
    out.push_str(&to_text(&report));
    out.push_str(&budget_text(&budget, now));
    for instance in &instances {
        let beat = &instance.beat;
        out.push_str(&format!(
            "instance {} on {} (pid {}, v{}): in flight {}, rate {}/s, deleted {}, last heartbeat {}\n",
            beat.instance_id,
            beat.host,
            beat.pid,
            beat.version,
            beat.in_flight,
            beat.rate_limit,
            beat.counts.deleted,
            ago(instance.heartbeat_at, now)
        ));
    }
    Ok(out)
}

/// Seconds the oldest due row has waited (zero when nothing is due yet).
fn oldest_due_age(report: &StatusReport) -> Option<f64> {
    let due = report.earliest_due?;
    let age = (Utc::now() - due).num_milliseconds() as f64 / 1000.0;
    (age >= 0.0).then_some(age)
}

/// A wait in whole seconds, in human units: `30m 1s`, `2h 5m 3s`, `0s`.
fn human(seconds: f64) -> String {
    humantime::format_duration(Duration::from_secs(seconds.max(0.0) as u64)).to_string()
}

/// A moment with how long ago it was: `2026-11-30T10:13:02+00:00 (5m 3s ago)`.
fn ago(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let seconds = (now - at).num_milliseconds() as f64 / 1000.0;
    format!("{} ({} ago)", at.to_rfc3339(), human(seconds))
}

pub fn to_json(report: &StatusReport) -> Value {
    let mut object = Map::new();
    for state in State::ALL {
        object.insert(state.as_str().to_owned(), json!(report.count(state)));
    }
    // Every editor, with every state, so a reader never meets a missing key.
    let editors: Map<String, Value> = Editor::ALL
        .into_iter()
        .map(|editor| {
            let counts: Map<String, Value> = State::ALL
                .into_iter()
                .map(|state| (state.as_str().to_owned(), json!(report.editor_count(editor, state))))
                .collect();
            (editor.label().to_owned(), Value::Object(counts))
        })
        .collect();
    object.insert("editors".into(), Value::Object(editors));
    object.insert("in_flight".into(), json!(report.in_flight));
    object.insert("oldest_due_age_seconds".into(), json!(oldest_due_age(report)));
    object.insert(
        "last_success".into(),
        json!(report.last_success.map(|t| t.to_rfc3339())),
    );
    object.insert("last_error".into(), json!(report.last_error.as_ref().map(|(_, e)| e)));
    object.insert(
        "last_error_at".into(),
        json!(report.last_error.as_ref().map(|(t, _)| t.to_rfc3339())),
    );
    Value::Object(object)
}

pub fn to_text(report: &StatusReport) -> String {
    let now = Utc::now();
    let mut out = String::new();
    for state in State::ALL {
        out.push_str(&format!("{:<10} {}\n", state.as_str(), report.count(state)));
    }
    // One line per editor that has rows: its non-zero states.
    for (editor, counts) in &report.editors {
        let shown: Vec<String> = State::ALL
            .into_iter()
            .filter_map(|state| counts.get(&state).filter(|n| **n > 0).map(|n| format!("{state} {n}")))
            .collect();
        out.push_str(&format!("editor {}: {}\n", editor.label(), shown.join(", ")));
    }
    out.push_str(&format!("{:<10} {}\n", "in flight", report.in_flight));
    let age = oldest_due_age(report).map_or("nothing due".to_owned(), human);
    out.push_str(&format!("oldest due: {age}\n"));
    let last = report.last_success.map_or("never".to_owned(), |t| ago(t, now));
    out.push_str(&format!("last success: {last}\n"));
    if let Some((at, error)) = &report.last_error {
        out.push_str(&format!("last error: {}: {error}\n", ago(*at, now)));
    }
    out
}

/// The cluster's budget and pause, as `status --json` and `/status.json` show them.
pub fn budget_json(budget: &BudgetReport) -> Value {
    json!({
        "rate_per_second": budget.rate_per_second,
        "burst": budget.burst,
        "used_last_minute": budget.used_last_minute,
        "used_this_minute": budget.used_this_minute,
        "pause": budget.pause.as_ref().map(|pause| json!({
            "reason": pause.reason,
            "since": pause.since.to_rfc3339(),
            "until": pause.until.to_rfc3339(),
            "ends_with_probe": pause.probe,
            "probe_out": pause.probing,
            "paused_by": pause.paused_by,
            "http_status": pause.http_status,
            "api_code": pause.api_code,
        })),
    })
}

/// The budget and pause lines of the text `status`.
pub fn budget_text(budget: &BudgetReport, now: DateTime<Utc>) -> String {
    let mut out = if budget.rate_per_second > 0 {
        format!(
            "budget: {}/s, burst {} (the cluster's); used {} in the last whole minute, {} so far in this one\n",
            budget.rate_per_second, budget.burst, budget.used_last_minute, budget.used_this_minute
        )
    } else {
        "budget: no request sent yet\n".to_owned()
    };
    match &budget.pause {
        None => out.push_str("pause: none\n"),
        Some(pause) => {
            let left = human((pause.until - now).num_milliseconds() as f64 / 1000.0);
            let ends = match (pause.probe, pause.probing) {
                (false, _) => format!("ends at {} (in {left})", pause.until.to_rfc3339()),
                (true, true) => "a probe request is out; its answer ends it or extends it".to_owned(),
                (true, false) => format!("one probe request goes at {} (in {left})", pause.until.to_rfc3339()),
            };
            out.push_str(&format!(
                "pause: {} since {}; {ends}; paused by {} (HTTP {}, code {})\n",
                pause.reason,
                ago(pause.since, now),
                pause.paused_by.as_deref().unwrap_or("?"),
                pause.http_status.map_or("-".to_owned(), |s| s.to_string()),
                pause.api_code.map_or("-".to_owned(), |c| c.to_string()),
            ));
        }
    }
    out
}

/// One instance as `status --json` (and the page's `/status.json`) prints it.
pub fn instance_json(instance: &InstanceRow) -> Value {
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
