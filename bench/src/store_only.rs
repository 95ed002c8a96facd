//! The database work alone: the daemon's own `Store::claim` and `Store::write_outcomes`, called
//! in a loop from the bench (no HTTP, no worker pool), the way the daemon calls them: claims of
//! half a batch (`batch_size / 2`) rows, outcomes written `batch_size` at a time. How fast the store can go bounds
//! how fast the daemon can go, and the split tells which of the two queries to work on.

use std::time::{Duration, Instant};

use chrono::Utc;
use session_reaper::store::{ClaimRequest, OutcomeWrite, State, Store};

use crate::db::{Db, PG_VARIANTS, PgVariant};
use crate::noise::own_cpu;
use crate::report::{Report, thousands};
use crate::run::Ctx;

/// Lease and staleness as the daemon's defaults have them.
const LEASE: Duration = Duration::from_secs(30);
const STALE_AFTER: Duration = Duration::from_secs(30 * 60);

struct StoreOnly {
    rows: u64,
    elapsed: Duration,
    claims: u64,
    claim_time: Duration,
    /// Each claim's and each write's duration, for their spread.
    claim_each: Vec<Duration>,
    batches: u64,
    write_time: Duration,
    write_each: Vec<Duration>,
    /// The bench process's CPU meanwhile (sqlx and SQLite run in it; PostgreSQL does not).
    cpu: Duration,
    /// The CPU of the PostgreSQL backends serving the store.
    postgres_cpu: Duration,
    bounded: bool,
}

async fn claim_and_write(db: &Db, claim_limit: u32, batch: usize, bound: Duration) -> anyhow::Result<StoreOnly> {
    let store = Store::connect(&db.url()).await?;
    let owner = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let due_by = Utc::now();
    store.next_due(std::time::Duration::ZERO).await?;
    let backends = |db: &Db| db.postgres_name().map(crate::noise::backend_ticks).unwrap_or_default();
    let (cpu_before, pg_before) = (own_cpu(), backends(db));
    let started = Instant::now();
    let mut result = StoreOnly {
        rows: 0,
        elapsed: Duration::ZERO,
        claims: 0,
        claim_time: Duration::ZERO,
        claim_each: Vec::new(),
        batches: 0,
        write_time: Duration::ZERO,
        write_each: Vec::new(),
        cpu: Duration::ZERO,
        postgres_cpu: Duration::ZERO,
        bounded: false,
    };
    let mut outcomes: Vec<OutcomeWrite> = Vec::with_capacity(batch + claim_limit as usize);
    loop {
        let exhausted = if started.elapsed() >= bound {
            result.bounded = true;
            true
        } else {
            let t = Instant::now();
            let now = Utc::now();
            let rows = store
                .claim(&ClaimRequest {
                    instance_id: &owner,
                    now,
                    lease: LEASE,
                    due_by,
                    stale_after: STALE_AFTER,
                    limit: claim_limit,
                })
                .await?
                .rows;
            result.claim_time += t.elapsed();
            result.claim_each.push(t.elapsed());
            result.claims += 1;
            outcomes.extend(rows.iter().map(|row| OutcomeWrite::Finish {
                id: row.id,
                state: State::Deleted,
                charge: true,
                http_status: Some(200),
                api_code: None,
                error: None,
                attempted_at: Some(now),
                next_attempt_at: None,
                decided_at: now,
            }));
            rows.is_empty()
        };
        if outcomes.len() >= batch || (exhausted && !outcomes.is_empty()) {
            let t = Instant::now();
            let written = store.write_outcomes(&owner, &outcomes).await?;
            result.write_time += t.elapsed();
            result.write_each.push(t.elapsed());
            result.batches += 1;
            anyhow::ensure!(
                written == outcomes.len() as u64,
                "wrote {written} of {} outcomes",
                outcomes.len()
            );
            result.rows += written;
            outcomes.clear();
        }
        if exhausted {
            break;
        }
    }
    result.elapsed = started.elapsed();
    result.cpu = own_cpu().saturating_sub(cpu_before);
    let pg_ticks: u64 = backends(db)
        .iter()
        .map(|(pid, ticks)| ticks.saturating_sub(pg_before.get(pid).copied().unwrap_or(0)))
        .sum();
    result.postgres_cpu = crate::noise::ticks_to_duration(pg_ticks);
    Ok(result)
}

