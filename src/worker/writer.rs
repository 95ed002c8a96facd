//! Writes outcomes back in batches (by size or time, whichever comes first), so no database
//! round trip is paid per session. While the database is away it holds the batch, says so once,
//! and retries with backoff; the bounded channel in front of it stops the pool meanwhile, so
//! memory stays bounded and nothing acknowledged is dropped.
//!
//! Answered-but-unwritten outcomes are what a kill -9 turns into repeated requests: at most
//! `worker.concurrency` in workers plus `worker.batch_size` in this channel plus one batch.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::store::{OutcomeWrite, Store};

/// How long a partial batch waits for company before it is written.
const FLUSH_AFTER: Duration = Duration::from_millis(20);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The writer task and what it needs.
pub struct Writer {
    pub store: Store,
    pub owner: String,
    pub batch_size: usize,
    pub metrics: Arc<Metrics>,
    /// Fired when shutdown can wait no longer: a batch the database still refuses is then
    /// dropped (its rows come free when their leases run out) instead of holding the exit.
    pub give_up: CancellationToken,
}

impl Writer {
    /// Starts the writer; it ends when every sender is dropped and the last batch is written.
    pub fn spawn(self) -> (mpsc::Sender<OutcomeWrite>, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(self.batch_size);
        (tx, tokio::spawn(self.write_batches(rx)))
    }

    async fn write_batches(self, mut rx: mpsc::Receiver<OutcomeWrite>) {
        let mut batch = Vec::with_capacity(self.batch_size);
        let mut outage = false;
        while rx.recv_many(&mut batch, self.batch_size).await > 0 {
            let deadline = tokio::time::Instant::now() + FLUSH_AFTER;
            while batch.len() < self.batch_size {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(outcome)) => batch.push(outcome),
                    _ => break,
                }
            }
            outage = self.write(&batch, outage).await;
            batch.clear();
        }
    }

    /// Writes one batch, retrying while the database is away. Returns whether an outage is
    /// still going on (so it is reported once, not once per batch).
    async fn write(&self, batch: &[OutcomeWrite], mut outage: bool) -> bool {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let result = self.store.write_outcomes(&self.owner, batch).await;
            self.metrics.database_result(&result);
            match result {
                Ok(written) => {
                    if outage {
                        tracing::info!(held = batch.len(), "database is back; held outcomes written");
                    }
                    let lost = batch.len() as u64 - written.min(batch.len() as u64);
                    if lost > 0 {
                        self.metrics.lost_leases(lost);
                        tracing::warn!(lost, "outcomes not written: another worker took over those rows");
                    }
                    return false;
                }
                Err(e) => {
                    if !outage {
                        tracing::error!(
                            error = format!("{e:#}"),
                            held = batch.len(),
                            "database unavailable; holding outcomes and retrying"
                        );
                        outage = true;
                    }
                    if self.give_up.is_cancelled() {
                        tracing::error!(
                            dropped = batch.len(),
                            "shutting down with the database still unavailable: outcomes not written; \
                             their rows will be tried again when their leases run out"
                        );
                        return true;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = self.give_up.cancelled() => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}
