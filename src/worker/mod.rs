//! The daemon's work loop: claim due rows in batches, hand each to a worker slot, write the
//! outcomes back, and stop cleanly.
//!
//! Shutdown is a parameter (a `CancellationToken`), so tests and `demo` drive it themselves.

mod backoff;
mod deletion;
mod gate;
mod heartbeat;
mod held;
mod housekeeping;
mod limiter;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use backoff::RetryPolicy;
pub use deletion::{DEFAULT_429_PAUSE, Deleter, DeletionOutcome, Stop};
pub use gate::{Gate, Pass, Reopen};
pub use housekeeping::PRUNE_BATCH;
pub use limiter::Limiter;

use crate::api::ApiClient;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::{ClaimRequest, ClaimedRow, OutcomeWrite, Store};
use crate::systemd::Watchdog;

/// How long the run waits after a failed claim before trying again, at most.
const MAX_CLAIM_BACKOFF: Duration = Duration::from_secs(10);
/// Longest the loop waits without turning (liveness and the systemd watchdog see each turn).
const TICK: Duration = Duration::from_secs(1);
/// The writer's last chance at shutdown, even when the grace is spent.
const WRITER_FLOOR: Duration = Duration::from_secs(1);
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
    /// Lease owner written into claimed rows and instance id; unique per process run.
    owner: String,
    metrics: Arc<Metrics>,
    /// Pets systemd's watchdog from the loop itself, so a stuck loop gets the service restarted.
    watchdog: Watchdog,
    /// Rows claimed and not yet written back: what the heartbeat renews.
    held: Arc<held::Held>,
}

