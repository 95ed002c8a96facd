//! Peak memory with a small and a large backlog; start-up and a graceful stop under load.

use std::time::Duration;

use session_reaper::store::State;

use super::{MEMORY_GOAL_MIB, leased_line, ms, rss_value, secs, standin, timeline};
use crate::daemon::StopRule;
use crate::db::Db;
use crate::report::{Report, thousands};
use crate::run::Ctx;

/// Peak RSS with a small backlog (run to the end) and a large one (SIGTERM after a while).
pub async fn memory(ctx: &Ctx, report: &mut Report) -> anyhow::Result<()> {
    let (small, large) = (ctx.sizes.memory_small, ctx.sizes.memory_large);
    let seconds = ctx.sizes.memory_seconds;
    let standin = standin(ctx, "memory", Duration::ZERO).await?;
    crate::progress!("memory: daemon on SQLite, backlog {small}, to the end");
    let db = Db::sqlite(&ctx.workdir, "memory-small.db");
    let spec = ctx.spec(&db, "daemon-memory-small.log");
    let small_run = ctx.measure(&standin, &db, small, spec).await;
    db.remove().await;
    crate::progress!("memory: daemon on SQLite, backlog {large}, SIGTERM after {seconds} s");
    let db = Db::sqlite(&ctx.workdir, "memory-large.db");
    let spec = crate::daemon::DaemonSpec {
        stop: StopRule::After(Duration::from_secs(seconds)),
        timeout: Duration::from_secs(seconds + 120),
        ..ctx.spec(&db, "daemon-memory-large.log")
    };
    let large_run = ctx.measure(&standin, &db, large, spec).await;
    db.remove().await;
    standin.stop().await;

    let goal = format!("≤ 40 MB ({MEMORY_GOAL_MIB:.1} MiB)");
    let small_run = small_run?;
    let small_mib = small_run.run.maxrss_mib();
    let small_label = format!("Peak RSS, backlog {} (SQLite, run to the end)", thousands(small as f64));
    report.check(&small_label, rss_value(&small_run), &goal, small_mib <= MEMORY_GOAL_MIB);
    let (value, ok) = small_run.verify(true);
    report.check(format!("{small_label}: rows"), value, "all deleted, 0 repeats", ok);
    let large_run = large_run?;
    let large_mib = large_run.run.maxrss_mib();
    let large_label = format!(
        "Peak RSS, backlog {} (SQLite, SIGTERM after {seconds} s)",
        thousands(large as f64)
    );
    report.check(
        &large_label,
        format!(
            "{}; {} deleted in {}, {}/s",
            rss_value(&large_run),
            thousands(large_run.status.count(State::Deleted) as f64),
            secs(large_run.run.wall),
            thousands(large_run.per_second())
        ),
        &goal,
        large_mib <= MEMORY_GOAL_MIB,
    );
    report.info(format!("{large_label}: RSS over time"), timeline(&large_run));
    leased_line(report, &small_label, &small_run);
    leased_line(report, &large_label, &large_run);
    report.check(
        "Peak RSS, large / small backlog",
        format!("{:.2}", large_mib / small_mib),
        "≤ 1.3",
        large_mib <= small_mib * 1.3,
    );
    let (value, ok) = large_run.verify(false);
    report.check(
        format!("{large_label}: every request recorded, rest pending"),
        value,
        "deleted = requests, 0 leased, exit 75 (stopped with rows left)",
        ok,
    );
    report.info(
        format!("Seeding {} rows via Store::enqueue, SQLite", thousands(large as f64)),
        format!(
            "{} ({}/s)",
            secs(large_run.seed_time),
            thousands(large as f64 / large_run.seed_time.as_secs_f64())
        ),
    );
    Ok(())
}

/// Start (spawn to first request, daemon mode) and stop (SIGTERM with every slot in flight).
pub async fn start_stop(ctx: &Ctx, report: &mut Report) -> anyhow::Result<()> {
    let n = ctx.sizes.stop_rows;
    let conc = ctx.sizes.concurrency;
    let latency = Duration::from_secs(2);
    let standin = standin(ctx, "stop", latency).await?;
    crate::progress!(
        "start/stop: daemon (run, not --once) on SQLite, {n} rows, 2 s latency; SIGTERM at {conc} in flight"
    );
    let db = Db::sqlite(&ctx.workdir, "stop.db");
    let spec = crate::daemon::DaemonSpec {
        once: false,
        stop: StopRule::WhenRequests(u64::from(conc)),
        timeout: Duration::from_secs(60),
        ..ctx.spec(&db, "daemon-stop.log")
    };
    let measured = ctx.measure(&standin, &db, n, spec).await;
    db.remove().await;
    standin.stop().await;
    let m = measured?;
    report.info(
        format!(
            "Start: spawn → first request, run (daemon mode), SQLite, {} rows",
            thousands(n as f64)
        ),
        ms(m.run.first_request),
    );
    let (Some(term_at), Some(term_to_exit)) = (m.run.term_at, m.run.term_to_exit) else {
        report.missing(
            "Stop: SIGTERM → exit",
            "no SIGTERM was sent (the stand-in never saw the requests)",
            "",
        );
        return Ok(());
    };
    // The requests arrived just before SIGTERM; each still had about this long to go.
    let left = latency.saturating_sub(term_at.saturating_sub(m.run.first_request.unwrap_or_default()));
    let goal = latency + Duration::from_secs(1);
    report.check(
        format!("Stop: SIGTERM → exit, {} in flight, 2 s answers", m.requests()),
        format!("{} (requests had ≈ {} left)", secs(term_to_exit), secs(left)),
        format!("≤ {} (in-flight finish, well inside shutdown.grace 20 s)", secs(goal)),
        term_to_exit <= goal,
    );
    let (value, ok) = m.verify(false);
    let all_in_flight = m.requests() == u64::from(conc) && m.status.count(State::Deleted) == i64::from(conc);
    report.check(
        "Stop: in-flight outcomes written, the rest untouched",
        value,
        format!("{conc} deleted, rest pending, 0 leased, exit 75 (stopped with rows left)"),
        ok && all_in_flight,
    );
    Ok(())
}
