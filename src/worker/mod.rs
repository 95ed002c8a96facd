//! The daemon's work loop: claim due rows in batches, hand each to a worker slot, write the
//! outcomes back, and stop cleanly.
//!
//! Shutdown is a parameter (a `CancellationToken`), so tests and `demo` drive it themselves.

mod backoff;
mod deletion;
mod gate;
mod limiter;
mod stats;
mod writer;

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use backoff::RetryPolicy;
pub use deletion::{DEFAULT_429_PAUSE, Deleter, DeletionOutcome, Stop};
pub use gate::{Gate, Pass, Reopen};
pub use limiter::Limiter;
pub use stats::Stats;

use crate::api::ApiClient;
use crate::config::Config;
use crate::store::{ClaimRequest, Store};

/// How long the run waits after a failed claim before trying again, at most.
const MAX_CLAIM_BACKOFF: Duration = Duration::from_secs(10);

/// Longest idle nap in `RunMode::UntilDone`.
const UNTIL_DONE_NAP: Duration = Duration::from_millis(250);

/// When `run` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunMode {
    /// Until shutdown.
    Daemon,
    /// Rows due at the start, then exit (cron, Kubernetes Jobs); later retries wait for the next run.
    Once,
    /// Until no open row is left at all, retries included (`demo`).
    UntilDone,
}

/// One daemon process's work loop and its shared parts.
pub struct Reaper {
    store: Store,
    deleter: Arc<Deleter>,
    config: Config,
    /// Lease owner written into claimed rows; unique per process run.
    owner: String,
    stats: Arc<Stats>,
}

