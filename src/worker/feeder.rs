//! The feeder: keeps a short queue of claimed rows topped up for the workers, a whole claim at a
//! time, and naps when nothing is due. Its states are named (`FeedState`) and move by one
//! transition function (`FeedState::after`) that tests drive directly; `Feeder::claim_once` is
//! the one unit of work, returning a `ClaimOutcome`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::held::Held;
use super::outage::{Backoff, Outage};
use super::{Gate, RunMode, Tick};
use crate::clock::Clock;
use crate::config::WorkerConfig;
use crate::metrics::Metrics;
use crate::outcome::DeletionOutcome;
use crate::store::{ClaimRequest, ClaimedRow, Store};

/// How long the feeder waits after a failed claim before trying again: the first and the most.
/// (The wait never exceeds `worker.poll_interval`: see `Feeder::run`.)
const CLAIM_BACKOFF: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(10));

/// How big the queue of claimed rows is, and how much one claim takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSizing {
    /// Rows the queue holds at most: two claims, so one can be claimed while the workers still
    /// have the other to go on, but no more than a second's worth of the rate limit (queued rows
    /// hold leases other replicas could use).
    pub capacity: usize,
    /// Rows per claim: a batch; when the rate limit keeps the queue short, the whole queue (a
    /// second's worth, claimed once it is empty: the rows the workers hold wait for their send
    /// times meanwhile, so nobody waits for the claim, and it is one claim a second, not two).
    pub claim_size: usize,
}

impl QueueSizing {
    pub fn new(batch_size: u32, rate_per_second: u32) -> Self {
        let (batch, rate) = (batch_size.max(1) as usize, rate_per_second.max(1) as usize);
        let capacity = (2 * batch).min(rate);
        let claim_size = if capacity < 2 * batch {
            batch.min(capacity)
        } else {
            batch
        };
        Self { capacity, claim_size }
    }

    /// The feeder claims again once the queue is down to this many rows (a whole claim fits).
    pub fn claim_when_at(self) -> usize {
        self.capacity - self.claim_size
    }
}

/// Wakes the feeder when the workers have drained the queue to where a claim fits.
#[derive(Clone)]
pub struct RoomSignal {
    pub notify: Arc<Notify>,
    pub sizing: QueueSizing,
}

impl RoomSignal {
    /// Called by a worker after taking a row; `left` rows are still queued.
    pub fn taken(&self, left: usize) {
        if left <= self.sizing.claim_when_at() {
            self.notify.notify_one();
        }
    }
}

/// What one claim gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// As many rows as asked for: more may be due.
    Full,
    /// Fewer rows than asked for, but some: nothing more is due now.
    Drained,
    /// No row, although one looked due (e.g. one only its own lease holds).
    Nothing,
    /// The database failed the claim (logged once per outage by the feeder).
    Failed,
    /// Every worker is gone: nothing can take the rows.
    WorkersGone,
}

/// Where the feeder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedState {
    /// Claim as soon as the queue has room for a whole claim.
    Claiming,
    /// Nothing due at the last claim: ask for the next due time once per poll and nap until then.
    /// `found_nothing` means the last claim came back empty, so the next waits at least a tick.
    Idle { found_nothing: bool },
    /// The last claim failed: wait out the backoff, then claim again.
    Outage,
    /// `run --once` has claimed everything that was due at its start (or no worker is left).
    Done,
}

impl FeedState {
    /// The one transition function: where a claim's outcome leads in `mode`.
    pub fn after(outcome: ClaimOutcome, mode: RunMode) -> FeedState {
        match (outcome, mode) {
            (ClaimOutcome::Full, _) => FeedState::Claiming,
            (ClaimOutcome::Failed, _) => FeedState::Outage,
            (ClaimOutcome::WorkersGone, _) => FeedState::Done,
            // Everything due at the start is claimed; later retries wait for the next run.
            (ClaimOutcome::Drained | ClaimOutcome::Nothing, RunMode::Once) => FeedState::Done,
            (ClaimOutcome::Drained, RunMode::Daemon) => FeedState::Idle { found_nothing: false },
            (ClaimOutcome::Nothing, RunMode::Daemon) => FeedState::Idle { found_nothing: true },
        }
    }
}