impl Reaper {
    pub fn new(config: Config, store: Store, api: ApiClient, metrics: Arc<Metrics>) -> Self {
        let deleter = Deleter {
            api,
            gate: Gate::default(),
            limiter: Limiter::new(config.worker.rate_per_second, config.worker.burst),
            policy: RetryPolicy::from(&config.retry),
            quota_pause: config.retry.quota_pause,
            key_pause: config.retry.key_pause,
            metrics: metrics.clone(),
        };
        metrics.set_rate_limit(config.worker.rate_per_second);
        let owner = format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple());
        Self {
            store,
            deleter: Arc::new(deleter),
            config,
            owner,
            metrics,
            watchdog: Watchdog::from_env(),
            held: Arc::default(),
        }
    }

    /// Runs until `mode` is satisfied or `shutdown` fires; then lets requests in flight finish
    /// within `shutdown.grace`, writes every outcome and releases rows never started.
    pub async fn run(self, mode: RunMode, shutdown: CancellationToken) -> anyhow::Result<()> {
        // On a runtime worker thread, not the thread that called `block_on`: each wake-up of the
        // feeder would otherwise be a hand-over between threads.
        tokio::spawn(self.run_here(mode, shutdown))
            .await
            .context("The work loop panicked")?
    }

    async fn run_here(self, mode: RunMode, shutdown: CancellationToken) -> anyhow::Result<()> {
        let worker = &self.config.worker;
        let batch_size = worker.batch_size as usize;
        let stop = Stop {
            starting: shutdown.clone(),
            in_flight: CancellationToken::new(),
        };
        let give_up = CancellationToken::new();
        let (outcomes, writer) = writer::Writer {
            store: self.store.clone(),
            owner: self.owner.clone(),
            batch_size,
            metrics: self.metrics.clone(),
            give_up: give_up.clone(),
            held: self.held.clone(),
        }
        .spawn();
        let started = Utc::now();
        let heartbeat = heartbeat::Heartbeat {
            store: self.store.clone(),
            owner: self.owner.clone(),
            host: heartbeat::hostname(),
            started_at: started,
            worker: worker.clone(),
            deleter: self.deleter.clone(),
            metrics: self.metrics.clone(),
            held: self.held.clone(),
        };
        heartbeat.beat().await;
        let analyzed = self.store.refresh_statistics().await;
        self.metrics.database_result(&analyzed);
        if let Err(e) = analyzed {
            tracing::warn!(error = format!("{e:#}"), "could not refresh the table's statistics");
        }
        let background = CancellationToken::new();
        let heartbeat = tokio::spawn(heartbeat.run(background.clone()));
        let housekeeping = housekeeping::Housekeeping {
            store: self.store.clone(),
            config: self.config.clone(),
            metrics: self.metrics.clone(),
        };
        let housekeeping = tokio::spawn(housekeeping.run(background.clone()));

        // Claimed rows wait in a short queue that the workers take from; the feeder tops it up a
        // whole batch at a time, so one claim serves many deletions.
        let ahead = Ahead::new(worker.batch_size, worker.rate_per_second);
        let (queue, taken) = flume::bounded::<ClaimedRow>(ahead.capacity);
        let refill = Arc::new(Notify::new());
        let mut workers = JoinSet::new();
        for _ in 0..worker.concurrency {
            workers.spawn(work(
                taken.clone(),
                Refill {
                    notify: refill.clone(),
                    ahead,
                },
                self.deleter.clone(),
                stop.clone(),
                outcomes.clone(),
                self.metrics.clone(),
            ));
        }
        drop(taken);
        tracing::info!(owner = %self.owner, backend = self.store.backend(), concurrency = worker.concurrency,
            rate_per_second = self.deleter.limiter.rate(), claim_ahead = ahead.capacity, ?mode, "reaper started");
        self.feed(&queue, &refill, ahead, mode, started, &shutdown).await;
        // Workers drain what is queued (after shutdown, by releasing it) and stop.
        drop(queue);

        if shutdown.is_cancelled() {
            tracing::info!(
                in_flight = self.metrics.in_flight_now(),
                grace_s = self.config.shutdown.grace.as_secs_f64(),
                "shutting down: no new claims; letting requests in flight finish"
            );
        }
        // One deadline for everything: requests in flight, then the writer, within `shutdown.grace`.
        let grace = self.config.shutdown.grace;
        let deadline = Instant::now() + grace;
        let (abandon, give_up_writes) = (stop.in_flight.clone(), give_up.clone());
        let grace_timer = tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            // Requests still running are abandoned; outcomes the database still refuses are
            // dropped (their rows come free when the leases run out) so the exit is bounded.
            abandon.cancel();
            give_up_writes.cancel();
        });
        loop {
            tokio::select! {
                joined = workers.join_next() => if joined.is_none() { break },
                _ = tokio::time::sleep(TICK) => self.tick(),
            }
        }
        drop(outcomes);
        // What the writer still holds gets the rest of the grace (at least a moment).
        let mut writer = writer;
        let remaining = deadline.saturating_duration_since(Instant::now()).max(WRITER_FLOOR);
        if tokio::time::timeout(remaining, &mut writer).await.is_err() {
            give_up.cancel();
            writer.await.ok();
        }
        grace_timer.abort();
        background.cancel();
        heartbeat.await.ok();
        housekeeping.await.ok();
        let ran_for = (Utc::now() - started).to_std().unwrap_or_default();
        self.metrics.log_summary(0, ran_for.as_secs_f64());
        tracing::info!("reaper stopped");
        Ok(())
    }

    /// The loop turned: liveness for `/livez`, and systemd's watchdog.
    fn tick(&self) {
        self.metrics.tick();
        self.watchdog.pet();
    }

    /// Keeps the queue of claimed rows topped up until `mode` is satisfied or shutdown fires.
    /// A claim waits until a whole claim fits in the queue, then takes it.
    async fn feed(
        &self,
        queue: &flume::Sender<ClaimedRow>,
        refill: &Notify,
        ahead: Ahead,
        mode: RunMode,
        started: DateTime<Utc>,
        shutdown: &CancellationToken,
    ) {
        let worker = &self.config.worker;
        let mut outage: Option<Duration> = None;
        let mut idle = mode == RunMode::Daemon;
        // The last claim found nothing although a row looked due (e.g. one only its own lease
        // holds): wait at least a tick before asking again instead of spinning.
        let mut claimed_nothing = false;
        loop {
            if !self.until_room(queue, refill, ahead.refill_at(), shutdown).await {
                return;
            }
            if idle && mode == RunMode::UntilDone {
                // `demo` waits only for its own retries, seconds apart, then claims to find out
                // whether anything is left (the status check below ends the run).
                if !self.nap_until(Instant::now() + UNTIL_DONE_NAP, shutdown).await {
                    return;
                }
            } else if idle {
                match self.due_now(worker.poll_interval, claimed_nothing, shutdown).await {
                    Some(true) => {}
                    Some(false) => continue,
                    None => return,
                }
            }
            if let Some(until) = self.deleter.gate.closed_until() {
                // No point leasing rows the pool may not send yet.
                if !self.nap_until(until, shutdown).await {
                    return;
                }
            }
            let limit = ahead.claim;
            let now = Utc::now();
            let request = ClaimRequest {
                owner: &self.owner,
                now,
                lease: worker.lease,
                due_by: if mode == RunMode::Once { started } else { now },
                stale_after: worker.stale_after,
                limit: limit as u32,
            };
            let claimed = self.store.claim(&request).await;
            self.metrics.database_result(&claimed);
            let rows = match claimed {
                Ok(rows) => rows,
                Err(e) => {
                    let wait = outage.map_or(Duration::from_millis(200), |w| (w * 2).min(MAX_CLAIM_BACKOFF));
                    if outage.is_none() {
                        tracing::error!(
                            error = format!("{e:#}"),
                            "database unavailable: claiming stops until it is back"
                        );
                    }
                    outage = Some(wait);
                    if !self.nap_until(Instant::now() + wait, shutdown).await {
                        return;
                    }
                    continue;
                }
            };
            if outage.take().is_some() {
                tracing::info!("database is back: claiming resumes");
            }
            let full = rows.len() == limit;
            claimed_nothing = rows.is_empty();
            idle = false;
            self.held.add(rows.iter().map(|row| row.id));
            for row in rows {
                if row.taken_over {
                    self.metrics.takeover();
                }
                // Only the feeder adds to the queue and it claimed no more than the free room,
                // so this never waits; it fails only if every worker is gone.
                if queue.try_send(row).is_err() {
                    return;
                }
            }
            if full {
                continue;
            }
            // Nothing (more) due now.
            match mode {
                RunMode::Daemon => idle = true,
                // Everything due at the start is claimed; later retries wait for the next run.
                RunMode::Once => return,
                RunMode::UntilDone if !queue.is_empty() || self.metrics.in_flight_now() > 0 => {
                    tokio::select! {
                        _ = refill.notified() => {}
                        _ = tokio::time::sleep(TICK) => self.tick(),
                        _ = shutdown.cancelled() => return,
                    }
                }
                RunMode::UntilDone => match self.store.status(Utc::now(), worker.stale_after).await {
                    Ok(status) if status.open() == 0 => return,
                    _ => idle = true,
                },
            }
        }
    }

    /// Waits until the queue holds at most `refill_at` rows; false on shutdown. Turns the loop
    /// every `TICK` while the workers are busy.
    async fn until_room(
        &self,
        queue: &flume::Sender<ClaimedRow>,
        refill: &Notify,
        refill_at: usize,
        shutdown: &CancellationToken,
    ) -> bool {
        loop {
            self.tick();
            if shutdown.is_cancelled() {
                return false;
            }
            if queue.len() <= refill_at {
                return true;
            }
            tokio::select! {
                _ = refill.notified() => {}
                _ = shutdown.cancelled() => return false,
                _ = tokio::time::sleep(TICK) => {}
            }
        }
    }

    /// Sleeps until `until` in turns of at most `TICK`; false when shutdown came first.
    async fn nap_until(&self, until: Instant, shutdown: &CancellationToken) -> bool {
        loop {
            self.tick();
            let now = Instant::now();
            if now >= until {
                return !shutdown.is_cancelled();
            }
            tokio::select! {
                _ = tokio::time::sleep_until(until.min(now + TICK)) => {}
                _ = shutdown.cancelled() => return false,
            }
        }
    }

    /// One query for the earliest due row: `Some(true)` if something is due now, otherwise a nap
    /// until it is due (at most `poll`) and `Some(false)`; `None` when shutdown came first. An idle
    /// daemon thus makes one query per poll interval and no claim at all.
    async fn due_now(&self, poll: Duration, claimed_nothing: bool, shutdown: &CancellationToken) -> Option<bool> {
        let next = self.store.next_due(self.config.worker.stale_after).await;
        self.metrics.database_result(&next);
        let due_in = match next {
            Ok(Some(due)) => Some((due - Utc::now()).to_std().unwrap_or(Duration::ZERO)),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = format!("{e:#}"), "could not look up the next due session");
                None
            }
        };
        // After a claim that found nothing, wait at least a tick before the next one.
        let floor = if claimed_nothing {
            TICK.min(poll)
        } else {
            Duration::ZERO
        };
        let (wait, due) = match due_in {
            // Due within this nap: sleep until then (at least the floor), then claim.
            Some(due_in) if due_in <= poll => (due_in.max(floor), true),
            _ => (poll, false),
        };
        if wait.is_zero() {
            return (!shutdown.is_cancelled()).then_some(due);
        }
        self.nap_until(Instant::now() + wait, shutdown).await.then_some(due)
    }
}

