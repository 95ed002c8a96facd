//! The daemon's work loop: a feeder claims due rows into a short queue, worker slots delete
//! them, outcome writers record the results, and the whole stops cleanly.
//!
//! Shutdown is a parameter (a `CancellationToken`), so tests and `demo` drive it themselves.

mod backoff;
mod budget;
mod deletion;
mod feeder;
mod gate;
mod grouping;
mod heartbeat;
mod held;
mod housekeeping;
mod limiter;
mod modes;
mod outage;
mod pause;
mod recheck;
pub mod source;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use backoff::RetryPolicy;
pub use budget::{Budget, BudgetConfig};
pub use deletion::{DEFAULT_429_PAUSE, Deleter, Stop};
pub use feeder::{ClaimOutcome, FeedEnd, FeedState, QueueSizing};
pub use gate::{Gate, Pass, Reopen};
pub use heartbeat::hostname;
pub use housekeeping::PRUNE_BATCH;
pub use limiter::Limiter;
pub use modes::{RunEnd, RunMode};
pub use outage::{Backoff, Outage};

use crate::api::ApiClient;
use crate::clock::Clock;
use crate::config::Config;
use crate::health::{AccountPause, Health};
use crate::metrics::Metrics;
use crate::store::{ClaimedRow, OutcomeWrite, Store};
use crate::systemd::Watchdog;

/// Longest the loop waits without turning (liveness and the systemd watchdog see each turn).
const TICK: Duration = Duration::from_secs(1);
/// The writer's last chance at shutdown, even when the grace is spent.
const WRITER_FLOOR: Duration = Duration::from_secs(1);
/// The heartbeat's and housekeeping's last chance at shutdown (removing this instance's row).
const BACKGROUND_FLOOR: Duration = Duration::from_millis(500);
/// How often a shutdown that waits says what it waits for.
const SHUTDOWN_REPORT_EVERY: Duration = Duration::from_secs(5);

/// How long past the request timeout the cluster's probe stays this replica's: a replica that
/// dies holding it delays the next probe by at most this.
const PROBE_LEASE_MARGIN: Duration = Duration::from_secs(5);

/// A turn of the work loop, seen by `/livez` and systemd's watchdog.
pub struct Tick {
    health: Arc<Health>,
    /// Pets systemd's watchdog from the loop itself, so a stuck loop gets the service restarted.
    watchdog: Watchdog,
}

impl Tick {
    pub fn turn(&self) {
        self.health.tick();
        self.watchdog.pet();
    }
}

/// One daemon process's work loop and its shared parts.
pub struct Reaper {
    store: Store,
    deleter: Arc<Deleter>,
    config: Config,
    /// This process run's name: its row in `reaper_instances` and the `lease_owner` of the rows
    /// it holds. Unique per process run.
    instance_id: String,
    metrics: Arc<Metrics>,
    tick: Tick,
    clock: Clock,
    /// Rows claimed and not yet written back: what the heartbeat renews.
    held: Arc<held::Held>,
}