/// The feeder and what it needs.
pub struct Feeder<'a> {
    pub store: &'a Store,
    pub instance_id: &'a str,
    pub worker: &'a WorkerConfig,
    pub gate: &'a Gate,
    pub clock: &'a Clock,
    pub metrics: &'a Metrics,
    pub held: &'a Held,
    pub tick: &'a Tick,
    pub queue: flume::Sender<ClaimedRow>,
    pub room: RoomSignal,
    pub mode: RunMode,
    /// `run --once` takes the rows due at its start, not those that become due while it runs.
    pub started: chrono::DateTime<chrono::Utc>,
    /// `run --once` gives up on a database unreachable for this long; the daemon never does.
    pub give_up_after: Option<Duration>,
}

/// Why the feeder stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedEnd {
    /// Everything due is claimed (`run --once`), or no worker is left.
    Done,
    /// Shutdown came first.
    Stopped,
    /// `run --once`: the database stayed unreachable for `database.connect_timeout`.
    DatabaseUnavailable,
}

impl Feeder<'_> {
    /// Runs the state machine until `Done` or shutdown.
    pub async fn run(self, shutdown: &CancellationToken) -> FeedEnd {
        let outage = Outage::new(
            "database unavailable: claiming stops until it is back",
            "database is back: claiming resumes",
        );
        let mut backoff = Backoff::new(CLAIM_BACKOFF.0, CLAIM_BACKOFF.1);
        let mut state = FeedState::Claiming;
        let mut unreachable_since: Option<Instant> = None;
        loop {
            if state == FeedState::Outage {
                let since = *unreachable_since.get_or_insert_with(Instant::now);
                if self.give_up_after.is_some_and(|limit| since.elapsed() >= limit) {
                    return FeedEnd::DatabaseUnavailable;
                }
            } else {
                unreachable_since = None;
            }
            let waited = match state {
                FeedState::Done => return FeedEnd::Done,
                // Never longer than an idle poll: a database that is back (a file put back in
                // place) is used again within a poll interval.
                FeedState::Outage => {
                    let wait = backoff.next_wait().min(self.worker.poll_interval);
                    self.nap_until(Instant::now() + wait, shutdown).await
                }
                FeedState::Idle { found_nothing } => match self.due_now(found_nothing, shutdown).await {
                    Some(true) => true,
                    Some(false) => continue,
                    None => false,
                },
                FeedState::Claiming => true,
            };
            if !waited || !self.until_room(shutdown).await || !self.until_gate_opens(shutdown).await {
                return FeedEnd::Stopped;
            }
            // A claim blocked by the database (a lock, an outage) must not hold up shutdown: the
            // claim is abandoned (a lease it may have taken runs out by itself).
            let outcome = tokio::select! {
                outcome = self.claim_once(&outage) => outcome,
                _ = shutdown.cancelled() => return FeedEnd::Stopped,
            };
            if outcome != ClaimOutcome::Failed {
                backoff.reset();
            }
            state = FeedState::after(outcome, self.mode);
        }
    }

    /// One claim of up to a claim's worth of due rows, queued for the workers.
    pub async fn claim_once(&self, outage: &Outage) -> ClaimOutcome {
        let limit = self.room.sizing.claim_size;
        let now = self.clock.now();
        let request = ClaimRequest {
            instance_id: self.instance_id,
            now,
            lease: self.worker.lease,
            due_by: if self.mode == RunMode::Once { self.started } else { now },
            stale_after: self.worker.stale_after,
            limit: limit as u32,
        };
        let claimed = match self.store.claim(&request).await {
            Ok(claimed) => claimed,
            Err(e) => {
                outage.failed(&e);
                return ClaimOutcome::Failed;
            }
        };
        outage.succeeded();
        for aside in &claimed.set_aside {
            // One line per row; the row is final (`invalid`), so it is never read again.
            tracing::warn!(row_id = aside.id.get(), problem = %aside.problem,
                "row set aside as invalid: a column holds a value the daemon cannot use");
            self.metrics.deletion(DeletionOutcome::Invalid);
        }
        let taken = claimed.rows.len() + claimed.set_aside.len();
        self.held.add(claimed.rows.iter().map(|row| row.id));
        for row in claimed.rows {
            if row.taken_over {
                self.metrics.takeover();
            }
            // Only the feeder adds to the queue and it claimed no more than the free room,
            // so this never waits; it fails only if every worker is gone.
            if self.queue.try_send(row).is_err() {
                return ClaimOutcome::WorkersGone;
            }
        }
        match taken {
            0 => ClaimOutcome::Nothing,
            n if n == limit => ClaimOutcome::Full,
            _ => ClaimOutcome::Drained,
        }
    }

    /// Waits until a whole claim fits in the queue; false on shutdown. Turns the loop every tick
    /// while the workers are busy.
    async fn until_room(&self, shutdown: &CancellationToken) -> bool {
        loop {
            self.tick.turn();
            if shutdown.is_cancelled() {
                return false;
            }
            if self.queue.len() <= self.room.sizing.claim_when_at() {
                return true;
            }
            tokio::select! {
                _ = self.room.notify.notified() => {}
                _ = shutdown.cancelled() => return false,
                _ = tokio::time::sleep(super::TICK) => {}
            }
        }
    }

    /// No point leasing rows the pool may not send yet: waits while the gate is closed.
    async fn until_gate_opens(&self, shutdown: &CancellationToken) -> bool {
        match self.gate.closed_until() {
            Some(until) => self.nap_until(until, shutdown).await,
            None => true,
        }
    }

    /// Sleeps until `until` in turns of at most a tick; false when shutdown came first.
    async fn nap_until(&self, until: Instant, shutdown: &CancellationToken) -> bool {
        loop {
            self.tick.turn();
            let now = Instant::now();
            if now >= until {
                return !shutdown.is_cancelled();
            }
            tokio::select! {
                _ = tokio::time::sleep_until(until.min(now + super::TICK)) => {}
                _ = shutdown.cancelled() => return false,
            }
        }
    }

    /// One query for the earliest due row: `Some(true)` if something is due now, otherwise a nap
    /// until it is due (at most the poll interval) and `Some(false)`; `None` when shutdown came
    /// first. An idle daemon thus makes one query per poll interval and no claim at all.
    async fn due_now(&self, found_nothing: bool, shutdown: &CancellationToken) -> Option<bool> {
        let poll = self.worker.poll_interval;
        let next = tokio::select! {
            next = self.store.next_due(self.worker.stale_after) => next,
            _ = shutdown.cancelled() => return None,
        };
        let due_in = match next {
            Ok(Some(due)) => Some((due - self.clock.now()).to_std().unwrap_or(Duration::ZERO)),
            Ok(None) => None,
            // Claim now: the claim round reports an outage once (a warning here would repeat
            // every poll) and backs off.
            Err(e) => {
                tracing::debug!(error = format!("{e:#}"), "could not look up the next due session");
                Some(Duration::ZERO)
            }
        };
        // After a claim that found nothing, wait at least a tick before the next one.
        let floor = if found_nothing {
            super::TICK.min(poll)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_claim_claims_again_and_a_short_one_goes_idle_or_ends_a_single_pass() {
        use ClaimOutcome::*;
        assert_eq!(FeedState::after(Full, RunMode::Daemon), FeedState::Claiming);
        assert_eq!(FeedState::after(Full, RunMode::Once), FeedState::Claiming);
        assert_eq!(
            FeedState::after(Drained, RunMode::Daemon),
            FeedState::Idle { found_nothing: false }
        );
        assert_eq!(
            FeedState::after(Nothing, RunMode::Daemon),
            FeedState::Idle { found_nothing: true }
        );
        assert_eq!(FeedState::after(Drained, RunMode::Once), FeedState::Done);
        assert_eq!(FeedState::after(Nothing, RunMode::Once), FeedState::Done);
        assert_eq!(FeedState::after(Failed, RunMode::Once), FeedState::Outage);
        assert_eq!(FeedState::after(WorkersGone, RunMode::Daemon), FeedState::Done);
    }

    #[test]
    fn the_queue_holds_two_claims_but_at_most_a_second_of_the_rate_limit() {
        assert_eq!(
            QueueSizing::new(256, 10_000),
            QueueSizing {
                capacity: 512,
                claim_size: 256
            }
        );
        let slow = QueueSizing::new(256, 10);
        assert_eq!((slow.capacity, slow.claim_size, slow.claim_when_at()), (10, 10, 0));
        let paced = QueueSizing::new(256, 300);
        assert_eq!(
            (paced.capacity, paced.claim_size, paced.claim_when_at()),
            (300, 256, 44)
        );
        assert_eq!(QueueSizing::new(1, 1).claim_size, 1);
    }
}