/// Median, 90th percentile and maximum, in ms.
fn spread(durations: &[Duration]) -> String {
    let mut sorted = durations.to_vec();
    sorted.sort();
    let at = |q: f64| {
        sorted
            .get(((sorted.len() as f64 - 1.0) * q).round() as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    format!("p50 {:.1} / p90 {:.1} / max {:.1} ms", at(0.5), at(0.9), at(1.0))
}

/// Store-only throughput on SQLite and PostgreSQL (as seeded, and after `ANALYZE`).
pub async fn section(ctx: &Ctx, report: &mut Report) -> anyhow::Result<()> {
    let n = ctx.sizes.rows;
    // The daemon tops its queue of claimed rows up when it is half empty: claims of half a batch.
    let batch = ctx.sizes.batch_size as usize;
    let limit = (ctx.sizes.batch_size / 2).max(1);
    let bound = Duration::from_secs(60);
    let mut cases: Vec<Option<&PgVariant>> = vec![None];
    match &ctx.postgres {
        Ok(_) => cases.extend(PG_VARIANTS.iter().map(Some)),
        Err(why) => report.missing("Store only, PostgreSQL", why.clone(), "—"),
    }
    for variant in cases {
        let name = variant.map_or("SQLite", |v| v.name);
        crate::progress!("store only: {name}, {n} rows, claims of {limit}, writes of {batch}");
        let tag = uuid::Uuid::new_v4().simple().to_string();
        let measured = async {
            let db = match (variant, &ctx.postgres) {
                (Some(variant), Ok(admin)) => Db::postgres(admin, "store_only", variant).await?,
                _ => Db::sqlite(&ctx.workdir, "store-only.db"),
            };
            let result = async {
                db.seed(n, &tag).await?;
                if variant.is_some_and(|v| v.analyze) {
                    db.analyze().await?;
                }
                claim_and_write(&db, limit, batch, bound).await
            }
            .await;
            db.remove().await;
            result
        }
        .await;
        let label = format!("Store only (no HTTP), {name}, {} rows", thousands(n as f64));
        let m = match measured {
            Ok(m) => m,
            Err(e) => {
                report.add(label, format!("failed: {e:#}"), "—", crate::report::Verdict::Fail);
                continue;
            }
        };
        let per_s = m.rows as f64 / m.elapsed.as_secs_f64();
        let bounded = if m.bounded {
            format!(", stopped at the {} s bound", bound.as_secs())
        } else {
            String::new()
        };
        let micros = |d: Duration, n: u64| d.as_secs_f64() * 1e6 / n.max(1) as f64;
        let pg = if m.postgres_cpu > Duration::ZERO {
            format!("; PostgreSQL server CPU {:.2} s", m.postgres_cpu.as_secs_f64())
        } else {
            String::new()
        };
        report.info(
            format!("{label}: claim {limit} + write outcomes {batch} at a time, one after another"),
            format!(
                "{}/s ({} rows in {:.2} s{bounded}): {} claims at {:.0} µs ({}), {} write batches at {:.0} µs \
                 ({}; {:.1} µs per row); bench CPU {:.2} s{pg}",
                thousands(per_s),
                thousands(m.rows as f64),
                m.elapsed.as_secs_f64(),
                thousands(m.claims as f64),
                micros(m.claim_time, m.claims),
                spread(&m.claim_each),
                thousands(m.batches as f64),
                micros(m.write_time, m.batches),
                spread(&m.write_each),
                micros(m.write_time, m.rows),
                m.cpu.as_secs_f64(),
            ),
        );
    }
    Ok(())
}