/// The queue of claimed rows waiting for a worker.
#[derive(Debug, Clone, Copy)]
struct Ahead {
    /// Rows the queue holds at most: two batches, so a whole batch can be claimed while the
    /// workers still have one to go on, but no more than a second's worth of the rate limit
    /// (queued rows hold leases other replicas could use).
    capacity: usize,
    /// Rows per claim: a batch, or half the queue when the rate limit keeps it short.
    claim: usize,
}

impl Ahead {
    fn new(batch_size: u32, rate_per_second: u32) -> Self {
        let (batch, rate) = (batch_size.max(1) as usize, rate_per_second.max(1) as usize);
        let capacity = (2 * batch).min(rate);
        Self {
            capacity,
            claim: batch.min(capacity.div_ceil(2)),
        }
    }

    /// The feeder claims once the queue is down to this many rows.
    fn refill_at(self) -> usize {
        self.capacity - self.claim
    }
}

/// Wakes the feeder when the queue has drained to where a claim fits (`Ahead::refill_at`).
struct Refill {
    notify: Arc<Notify>,
    ahead: Ahead,
}

/// One worker: takes claimed rows one at a time until the queue is closed and empty. It hands
/// each outcome to the writer before taking the next row, which bounds what a crash can lose
/// to the workers plus the writer's queue.
async fn work(
    taken: flume::Receiver<ClaimedRow>,
    refill: Refill,
    deleter: Arc<Deleter>,
    stop: Stop,
    outcomes: mpsc::Sender<OutcomeWrite>,
    metrics: Arc<Metrics>,
) {
    while let Ok(row) = taken.recv_async().await {
        if taken.len() <= refill.ahead.refill_at() {
            refill.notify.notify_one();
        }
        metrics.in_flight(1);
        let (_, write) = deleter.delete(&row, &stop).await;
        // The writer outlives every worker: it stops only when all senders are gone.
        let _ = outcomes.send(write).await;
        metrics.in_flight(-1);
    }
    refill.notify.notify_one();
}
