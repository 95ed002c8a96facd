//! The measurements, one file per kind; each section starts its own stand-in (so its counters
//! and its per-second histogram belong to that section alone) and stops it before returning.
//! Below: how a measurement becomes lines of the report.

mod limits;
mod memory;
mod pace;
mod throughput;

use std::time::Duration;

pub use limits::{latency, rate};
pub use memory::{memory, start_stop};
pub use pace::pace;
pub use throughput::throughput;

use crate::ceiling::Ceiling;
use crate::report::{Report, thousands};
use crate::run::{Ctx, Measured};
use crate::standin::StandInProc;

/// Bytes in the memory goal's 40 MB, as MiB (what ru_maxrss gives, / 1024).
const MEMORY_GOAL_MIB: f64 = 40e6 / 1048576.0;

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn ms(d: Option<Duration>) -> String {
    d.map_or_else(|| "not seen".into(), |d| format!("{:.0} ms", d.as_secs_f64() * 1000.0))
}

/// Peak RSS with its parts, and the largest WAL on SQLite.
fn rss_value(m: &Measured) -> String {
    let wal = if m.run.watch_max_bytes > 0 {
        format!("; -wal file up to {:.0} MiB", m.run.watch_max_bytes as f64 / 1048576.0)
    } else {
        String::new()
    };
    format!("{:.1} MiB ({}{wal})", m.run.maxrss_mib(), m.run.rss_parts.describe())
}

/// Anonymous and total RSS at up to six moments of the run, to tell growth from a plateau.
fn timeline(m: &Measured) -> String {
    let samples = &m.run.rss_timeline;
    if samples.is_empty() {
        return "no samples".into();
    }
    let step = samples.len().div_ceil(6).max(1);
    let mut picked: Vec<_> = samples.iter().step_by(step).collect();
    if let Some(last) = samples.last()
        && picked.last().is_none_or(|p| p.0 != last.0)
    {
        picked.push(last);
    }
    let points: Vec<String> = picked
        .iter()
        .map(|(t, parts)| {
            format!(
                "{:.0} s: {:.1}/{:.1}",
                t.as_secs_f64(),
                parts.anon as f64 / 1024.0,
                parts.total_mib()
            )
        })
        .collect();
    format!("anon/total MiB at {}", points.join(", "))
}

async fn standin(ctx: &Ctx, name: &str, latency: Duration) -> anyhow::Result<StandInProc> {
    StandInProc::start(
        &ctx.daemon_bin,
        &ctx.workdir.join(format!("standin-{name}.log")),
        latency,
    )
    .await
}

fn ceiling_line(report: &mut Report, what: &str, c: &Ceiling) {
    let errors = if c.errors > 0 {
        format!(", **{} errors**", c.errors)
    } else {
        String::new()
    };
    report.info(
        what,
        format!(
            "{}/s ({} requests in {}{errors})",
            thousands(c.per_second()),
            thousands(c.requests as f64),
            secs(c.elapsed)
        ),
    );
}

fn daemon_lines(report: &mut Report, label: &str, m: &Measured, ceiling: f64, goal: Option<f64>) {
    let working = m.per_second_working().map_or(String::new(), |r| {
        format!("; {}/s from the first request", thousands(r))
    });
    report.info(
        format!("{label}: sessions/s, spawn to exit"),
        format!("{}/s (wall {}{working})", thousands(m.per_second()), secs(m.run.wall)),
    );
    let ratio = m.per_second() / ceiling;
    let (what, value) = (
        format!("{label}: ratio to the ceiling"),
        format!("{ratio:.2} (ceiling {}/s)", thousands(ceiling)),
    );
    match goal {
        Some(goal) => report.check(what, value, format!("≥ {goal}"), ratio >= goal),
        None => report.info(what, value),
    }
    verified_line(report, label, m);
    leased_line(report, label, m);
}

/// Every row deleted and none requested twice.
pub(super) fn verified_line(report: &mut Report, label: &str, m: &Measured) {
    let (value, ok) = m.verify(true);
    report.check(
        format!("{label}: all rows deleted, no repeats"),
        value,
        "all deleted, 0 repeats",
        ok,
    );
}

/// Rows claimed whose outcomes are not written yet: held by the pool, or not.
fn leased_line(report: &mut Report, label: &str, m: &Measured) {
    let (value, goal, ok) = m.lease_line();
    report.check(
        format!("{label}: most rows leased at once (sampled every 100 ms)"),
        value,
        goal,
        ok,
    );
}