impl Reaper {
    /// Wires the parts together; every store call from here on is metered into `metrics`/`health`.
    pub fn new(config: Config, store: Store, api: ApiClient, metrics: Arc<Metrics>, health: Arc<Health>) -> Self {
        let clock = Clock::system();
        metrics.set_rate_limit(config.worker.rate_per_second);
        let instance_id = format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple());
        let store = store.metered(metrics.store_counters(), health.clone());
        // A fresh process's first request goes alone: a rejected key or a spent quota costs one
        // request at start, not a pool's worth.
        let gate = Arc::new(Gate::behind_probe());
        let budget = Budget::new(
            store.clone(),
            instance_id.clone(),
            BudgetConfig {
                rate_per_second: config.worker.rate_per_second,
                burst: config.worker.burst,
                probe_lease: config.api.timeout + PROBE_LEASE_MARGIN,
                concurrency: u32::try_from(config.worker.concurrency).unwrap_or(u32::MAX),
            },
            gate.clone(),
            health.clone(),
            metrics.clone(),
        );
        let deleter = Deleter {
            api,
            gate,
            budget: Arc::new(budget),
            policy: RetryPolicy::from(&config.retry),
            quota_pause: config.retry.quota_pause,
            key_pause: config.retry.key_pause,
            metrics: metrics.clone(),
            health: health.clone(),
            clock: clock.clone(),
            recheck: Some(recheck::Recheck::new(
                store.clone(),
                &instance_id,
                config.worker.stale_after,
            )),
        };
        Self {
            store,
            deleter: Arc::new(deleter),
            config,
            instance_id,
            metrics,
            tick: Tick {
                health,
                watchdog: Watchdog::from_env(),
            },
            clock,
            held: Arc::default(),
        }
    }

    /// Runs until `mode` is satisfied or `shutdown` fires; then lets requests in flight finish
    /// within `shutdown.grace`, writes every outcome and releases rows never started.
    pub async fn run(self, mode: RunMode, shutdown: CancellationToken) -> anyhow::Result<RunEnd> {
        // On a runtime worker thread, not the thread that called `block_on`: each wake-up of the
        // feeder would otherwise be a hand-over between threads. (On the one-thread runtime,
        // `runtime::Flavor::OneThread`, both are the same thread.)
        tokio::spawn(self.run_here(mode, shutdown))
            .await
            .context("The work loop panicked")?
    }

    async fn run_here(self, mode: RunMode, signalled: CancellationToken) -> anyhow::Result<RunEnd> {
        let worker = &self.config.worker;
        // What stops claiming and sending: a signal, or (`--once`) a pause of the account's that
        // no single run should wait out.
        let shutdown = signalled.child_token();
        let account_watch = (mode == RunMode::Once).then(|| {
            let (health, shutdown) = (self.tick.health.clone(), shutdown.clone());
            tokio::spawn(async move {
                tokio::select! {
                    _ = health.until_account_pause() => {}
                    _ = shutdown.cancelled() => return,
                }
                tracing::error!("the account is paused (key rejected or quota spent): this run stops, rows untouched");
                shutdown.cancel();
            })
        });
        // Fired when the grace runs out: requests still running are abandoned, and outcomes the
        // database still refuses are dropped (their rows come free when the leases run out).
        let grace_over = CancellationToken::new();
        // Stops the heartbeat and housekeeping, last of all.
        let background = CancellationToken::new();
        let stop = Stop {
            no_new_requests: shutdown.clone(),
            abandon_in_flight: grace_over.clone(),
        };
        let dropped = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (outcomes, writer) = writer::Writer {
            store: self.store.clone(),
            instance_id: self.instance_id.clone(),
            batch_size: worker.batch_size as usize,
            metrics: self.metrics.clone(),
            give_up: grace_over.clone(),
            held: self.held.clone(),
            dropped: dropped.clone(),
            last_chance: Default::default(),
        }
        .spawn();
        let started = self.clock.now();
        let heartbeat = heartbeat::Heartbeat {
            store: self.store.clone(),
            instance_id: self.instance_id.clone(),
            host: heartbeat::hostname(),
            started_at: started,
            worker: worker.clone(),
            budget: self.deleter.budget.clone(),
            metrics: self.metrics.clone(),
            clock: self.clock.clone(),
            held: self.held.clone(),
            trouble: Default::default(),
        };
        heartbeat.beat().await;
        if let Err(e) = self.store.refresh_statistics().await {
            tracing::warn!(error = format!("{e:#}"), "could not refresh the table's statistics");
        }
        let heartbeat = tokio::spawn(heartbeat.run(background.clone()));
        let housekeeping = housekeeping::Housekeeping {
            store: self.store.clone(),
            config: self.config.clone(),
            metrics: self.metrics.clone(),
            clock: self.clock.clone(),
        };
        let housekeeping = tokio::spawn(housekeeping.run(background.clone()));
        // `[source]`: stale sessions read from the application's own table (daemon mode, when set).
        let _source = (mode == RunMode::Daemon)
            .then(|| source::SourceQuery::from_config(&self.config, self.store.clone(), self.clock.clone()))
            .flatten()
            .map(|s| tokio::spawn(s.run(shutdown.clone())));

        // Claimed rows wait in a short queue that the workers take from; the feeder tops it up a
        // whole claim at a time, so one claim serves many deletions.
        let sizing = QueueSizing::new(worker.batch_size, worker.rate_per_second);
        let (queue, taken) = flume::bounded::<ClaimedRow>(sizing.capacity);
        let room = feeder::RoomSignal {
            notify: Arc::new(Notify::new()),
            sizing,
        };
        let mut workers = JoinSet::new();
        for _ in 0..worker.concurrency {
            workers.spawn(work(
                taken.clone(),
                room.clone(),
                self.deleter.clone(),
                stop.clone(),
                outcomes.clone(),
                self.metrics.clone(),
            ));
        }
        drop(taken);
        tracing::info!(instance_id = %self.instance_id, backend = self.store.backend(), concurrency = worker.concurrency,
            rate_per_second = self.deleter.budget.rate_per_second(), claim_ahead = sizing.capacity, ?mode, "reaper started");
        let feed_end = feeder::Feeder {
            store: &self.store,
            instance_id: &self.instance_id,
            worker,
            gate: &self.deleter.gate,
            clock: &self.clock,
            metrics: &self.metrics,
            held: &self.held,
            tick: &self.tick,
            queue,
            room,
            mode,
            started,
            give_up_after: (mode == RunMode::Once).then_some(self.config.database.connect_timeout),
        }
        .run(&shutdown)
        .await;
        if feed_end == FeedEnd::DatabaseUnavailable {
            tracing::error!(
                waited_s = self.config.database.connect_timeout.as_secs_f64(),
                "the database stayed unreachable for database.connect_timeout: this run stops"
            );
            shutdown.cancel();
        }
        // The feeder dropped the queue: workers drain what is queued (after shutdown, by
        // releasing it) and stop.

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
        let grace_timer = tokio::spawn({
            let grace_over = grace_over.clone();
            async move {
                tokio::time::sleep(grace).await;
                grace_over.cancel();
            }
        });
        let mut next_report = Instant::now() + SHUTDOWN_REPORT_EVERY;
        loop {
            tokio::select! {
                joined = workers.join_next() => if joined.is_none() { break },
                _ = tokio::time::sleep(TICK) => self.tick.turn(),
            }
            if shutdown.is_cancelled() && Instant::now() >= next_report {
                next_report += SHUTDOWN_REPORT_EVERY;
                tracing::info!(
                    in_flight = self.metrics.in_flight_now(),
                    grace_left_s = deadline.saturating_duration_since(Instant::now()).as_secs(),
                    "shutting down: waiting for requests in flight"
                );
            }
        }
        drop(outcomes);
        // What the writer still holds gets the rest of the grace (at least a moment).
        let mut writer = writer;
        let remaining = deadline.saturating_duration_since(Instant::now()).max(WRITER_FLOOR);
        if tokio::time::timeout(remaining, &mut writer).await.is_err() {
            tracing::info!(
                held = self.held.ids().len(),
                "shutting down: the grace is spent; giving up on outcomes the database has not taken"
            );
            grace_over.cancel();
            writer.await.ok();
        }
        grace_timer.abort();
        background.cancel();
        // Removing this instance's row is worth a moment, not an unbounded wait on the database.
        let background_left = deadline.saturating_duration_since(Instant::now()).max(BACKGROUND_FLOOR);
        for task in [heartbeat, housekeeping] {
            let abort = task.abort_handle();
            if tokio::time::timeout(background_left, task).await.is_err() {
                abort.abort();
            }
        }
        let dropped = dropped.load(std::sync::atomic::Ordering::Relaxed);
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "outcomes not written at shutdown: those rows come free when their leases run out \
                 and are tried again (the API answers 1833 for any already deleted)"
            );
        }
        if let Some(watch) = account_watch {
            watch.abort();
        }
        let ran_for = (self.clock.now() - started).to_std().unwrap_or_default();
        self.metrics.log_summary(0, ran_for.as_secs_f64());
        let end = match (mode, feed_end, self.tick.health.account_pause()) {
            (RunMode::Daemon, ..) => RunEnd::Done,
            (RunMode::Once, FeedEnd::DatabaseUnavailable, _) => RunEnd::DatabaseUnavailable,
            (RunMode::Once, _, Some(AccountPause::KeyRejected)) => RunEnd::KeyRejected,
            (RunMode::Once, _, Some(AccountPause::QuotaSpent)) => RunEnd::QuotaSpent,
            (RunMode::Once, ..) if signalled.is_cancelled() || self.metrics.outcome_counts().released > 0 => {
                RunEnd::Incomplete
            }
            (RunMode::Once, ..) => RunEnd::Done,
        };
        tracing::info!(?end, "reaper stopped");
        Ok(end)
    }
}

/// One worker slot: takes claimed rows one at a time until the queue is closed and empty. It
/// hands each outcome to the writer before taking the next row, which bounds what a crash can
/// lose to the workers plus the writer's queue.
async fn work(
    taken: flume::Receiver<ClaimedRow>,
    room: feeder::RoomSignal,
    deleter: Arc<Deleter>,
    stop: Stop,
    outcomes: mpsc::Sender<OutcomeWrite>,
    metrics: Arc<Metrics>,
) {
    while let Ok(row) = taken.recv_async().await {
        room.taken(taken.len());
        metrics.in_flight(1);
        let (_, write) = deleter.delete(&row, &stop).await;
        // The writer outlives every worker: it stops only when all senders are gone.
        let _ = outcomes.send(write).await;
        metrics.in_flight(-1);
    }
    room.notify.notify_one();
}
