//! Writes outcomes back in batches (by size or time, whichever comes first), so no database
//! round trip is paid per session. While the database is away it holds the batch, says so once,
//! and retries with backoff; the bounded channel in front of it stops the pool meanwhile, so
//! memory stays bounded and nothing acknowledged is dropped.
//!
//! On PostgreSQL two batches are written at once (`Store::outcome_writers`): while one waits on
//! the database (its statement and the commit), the next is collected and sent. One writer at a
//! time was the daemon's ceiling there (see `bench/README.md`). Batches never share a row, since
//! each row is in flight once, so the two never wait on each other's locks. SQLite writes through
//! one connection, so it gets one writer.
//!
//! Answered-but-unwritten outcomes are what a kill -9 turns into repeated requests: at most
//! `worker.concurrency` in workers plus `worker.batch_size` in this channel plus the batches
//! being written (one on SQLite, two on PostgreSQL).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::held::Held;
use super::outage::{Backoff, Outage};
use crate::metrics::Metrics;
use crate::store::{OutcomeWrite, Store};

/// How long a partial batch waits for company before it is written.
const FLUSH_AFTER: Duration = Duration::from_millis(20);
/// After the grace: how long what is left may still take to be written, all batches together.
const LAST_CHANCE: Duration = Duration::from_millis(750);
/// Waits between retries of a batch while the database is away: the first and the most.
const WRITE_BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// The receiving end, shared: a writer holds it while it collects a batch, not while it writes.
type Outcomes = Arc<Mutex<mpsc::Receiver<OutcomeWrite>>>;

/// The writer task and what it needs.
#[derive(Clone)]
pub struct Writer {
    pub store: Store,
    pub instance_id: String,
    pub batch_size: usize,
    pub metrics: Arc<Metrics>,
    /// Fired when shutdown can wait no longer: a batch the database still refuses is then
    /// dropped (its rows come free when their leases run out) instead of holding the exit.
    pub give_up: CancellationToken,
    /// Rows claimed and not yet written back; a batch leaves it once written or given up on.
    pub held: Arc<Held>,
    /// Outcomes given up on at shutdown (their rows come free when the leases run out).
    pub dropped: Arc<AtomicU64>,
    /// When the last try after `give_up` ends, set when it first fires; shared by the writers.
    pub last_chance: Arc<std::sync::OnceLock<tokio::time::Instant>>,
}

impl Writer {
    /// Starts the writers; the handle ends when every sender is dropped and the last batch is
    /// written (or given up).
    pub fn spawn(self) -> (mpsc::Sender<OutcomeWrite>, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(self.batch_size);
        let rx: Outcomes = Arc::new(Mutex::new(rx));
        // One outage, reported once, whichever writer meets it first.
        let outage = Arc::new(Outage::new(
            "database unavailable: holding outcomes and retrying",
            "database is back: held outcomes written",
        ));
        let writers: Vec<_> = (0..self.store.outcome_writers())
            .map(|_| tokio::spawn(self.clone().write_batches(rx.clone(), outage.clone())))
            .collect();
        let all = tokio::spawn(async move {
            for writer in writers {
                writer.await.ok();
            }
        });
        (tx, all)
    }

    async fn write_batches(self, rx: Outcomes, outage: Arc<Outage>) {
        let mut batch = Vec::with_capacity(self.batch_size);
        loop {
            {
                let mut rx = rx.lock().await;
                if rx.recv_many(&mut batch, self.batch_size).await == 0 {
                    return;
                }
                let deadline = tokio::time::Instant::now() + FLUSH_AFTER;
                while batch.len() < self.batch_size {
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some(outcome)) => batch.push(outcome),
                        _ => break,
                    }
                }
            }
            self.write(&batch, &outage).await;
            self.held.remove(batch.iter().map(OutcomeWrite::id));
            batch.clear();
        }
    }

    /// Writes one batch, retrying while the database is away. `outage` is shared by the
    /// writers, so an outage is reported once, not once per batch or per writer. Once `give_up`
    /// fires, what is left gets one last bounded try (`LAST_CHANCE` from that moment, shared by
    /// every batch): the rows released at the end of the grace are written when the database
    /// answers, and dropped, counted, when it does not.
    async fn write(&self, batch: &[OutcomeWrite], outage: &Outage) {
        let mut backoff = Backoff::new(WRITE_BACKOFF.0, WRITE_BACKOFF.1);
        loop {
            let attempt = self.store.write_outcomes(&self.instance_id, batch);
            let written = if self.give_up.is_cancelled() {
                let until = *self
                    .last_chance
                    .get_or_init(|| tokio::time::Instant::now() + LAST_CHANCE);
                match tokio::time::timeout_at(until, attempt).await {
                    Ok(Ok(written)) => Ok(written),
                    Ok(Err(e)) => Err(Some(e)),
                    Err(_) => Err(None),
                }
            } else {
                tokio::select! {
                    written = attempt => written.map_err(Some),
                    // The grace ran out mid-statement: try again, as the last chance.
                    _ = self.give_up.cancelled() => continue,
                }
            };
            match written {
                Ok(written) => {
                    outage.succeeded();
                    let lost = batch.len() as u64 - written.min(batch.len() as u64);
                    if lost > 0 {
                        self.metrics.lost_leases(lost);
                        tracing::warn!(lost, "outcomes not written: another worker took over those rows");
                    }
                    return;
                }
                Err(e) if self.give_up.is_cancelled() => {
                    self.dropped.fetch_add(batch.len() as u64, Ordering::Relaxed);
                    let error = e.map_or_else(|| "no answer in time".to_owned(), |e| format!("{e:#}"));
                    tracing::error!(
                        dropped = batch.len(),
                        error,
                        "shutting down with outcomes the database has not taken: not written; \
                         their rows will be tried again when their leases run out"
                    );
                    return;
                }
                Err(e) => {
                    if let Some(e) = e {
                        outage.failed(&e);
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff.next_wait()) => {}
                        _ = self.give_up.cancelled() => {}
                    }
                }
            }
        }
    }
}
