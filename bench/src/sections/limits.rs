//! The two limits the daemon must live within: answers that take 100 ms, and a rate limit.

use std::time::Duration;

use super::{ceiling_line, secs, standin, verified_line};
use crate::ceiling;
use crate::db::Db;
use crate::report::{Report, thousands};
use crate::run::Ctx;

/// Latency-bound: 100 ms per answer, so 64 in flight allow at most 640/s.
pub async fn latency(ctx: &Ctx, report: &mut Report) -> anyhow::Result<()> {
    let n = ctx.sizes.latency_rows;
    let conc = ctx.sizes.concurrency;
    let latency = Duration::from_millis(100);
    let ideal = f64::from(conc) / latency.as_secs_f64();
    let goal = 0.95 * ideal;
    let standin = standin(ctx, "latency", latency).await?;
    crate::progress!("latency: ceiling at 100 ms, {n} requests");
    let ceiling = ceiling::run(&standin, conc, n, Duration::from_secs(120)).await?;
    crate::progress!("latency: daemon on SQLite at 100 ms, {n} rows");
    let db = Db::sqlite(&ctx.workdir, "latency.db");
    let spec = ctx.spec(&db, "daemon-latency.log");
    let measured = ctx.measure(&standin, &db, n, spec).await;
    db.remove().await;
    standin.stop().await;
    ceiling_line(
        report,
        &format!("Ceiling at 100 ms latency, {conc} in flight"),
        &ceiling,
    );
    let m = measured?;
    let label = format!("Daemon, SQLite, {} rows, 100 ms latency", thousands(n as f64));
    let working = m.per_second_working().map_or(String::new(), |r| {
        format!("; {}/s from the first request", thousands(r))
    });
    report.check(
        format!("{label}: sessions/s, spawn to exit"),
        format!("{:.0}/s (wall {}{working})", m.per_second(), secs(m.run.wall)),
        format!("≥ {goal:.0}/s (0.95 × {ideal:.0})"),
        m.per_second() >= goal,
    );
    verified_line(report, &label, &m);
    Ok(())
}

/// Rate precision: 200/s with a burst of 20, read from the stand-in's per-second counts.
pub async fn rate(ctx: &Ctx, report: &mut Report) -> anyhow::Result<()> {
    let n = ctx.sizes.rate_rows;
    let (rate, burst) = (200u32, 20u32);
    let standin = standin(ctx, "rate", Duration::ZERO).await?;
    crate::progress!("rate: daemon on SQLite, {n} rows at {rate}/s, burst {burst}");
    let db = Db::sqlite(&ctx.workdir, "rate.db");
    let spec = crate::daemon::DaemonSpec {
        rate_per_second: rate,
        burst,
        timeout: Duration::from_secs(60 + n as u64 / u64::from(rate)),
        ..ctx.spec(&db, "daemon-rate.log")
    };
    let measured = ctx.measure(&standin, &db, n, spec).await;
    db.remove().await;
    standin.stop().await;
    let m = measured?;
    let seconds = &m.after.per_second;
    let label = format!(
        "Rate limit {rate}/s, burst {burst}, SQLite, {} rows",
        thousands(n as f64)
    );
    if seconds.len() < 3 {
        report.missing(&label, format!("only {} seconds with requests", seconds.len()), "");
        return Ok(());
    }
    let inner = &seconds[1..seconds.len() - 1];
    let mean = inner.iter().sum::<u64>() as f64 / inner.len() as f64;
    let max = inner.iter().copied().max().unwrap_or(0);
    let limit = f64::from(rate);
    report.check(
        format!(
            "{label}: mean rate over {} whole seconds (first and last partial seconds ignored)",
            inner.len()
        ),
        format!(
            "{mean:.1}/s (first {}, last {})",
            seconds[0],
            seconds[seconds.len() - 1]
        ),
        format!("{:.0}–{:.0}/s (± 2 %)", limit * 0.98, limit * 1.02),
        (mean - limit).abs() <= limit * 0.02,
    );
    report.check(
        format!("{label}: busiest one-second window (stand-in's fixed 1-s bins, same seconds)"),
        format!("{max}/s"),
        format!("≤ {}/s (rate + burst)", rate + burst),
        max <= u64::from(rate + burst),
    );
    if let Some(working) = m.per_second_working() {
        report.info(
            format!("{label}: requests / (exit − first request), cross-check"),
            format!(
                "{working:.1}/s over {}",
                secs(m.run.wall - m.run.first_request.unwrap_or_default())
            ),
        );
    }
    report.info(
        format!("{label}: CPU user+sys per 10,000 deletions, daemon"),
        format!(
            "{:.3} s ({} over {} wall)",
            m.cpu_per_10k(),
            secs(m.run.cpu()),
            secs(m.run.wall)
        ),
    );
    verified_line(report, &label, &m);
    Ok(())
}