impl Reaper {
    pub fn new(config: Config, store: Store, api: ApiClient) -> Self {
        let stats = Arc::new(Stats::default());
        let deleter = Deleter {
            api,
            gate: Gate::default(),
            limiter: Limiter::new(config.worker.rate_per_second, config.worker.burst),
            policy: RetryPolicy::from(&config.retry),
            quota_pause: config.retry.quota_pause,
            key_pause: config.retry.key_pause,
            stats: stats.clone(),
        };
        let owner = format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple());
        Self {
            store,
            deleter: Arc::new(deleter),
            config,
            owner,
            stats,
        }
    }

    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Runs until `mode` is satisfied or `shutdown` fires; then lets requests in flight finish
    /// within `shutdown.grace`, writes every outcome and releases rows never started.
    pub async fn run(self, mode: RunMode, shutdown: CancellationToken) -> anyhow::Result<()> {
        let worker = &self.config.worker;
        let batch_size = worker.batch_size as usize;
        let stop = Stop {
            starting: shutdown.clone(),
            in_flight: CancellationToken::new(),
        };
        let (outcomes, writer) = writer::spawn(self.store.clone(), self.owner.clone(), batch_size, self.stats.clone());
        let background = CancellationToken::new();
        let heartbeat = tokio::spawn(heartbeat(
            self.store.clone(),
            self.owner.clone(),
            worker.lease,
            background.clone(),
        ));
        let summary = tokio::spawn(summary(
            self.stats.clone(),
            self.deleter.clone(),
            self.config.log.summary_interval,
            background.clone(),
        ));

        let slots = Arc::new(Semaphore::new(worker.concurrency));
        let mut tasks = JoinSet::new();
        let started = Utc::now();
        let mut outage: Option<Duration> = None;
        let mut idle = mode == RunMode::Daemon;
        tracing::info!(owner = %self.owner, backend = self.store.backend(), concurrency = worker.concurrency,
            rate_per_second = worker.rate_per_second, ?mode, "reaper started");

        loop {
            while tasks.try_join_next().is_some() {}
            let Some(first) = acquire(&slots, &shutdown).await else {
                break;
            };
            // `demo` waits only for its own retries, which are seconds apart.
            let nap = if mode == RunMode::UntilDone {
                UNTIL_DONE_NAP
            } else {
                worker.poll_interval
            };
            if idle && !self.wait_until_due(nap, &shutdown).await {
                break;
            }
            if let Some(until) = self.deleter.gate.closed_until() {
                // No point leasing rows the pool may not send yet.
                tokio::select! { _ = tokio::time::sleep_until(until) => {}, _ = shutdown.cancelled() => break }
            }
            let mut slots_held = vec![first];
            while slots_held.len() < batch_size {
                match slots.clone().try_acquire_owned() {
                    Ok(slot) => slots_held.push(slot),
                    Err(_) => break,
                }
            }
            let now = Utc::now();
            let request = ClaimRequest {
                owner: &self.owner,
                now,
                lease: worker.lease,
                due_by: if mode == RunMode::Once { started } else { now },
                stale_after: worker.stale_after,
                limit: slots_held.len() as u32,
            };
            let rows = match self.store.claim(&request).await {
                Ok(rows) => rows,
                Err(e) => {
                    self.stats.database_errors.fetch_add(1, Relaxed);
                    let wait = outage.map_or(Duration::from_millis(200), |w| (w * 2).min(MAX_CLAIM_BACKOFF));
                    if outage.is_none() {
                        tracing::error!(
                            error = format!("{e:#}"),
                            "database unavailable: claiming stops until it is back"
                        );
                    }
                    outage = Some(wait);
                    drop(slots_held);
                    tokio::select! { _ = tokio::time::sleep(wait) => {}, _ = shutdown.cancelled() => break }
                    continue;
                }
            };
            if outage.take().is_some() {
                tracing::info!("database is back: claiming resumes");
            }
            let full = rows.len() == slots_held.len();
            idle = false;
            for (row, slot) in rows.into_iter().zip(slots_held.drain(..)) {
                if row.taken_over {
                    self.stats.takeovers.fetch_add(1, Relaxed);
                }
                let (deleter, stop, outcomes, stats) =
                    (self.deleter.clone(), stop.clone(), outcomes.clone(), self.stats.clone());
                tasks.spawn(async move {
                    stats.in_flight.fetch_add(1, Relaxed);
                    let (_, write) = deleter.delete(&row, &stop).await;
                    stats.in_flight.fetch_sub(1, Relaxed);
                    drop(slot);
                    // The writer outlives every task: it stops only when all senders are gone.
                    let _ = outcomes.send(write).await;
                });
            }
            drop(slots_held);
            if full {
                continue;
            }
            // Nothing (more) due now.
            match mode {
                RunMode::Daemon => idle = true,
                RunMode::Once | RunMode::UntilDone if !tasks.is_empty() => {
                    tokio::select! { _ = tasks.join_next() => {}, _ = shutdown.cancelled() => break }
                }
                RunMode::Once => break,
                RunMode::UntilDone => match self.store.status(Utc::now(), worker.stale_after).await {
                    Ok(status) if status.open() == 0 => break,
                    _ => idle = true,
                },
            }
        }

        if shutdown.is_cancelled() {
            tracing::info!(
                in_flight = self.stats.in_flight.load(Relaxed),
                grace_s = self.config.shutdown.grace.as_secs_f64(),
                "shutting down: no new claims; letting requests in flight finish"
            );
        }
        let grace = self.config.shutdown.grace;
        let abandon = stop.in_flight.clone();
        let grace_timer = tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            abandon.cancel();
        });
        while tasks.join_next().await.is_some() {}
        grace_timer.abort();
        drop(outcomes);
        writer.await.ok();
        background.cancel();
        heartbeat.await.ok();
        summary.await.ok();
        let ran_for = (Utc::now() - started).to_std().unwrap_or_default();
        self.stats
            .log_summary(0, ran_for.as_secs_f64(), self.deleter.limiter.rate());
        tracing::info!("reaper stopped");
        Ok(())
    }

    /// Sleeps until the earliest due row (at most `worker.poll_interval`): one query per wake-up.
    /// Returns false when shutdown came first.
    async fn wait_until_due(&self, poll: Duration, shutdown: &CancellationToken) -> bool {
        let wait = match self.store.next_due(self.config.worker.stale_after).await {
            Ok(Some(due)) => (due - Utc::now()).to_std().unwrap_or(Duration::ZERO).min(poll),
            Ok(None) => poll,
            Err(e) => {
                self.stats.database_errors.fetch_add(1, Relaxed);
                tracing::warn!(error = format!("{e:#}"), "could not look up the next due session");
                poll
            }
        };
        if wait.is_zero() {
            return !shutdown.is_cancelled();
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => true,
            _ = shutdown.cancelled() => false,
        }
    }
}

async fn acquire(slots: &Arc<Semaphore>, shutdown: &CancellationToken) -> Option<tokio::sync::OwnedSemaphorePermit> {
    tokio::select! {
        slot = slots.clone().acquire_owned() => slot.ok(),
        _ = shutdown.cancelled() => None,
    }
}

/// Extends our leases every third of a lease, so a slow request never loses its row while a dead
/// process's rows come free within one lease.
async fn heartbeat(store: Store, owner: String, lease: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(lease / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! { _ = tick.tick() => {}, _ = stop.cancelled() => return }
        let until: DateTime<Utc> = Utc::now() + crate::store::chrono_duration(lease);
        if let Err(e) = store.renew_leases(&owner, until).await {
            tracing::warn!(error = format!("{e:#}"), "could not renew leases");
        }
    }
}

async fn summary(stats: Arc<Stats>, deleter: Arc<Deleter>, every: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    let mut last = stats.requests.load(Relaxed);
    loop {
        tokio::select! { _ = tick.tick() => {}, _ = stop.cancelled() => return }
        last = stats.log_summary(last, every.as_secs_f64(), deleter.limiter.rate());
    }
}
