//! Every `log.summary_interval`: the summary log line, the backlog gauges, systemd's STATUS=
//! line, and (with `retention.finished`) pruning of old finished rows.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::{Store, chrono_duration};

/// Every this many rounds the table's planner statistics are refreshed (PostgreSQL).
const STATISTICS_EVERY_ROUNDS: u64 = 10;
/// Rows deleted per prune statement, so a big prune never holds a long lock.
pub const PRUNE_BATCH: u32 = 1_000;
/// Most batches per housekeeping round; the rest waits for the next round.
const PRUNE_BATCHES_PER_ROUND: u32 = 100;

pub struct Housekeeping {
    pub store: Store,
    pub config: Config,
    pub metrics: Arc<Metrics>,
    pub clock: Clock,
}

impl Housekeeping {
    pub async fn run(self, stop: CancellationToken) {
        let every = self.config.log.summary_interval;
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        let mut requests = 0;
        for round in 1u64.. {
            tokio::select! { _ = tick.tick() => {}, _ = stop.cancelled() => return }
            requests = self.metrics.log_summary(requests, every.as_secs_f64());
            self.refresh_backlog().await;
            self.prune().await;
            if round % STATISTICS_EVERY_ROUNDS == 0 {
                // A failure here is counted by the store and seen again by the next claim.
                let _ = self.store.refresh_statistics().await;
            }
        }
    }

    async fn refresh_backlog(&self) {
        let Ok((open, earliest_due)) = self.store.backlog(self.config.worker.stale_after).await else {
            return;
        };
        let age = earliest_due.and_then(|due| (self.clock.now() - due).to_std().ok());
        self.metrics.set_backlog(open, age);
        let counts = self.metrics.outcome_counts();
        crate::systemd::notify_status(&format!(
            "deleted {} gone {} failed {} invalid {}; in flight {}; backlog {open}",
            counts.deleted,
            counts.gone,
            counts.failed,
            counts.invalid,
            self.metrics.in_flight_now(),
        ));
    }

    async fn prune(&self) {
        let Some(keep) = self.config.retention.finished else {
            return;
        };
        let cutoff = self.clock.now() - chrono_duration(keep);
        let mut pruned = 0;
        for _ in 0..PRUNE_BATCHES_PER_ROUND {
            match self.store.prune(cutoff, PRUNE_BATCH).await {
                Ok(0) => break,
                Ok(n) => pruned += n,
                Err(e) => {
                    tracing::warn!(error = format!("{e:#}"), "could not prune finished sessions");
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if pruned > 0 {
            tracing::info!(pruned, keep = %humantime::format_duration(keep), "pruned finished sessions");
        }
    }
}
