//! `status`: counts per state, backlog age and last success, as text or one JSON object.

use chrono::Utc;
use serde_json::{Map, Value, json};

use crate::config::Config;
use crate::store::{InstanceRow, State, StatusReport};

pub async fn status(config: &Config, as_json: bool) -> anyhow::Result<()> {
    let store = super::open_store(config).await?;
    let report = store.status(Utc::now(), config.worker.stale_after).await?;
    let instances = store.instances().await?;
    if as_json {
        let mut json = to_json(&report);
        json["instances"] = instances.iter().map(instance_json).collect();
        println!("{json}");
    } else {
        print!("{}", to_text(&report));
        for instance in &instances {
            let beat = &instance.beat;
            println!(
                "instance {} on {} (pid {}, v{}): in flight {}, rate {}/s, deleted {}, last heartbeat {}",
                beat.instance_id,
                beat.host,
                beat.pid,
                beat.version,
                beat.in_flight,
                beat.rate_limit,
                beat.counts.deleted,
                instance.heartbeat_at.to_rfc3339()
            );
        }
    }
    Ok(())
}

/// Seconds the oldest due row has waited (zero when nothing is due yet).
fn oldest_due_age(report: &StatusReport) -> Option<f64> {
    let due = report.earliest_due?;
    let age = (Utc::now() - due).num_milliseconds() as f64 / 1000.0;
    (age >= 0.0).then_some(age)
}

pub fn to_json(report: &StatusReport) -> Value {
    let mut object = Map::new();
    for state in State::ALL {
        object.insert(state.as_str().to_owned(), json!(report.count(state)));
    }
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
    let mut out = String::new();
    for state in State::ALL {
        out.push_str(&format!("{:<10} {}\n", state.as_str(), report.count(state)));
    }
    out.push_str(&format!("{:<10} {}\n", "in flight", report.in_flight));
    let age = oldest_due_age(report).map_or("nothing due".to_owned(), |s| format!("{s:.1}s"));
    out.push_str(&format!("oldest due: {age}\n"));
    let last = report.last_success.map_or("never".to_owned(), |t| t.to_rfc3339());
    out.push_str(&format!("last success: {last}\n"));
    if let Some((at, error)) = &report.last_error {
        out.push_str(&format!("last error: {} ({error})\n", at.to_rfc3339()));
    }
    out
}

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
