//! Writes outcomes back in batches (by size or time, whichever comes first), so no database
//! round trip is paid per session. While the database is away it holds the batch, says so once,
//! and retries with backoff; the bounded channel in front of it stops the pool meanwhile, so
//! memory stays bounded and nothing acknowledged is dropped.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::metrics::Metrics;
use crate::store::{OutcomeWrite, Store};

/// How long a partial batch waits for company before it is written.
const FLUSH_AFTER: Duration = Duration::from_millis(20);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Starts the writer; it ends when every sender is dropped and the last batch is written.
pub fn spawn(
    store: Store,
    owner: String,
    batch_size: usize,
    metrics: Arc<Metrics>,
) -> (mpsc::Sender<OutcomeWrite>, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(batch_size * 4);
    let handle = tokio::spawn(write_batches(store, owner, batch_size, metrics, rx));
    (tx, handle)
}

async fn write_batches(
    store: Store,
    owner: String,
    batch_size: usize,
    metrics: Arc<Metrics>,
    mut rx: mpsc::Receiver<OutcomeWrite>,
) {
    let mut batch = Vec::with_capacity(batch_size);
    let mut outage = false;
    while rx.recv_many(&mut batch, batch_size).await > 0 {
        let deadline = tokio::time::Instant::now() + FLUSH_AFTER;
        while batch.len() < batch_size {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(outcome)) => batch.push(outcome),
                _ => break,
            }
        }
        let mut backoff = FIRST_BACKOFF;
        loop {
            let result = store.write_outcomes(&owner, &batch).await;
            metrics.database_result(&result);
            match result {
                Ok(written) => {
                    if outage {
                        tracing::info!(held = batch.len(), "database is back; held outcomes written");
                        outage = false;
                    }
                    let lost = batch.len() as u64 - written.min(batch.len() as u64);
                    if lost > 0 {
                        metrics.lost_leases(lost);
                        tracing::warn!(lost, "outcomes not written: another worker took over those rows");
                    }
                    break;
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
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        batch.clear();
    }
}
