//! Cost at the operating point: CPU and wake-ups per deletion while the rate limit sets the
//! pace (20/s and 200/s), against the same at full speed, all at the default log level `info`,
//! on SQLite. Production runs at the API's pace in a sidecar of every pod, so that is where the
//! daemon's cost is paid. With `--compare PATH` a second daemon binary (an older build) runs
//! each case right after this one, so before and after share the machine's mood.

use std::path::Path;
use std::time::Duration;

use super::standin;
use crate::db::Db;
use crate::report::{Report, thousands};
use crate::run::{Ctx, Measured};

/// Burst of the paced runs (as the rate section's).
const BURST: u32 = 20;
/// How much dearer a deletion may be at each pace than at full speed.
const GOALS: [(u32, f64); 2] = [(200, 2.0), (20, 3.0)];

/// One binary's three runs: full speed, then each pace of `GOALS`.
struct Costs {
    full: Measured,
    paced: Vec<(u32, Measured)>,
}

/// CPU (user + sys) per deletion, ms.
fn cpu_ms(m: &Measured) -> f64 {
    m.cpu_per_10k() / 10.0
}

fn describe(m: &Measured) -> String {
    let (voluntary, involuntary) = m.switches_per_deletion();
    format!(
        "{:.3} ms CPU, {voluntary:.1} + {involuntary:.1} context switches (voluntary + involuntary) per deletion; \
         {} deleted in {:.1} s, CPU {:.2} s, {} log lines",
        cpu_ms(m),
        thousands(m.status.count(session_reaper::store::State::Deleted) as f64),
        m.run.wall.as_secs_f64(),
        m.run.cpu().as_secs_f64(),
        thousands(m.run.all_log_lines as f64),
    )
}

async fn measure(ctx: &Ctx, bin: &Path, tag: &str, rate: Option<u32>) -> anyhow::Result<Measured> {
    let quick = ctx.sizes.rate_rows < 4_000;
    let seconds = if quick { 5 } else { 20 };
    let (rows, rate_per_second, burst) = match rate {
        Some(rate) => (rate as usize * seconds, rate, BURST),
        None => (if quick { 5_000 } else { 20_000 }, 1_000_000, 1_000),
    };
    let standin = standin(ctx, &format!("pace-{tag}"), Duration::ZERO).await?;
    let what = rate.map_or("full speed".to_owned(), |r| format!("{r}/s"));
    crate::progress!("pace: {tag} daemon on SQLite, {rows} rows at {what}, log level info");
    let db = Db::sqlite(&ctx.workdir, &format!("pace-{tag}.db"));
    let spec = crate::daemon::DaemonSpec {
        bin,
        rate_per_second,
        burst,
        log_level: "info",
        timeout: Duration::from_secs(60 + 2 * seconds as u64),
        ..ctx.spec(&db, &format!("daemon-pace-{tag}.log"))
    };
    let measured = ctx.measure(&standin, &db, rows, spec).await;
    db.remove().await;
    standin.stop().await;
    measured
}

async fn costs(ctx: &Ctx, bin: &Path, tag: &str) -> anyhow::Result<Costs> {
    let full = measure(ctx, bin, &format!("{tag}-full"), None).await?;
    let mut paced = Vec::new();
    for (rate, _) in GOALS {
        paced.push((rate, measure(ctx, bin, &format!("{tag}-{rate}"), Some(rate)).await?));
    }
    Ok(Costs { full, paced })
}

pub async fn pace(ctx: &Ctx, report: &mut Report) -> anyhow::Result<()> {
    // Interleaved by binary, not by case: each binary's full-speed figure is its own yardstick.
    let ours = costs(ctx, &ctx.daemon_bin, "this").await?;
    let compared = match &ctx.compare {
        Some(bin) => Some((bin, costs(ctx, bin, "compared").await?)),
        None => None,
    };
    let lines = |report: &mut Report, who: &str, c: &Costs, judged: bool| {
        report.info(format!("Pace: {who}, full speed, SQLite, log info"), describe(&c.full));
        for ((rate, m), (_, goal)) in c.paced.iter().zip(GOALS) {
            let ratio = cpu_ms(m) / cpu_ms(&c.full);
            let what = format!("Pace: {who}, {rate}/s (burst {BURST}), SQLite, log info");
            let value = format!("{} ({ratio:.1}× full speed)", describe(m));
            if judged {
                report.check(
                    what,
                    value,
                    format!("≤ {goal}× full speed's CPU per deletion"),
                    ratio <= goal,
                );
            } else {
                report.info(what, value);
            }
            let (ok_value, ok) = m.verify(true);
            if !ok {
                report.check(
                    format!("Pace: {who}, {rate}/s: all rows deleted"),
                    ok_value,
                    "all deleted",
                    ok,
                );
            }
        }
    };
    lines(report, "this daemon", &ours, true);
    if let Some((bin, c)) = &compared {
        lines(report, &format!("compared ({})", bin.display()), c, false);
    }
    Ok(())
}
