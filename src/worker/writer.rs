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
//!
//! At full speed a batch fills in milliseconds. At the API's pace (a rate limit of 10 or 200/s)
//! outcomes come one at a time, and a batch of one costs a whole transaction: on SQLite five
//! hand-overs to its thread and back (acquire, BEGIN, UPDATE, COMMIT, release), ten wake-ups in
//! all, against two or three for the deletion itself. So a partial batch waits for company in
//! proportion to the pace (`Pace`): about `COMPANY` outcomes' time, never more than
//! `LINGER.1`. The wait changes when outcomes are written, not how many can be unwritten: a
//! batch still holds at most `worker.batch_size`, so the crash bound above stands, and at the
//! pace it is about `COMPANY` rows.

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

/// A partial batch waits about this many outcomes' time (at the pace of the last batches) for
/// company before it is written.
const COMPANY: u32 = 32;
/// How long a partial batch waits for company: the least (full speed, or a pace not known yet)
/// and the most (a slow pace: at 20/s it gathers about twenty, at 10/s about ten). A batch is
/// one write transaction, several hand-overs to the database; at 20/s a second's outcomes in
/// one cost less than a tenth of the deletions' own CPU. A kill -9 loses what the batch holds.
const LINGER: (Duration, Duration) = (Duration::from_millis(20), Duration::from_secs(1));
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
        let mut pace = Pace::new(tokio::time::Instant::now());
        loop {
            {
                let mut rx = rx.lock().await;
                if rx.recv_many(&mut batch, self.batch_size).await == 0 {
                    return;
                }
                let deadline = tokio::time::Instant::now() + pace.linger();
                while batch.len() < self.batch_size {
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some(outcome)) => batch.push(outcome),
                        _ => break,
                    }
                }
                pace.collected(batch.len(), tokio::time::Instant::now());
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

/// The pace at which outcomes arrive, from the batches collected so far: what a partial batch's
/// wait for company is measured in. Each batch's gap is the time since the previous batch was
/// collected (its write included) over its outcomes, smoothed over the last few batches.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    gap: Duration,
    last: tokio::time::Instant,
}

impl Pace {
    pub fn new(now: tokio::time::Instant) -> Self {
        Self {
            gap: Duration::ZERO,
            last: now,
        }
    }

    /// How long the next partial batch waits for company.
    pub fn linger(&self) -> Duration {
        (self.gap * COMPANY).clamp(LINGER.0, LINGER.1)
    }

    /// A batch of `outcomes` was collected at `now`.
    pub fn collected(&mut self, outcomes: usize, now: tokio::time::Instant) {
        let outcomes = u32::try_from(outcomes.max(1)).unwrap_or(u32::MAX);
        // A pause (429, an outage) makes one huge gap: counted as twice the gap that gives the
        // longest wait (so a slow pace reaches that wait), which the smoothing forgets within a
        // few batches.
        let gap = (now.saturating_duration_since(self.last) / outcomes).min(2 * LINGER.1 / COMPANY);
        self.gap = (self.gap + gap) / 2;
        self.last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Collects `batches` batches at `per_second`, each as big as `linger` lets it grow.
    fn paced(per_second: f64, batch_size: usize, batches: usize) -> Pace {
        let start = tokio::time::Instant::now();
        let mut pace = Pace::new(start);
        let mut now = start;
        for _ in 0..batches {
            let gap = Duration::from_secs_f64(1.0 / per_second);
            // The first outcome after a gap, then what arrives within the wait (or a full batch).
            let company = (pace.linger().as_secs_f64() * per_second) as usize;
            let outcomes = (1 + company).min(batch_size);
            now += gap + gap * (outcomes as u32 - 1);
            pace.collected(outcomes, now);
        }
        pace
    }

    #[test]
    fn at_full_speed_a_partial_batch_waits_the_least() {
        assert_eq!(paced(40_000.0, 256, 20).linger(), LINGER.0);
    }

    #[test]
    fn at_two_hundred_a_second_a_batch_waits_for_about_thirty_two_outcomes() {
        let linger = paced(200.0, 256, 20).linger();
        let gathered = linger.as_secs_f64() * 200.0;
        assert!((24.0..=40.0).contains(&gathered), "{linger:?} gathers {gathered}");
    }

    #[test]
    fn at_a_slow_pace_the_wait_is_capped() {
        assert_eq!(paced(10.0, 64, 20).linger(), LINGER.1);
        assert_eq!(paced(20.0, 64, 20).linger(), LINGER.1);
    }

    #[test]
    fn a_long_pause_is_forgotten_within_a_few_batches() {
        let start = tokio::time::Instant::now();
        let mut pace = Pace::new(start);
        let mut now = start + Duration::from_secs(300);
        pace.collected(1, now);
        assert_eq!(pace.linger(), LINGER.1);
        for _ in 0..12 {
            now += Duration::from_millis(6);
            pace.collected(256, now);
        }
        assert_eq!(pace.linger(), LINGER.0);
    }
}
