//! Throughput: the ceiling, the daemon on SQLite and PostgreSQL, a batch-size sweep, and the
//! CPU, memory and start-up figures of those same runs.

use std::time::Duration;

use session_reaper::store::State;

use super::{ceiling_line, daemon_lines, ms, rss_value, secs, standin};
use crate::ceiling;
use crate::db::Db;
use crate::report::{Report, thousands};
use crate::run::{Ctx, Measured};

/// One daemon run of the throughput section.
struct Run {
    name: &'static str,
    batch: u32,
    /// `log.level` of the run: `warn`, or `info` (the default: one line per deletion).
    level: &'static str,
    /// The ratio to the ceiling this run must reach, if any.
    goal: Option<f64>,
    measured: anyhow::Result<Measured>,
}

impl Run {
    fn new(name: &'static str, batch: u32, goal: Option<f64>, measured: anyhow::Result<Measured>) -> Self {
        Self {
            name,
            batch,
            level: "warn",
            goal,
            measured,
        }
    }
}

/// Daemon on SQLite and PostgreSQL and a batch-size sweep, with the ceiling measured before the
/// first run and after each one, so each run's ratio uses the two ceilings right next to it;
/// CPU per deletion and start-up time come from the same runs.
pub async fn throughput(ctx: &Ctx, report: &mut Report) -> anyhow::Result<()> {
    let n = ctx.sizes.rows;
    let conc = ctx.sizes.concurrency;
    let bound = Duration::from_secs(300);
    let standin = standin(ctx, "throughput", Duration::ZERO).await?;
    // This machine's speed drifts by 10–40 % within a minute (shared cores), so a ceiling taken
    // before all runs and one after them does not cancel the noise of the runs in between.
    let ceiling_now = || async {
        crate::progress!("throughput: ceiling (raw client, {conc} in flight, {n} requests)");
        let c = ceiling::run(&standin, conc, n, bound).await?;
        crate::progress!("  ceiling: {:.0}/s", c.per_second());
        anyhow::Ok(c)
    };
    let mut ceilings = vec![ceiling_now().await?];

    let batch = ctx.sizes.batch_size;
    let timeout = Duration::from_secs(60 + n as u64 / 500);
    let mut runs: Vec<Run> = Vec::new();
    crate::progress!("throughput: daemon on SQLite, {n} rows, batch {batch}");
    let db = Db::sqlite(&ctx.workdir, "throughput.db");
    let spec = crate::daemon::DaemonSpec {
        timeout,
        ..ctx.spec(&db, "daemon-sqlite.log")
    };
    runs.push(Run::new(
        "SQLite",
        batch,
        Some(0.7),
        ctx.measure(&standin, &db, n, spec).await,
    ));
    db.remove().await;
    ceilings.push(ceiling_now().await?);
    // What production runs: the default level, one `deletion finished` line per deletion.
    crate::progress!("throughput: daemon on SQLite, {n} rows, batch {batch}, log level info");
    let db = Db::sqlite(&ctx.workdir, "throughput-info.db");
    let spec = crate::daemon::DaemonSpec {
        timeout,
        log_level: "info",
        ..ctx.spec(&db, "daemon-sqlite-info.log")
    };
    runs.push(Run {
        level: "info",
        ..Run::new("SQLite", batch, Some(0.4), ctx.measure(&standin, &db, n, spec).await)
    });
    db.remove().await;
    ceilings.push(ceiling_now().await?);

    match &ctx.postgres {
        Ok(admin) => {
            // The main variant at both levels (warn, then the default info), the others at warn.
            let levels = (0..crate::db::PG_VARIANTS.len()).flat_map(|i| {
                let levels: &[&'static str] = if i == 0 { &["warn", "info"] } else { &["warn"] };
                levels.iter().map(move |level| (i, *level))
            });
            for (i, level) in levels {
                let variant = &crate::db::PG_VARIANTS[i];
                let name = variant.name;
                crate::progress!("throughput: daemon on {name}, {n} rows, batch {batch}, log level {level}");
                let measured = async {
                    let db = Db::postgres(admin, "throughput", variant).await?;
                    let spec = crate::daemon::DaemonSpec {
                        timeout,
                        log_level: level,
                        ..ctx.spec(&db, &format!("daemon-postgres-{i}-{level}.log"))
                    };
                    let m = ctx.measure_with(&standin, &db, n, spec, variant.analyze).await;
                    db.remove().await;
                    m
                }
                .await;
                let goal = match (i, level) {
                    (0, "info") => Some(0.3),
                    (0, _) => Some(0.5),
                    _ => None,
                };
                runs.push(Run {
                    level,
                    ..Run::new(name, batch, goal, measured)
                });
                ceilings.push(ceiling_now().await?);
            }
        }
        Err(why) => report.missing("Daemon, PostgreSQL", why.clone(), "ratio ≥ 0.5"),
    }

    for &other in &ctx.sizes.sweep {
        crate::progress!("throughput: daemon on SQLite, {n} rows, batch {other}");
        let db = Db::sqlite(&ctx.workdir, &format!("sweep-{other}.db"));
        let spec = crate::daemon::DaemonSpec {
            timeout,
            batch_size: other,
            ..ctx.spec(&db, &format!("daemon-sqlite-batch-{other}.log"))
        };
        let measured = ctx.measure(&standin, &db, n, spec).await;
        runs.push(Run::new("SQLite", other, None, measured));
        db.remove().await;
        ceilings.push(ceiling_now().await?);
    }
    standin.stop().await;

    let rows = thousands(n as f64);
    let (first, last) = (&ceilings[0], &ceilings[ceilings.len() - 1]);
    ceiling_line(
        report,
        &format!("Ceiling: raw reqwest, {conc} in flight, no DB (first)"),
        first,
    );
    ceiling_line(
        report,
        &format!("Ceiling: raw reqwest, {conc} in flight, no DB (last)"),
        last,
    );
    let rates: Vec<f64> = ceilings.iter().map(|c| c.per_second()).collect();
    let (low, high) = rates
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &r| (lo.min(r), hi.max(r)));
    report.info(
        "Ceilings used for ratios (one before the first daemon run and one after each)",
        format!(
            "{} runs: {}/s to {}/s ({:.0} % apart); each ratio uses the mean of the two next to its run",
            rates.len(),
            thousands(low),
            thousands(high),
            (high - low) / low * 100.0
        ),
    );
    for (i, run) in runs.iter().enumerate() {
        let label = format!(
            "Daemon, {}, {rows} rows, batch {}, log {}",
            run.name, run.batch, run.level
        );
        let ceiling = (rates[i] + rates[i + 1]) / 2.0;
        match &run.measured {
            Ok(m) => daemon_lines(report, &label, m, ceiling, run.goal),
            Err(e) => report.add(
                label,
                format!("run failed: {e:#}"),
                run.goal.map_or("—".into(), |g| format!("ratio ≥ {g}")),
                crate::report::Verdict::Fail,
            ),
        }
    }
    for run in &runs {
        let Ok(m) = &run.measured else { continue };
        let name = format!("{}, batch {}, log {}", run.name, run.batch, run.level);
        if run.batch != batch {
            report.info(
                format!("Peak RSS and CPU, daemon, {name}, {rows} rows"),
                format!("{} (CPU {:.3} s per 10,000)", rss_value(m), m.cpu_per_10k()),
            );
            continue;
        }
        report.info(
            format!("Seeding {rows} rows via Store::enqueue, {}", run.name),
            format!(
                "{} ({}/s)",
                secs(m.seed_time),
                thousands(n as f64 / m.seed_time.as_secs_f64())
            ),
        );
        report.info(
            format!("CPU user+sys per 10,000 deletions, daemon, {name}"),
            format!(
                "{:.3} s (user {}, sys {} for {rows})",
                m.cpu_per_10k(),
                secs(m.run.user),
                secs(m.run.sys)
            ),
        );
        if m.postgres_cpu > Duration::ZERO {
            report.info(
                format!("CPU user+sys per 10,000 deletions, PostgreSQL server, {name}"),
                format!(
                    "{:.3} s ({} for {rows})",
                    m.postgres_cpu.as_secs_f64() * 10_000.0 / m.status.count(State::Deleted).max(1) as f64,
                    secs(m.postgres_cpu)
                ),
            );
        }
        report.info(format!("Peak RSS, daemon, {name}, {rows} rows"), rss_value(m));
        report.info(
            format!("Start: spawn → first request, run --once, {name}, {rows} rows"),
            ms(m.run.first_request),
        );
    }
    // The price of the default level: the same runs' CPU per deletion at info less at warn.
    for name in ["SQLite", crate::db::PG_VARIANTS[0].name] {
        let at = |level: &str| {
            runs.iter()
                .find(|r| r.name == name && r.batch == batch && r.level == level)
                .and_then(|r| r.measured.as_ref().ok())
                .map(|m| m.cpu_per_10k() * 100.0)
        };
        if let (Some(info), Some(warn)) = (at("info"), at("warn")) {
            report.info(
                format!(
                    "Price of log level info (one line per deletion), daemon, {name}: CPU per deletion, info − warn"
                ),
                format!("{:.1} µs ({info:.1} µs at info, {warn:.1} µs at warn)", info - warn),
            );
        }
    }
    let raw_cpu = ceilings.iter().map(|c| c.cpu.as_secs_f64()).sum::<f64>() * 10_000.0
        / ceilings.iter().map(|c| c.requests as f64).sum::<f64>();
    report.info(
        "CPU user+sys per 10,000 requests, raw client (bench process, reference)",
        format!("{raw_cpu:.3} s"),
    );
    Ok(())
}
