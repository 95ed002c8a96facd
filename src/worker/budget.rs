//! The cluster's request budget as this process spends it. Send times are reserved from the
//! database's budget row (`store::budget`, a GCRA shared by every replica) a few at a time, about
//! `RESERVE_AHEAD` of the budget, and each worker waits for its own send time. The cluster's
//! pause comes back with every reservation, so every busy replica stops within one reservation
//! of another replica's 429, spent quota or rejected key, and only one probe, for the whole
//! cluster, tests whether it is over.
//!
//! While the database cannot be reached, no send times are handed out: a replica sends at most
//! the ones it already holds (`RESERVE_AHEAD`), never on stale budget.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::gate::{Gate, Reopen};
use super::grouping::SendGrid;
use super::limiter::Limiter;
use super::outage::{Backoff, Outage};
use crate::health::{AccountPause, Health};
use crate::metrics::Metrics;
use crate::outcome::AnswerClass;
use crate::store::Store;
use crate::store::budget::{BudgetReport, Pause, PauseRequest, Reservation, ReserveRequest};

/// How much of the budget one reservation takes at most (at least one send time, and no more
/// than the workers waiting): few statements per second even at low rates (at 10/s a busy
/// replica reserves about twice a second, not five times), and at most this much budget stranded
/// by a replica that dies holding it.
pub const RESERVE_AHEAD: Duration = Duration::from_millis(500);
/// Send times one reservation takes per worker waiting (within `chunk`): the waiting workers'
/// and the next few rounds'. Each reservation is a transaction on the budget row; at full speed
/// one per pool's worth was most of PostgreSQL's statements. A replica whose work ends leaves
/// the rest unused (at most `chunk`, 500 ms of budget, as before).
const PER_WAITING: u32 = 4;
/// Most send times one reservation holds, whatever the rate.
const MOST_PER_RESERVATION: u32 = 1_000;
/// How much smaller than the burst the budget's tolerance is: sends this much later than their
/// time (on our side and on the way to the API together) still keep every one-second window in
/// budget.
pub const LATE_SLACK: Duration = Duration::from_millis(100);
/// A send time this late on our side is not used (dropped, a new one taken): half the slack,
/// the other half is left for the network and the API's side.
pub const LATE_DROP: Duration = Duration::from_millis(50);
/// While the cluster waits for another replica's probe, how often a waiting replica asks again.
const PROBE_WAIT: Duration = Duration::from_millis(500);
/// Longest a pause seen in the database closes this process's gate before it asks again.
const PAUSE_RECHECK: Duration = Duration::from_secs(5);

/// What a worker may do after asking the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ticket {
    /// Its send time.
    Send(Instant),
    /// Its send time, and its request is the cluster's probe of a pause.
    Probe(Instant),
    /// No send time: the cluster is paused (the gate is closed) or the database is unreachable.
    Wait,
}

pub struct Budget {
    store: Store,
    instance_id: String,
    rate_per_second: u32,
    burst: u32,
    probe_lease: Duration,
    /// Send times this process holds, in order, on its own clock.
    slots: Mutex<VecDeque<Instant>>,
    /// One reservation at a time; the other workers wait for its send times.
    turn: tokio::sync::Mutex<()>,
    /// Workers waiting for a send time or for the one they hold: the size of the next
    /// reservation (send times a worker does not take wait in `slots` for the next one).
    waiting: AtomicUsize,
    /// Whether this process holds the cluster's probe.
    holds_probe: AtomicBool,
    /// No reservation has succeeded yet: the first may probe a quota or key pause at once.
    fresh: AtomicBool,
    /// Whether readiness shows a pause this replica learned from the database (so the database
    /// ending it ends it here too).
    pause_from_cluster: AtomicBool,
    /// The process's own ceiling at the budget's rate and burst (governor): a budget row edited
    /// by hand, or replicas configured differently, cannot make this process exceed it.
    ceiling: Limiter,
    /// Where send times are rounded up to at the API's pace, and what that costs the budget.
    grid: SendGrid,
    unreachable: Outage,
    backoff: Mutex<Backoff>,
    gate: Arc<Gate>,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
}

/// How `Budget::new` is configured.
pub struct BudgetConfig {
    pub rate_per_second: u32,
    pub burst: u32,
    /// How long the cluster's probe may stay out (the request timeout and a margin).
    pub probe_lease: Duration,
    /// The workers that wait for send times (the grid's step is bounded by what they hold).
    pub concurrency: u32,
}

impl Budget {
    pub fn new(
        store: Store,
        instance_id: String,
        config: BudgetConfig,
        gate: Arc<Gate>,
        health: Arc<Health>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            store,
            instance_id,
            rate_per_second: config.rate_per_second,
            burst: config.burst,
            probe_lease: config.probe_lease,
            slots: Mutex::default(),
            turn: tokio::sync::Mutex::new(()),
            waiting: AtomicUsize::new(0),
            holds_probe: AtomicBool::new(false),
            fresh: AtomicBool::new(true),
            pause_from_cluster: AtomicBool::new(false),
            ceiling: Limiter::new(config.rate_per_second, config.burst),
            grid: SendGrid::new(config.rate_per_second, config.burst, config.concurrency),
            unreachable: Outage::new(
                "could not reserve send times from the cluster's budget: no requests are sent until the database answers",
                "send times reserved again; requests resume",
            ),
            backoff: Mutex::new(Backoff::new(Duration::from_millis(250), Duration::from_secs(2))),
            gate,
            health,
            metrics,
        }
    }

    pub fn rate_per_second(&self) -> u32 {
        self.rate_per_second
    }

    /// When sends go (their send times rounded up to the grid) and how late one may still go.
    pub fn grid(&self) -> &SendGrid {
        &self.grid
    }

    /// The budget's burst tolerance (what a pause's end or a probe's success resumes behind, so
    /// the budget resumes paced, not with a burst on top of the API's limit).
    fn tolerance_us(&self) -> i64 {
        i64::from(self.burst.max(1) - 1) * (1_000_000 / i64::from(self.rate_per_second.max(1)))
    }

    /// The most send times one reservation takes: `RESERVE_AHEAD` of the budget, or one step of
    /// the send grid when that is longer (one reservation a send group, not two).
    fn chunk(&self) -> u32 {
        let ahead = f64::from(self.rate_per_second) * RESERVE_AHEAD.max(self.grid.step()).as_secs_f64();
        (ahead.ceil() as u32).clamp(1, MOST_PER_RESERVATION)
    }

    /// This worker's next send time (not yet come: the caller waits for it, and checks its row
    /// meanwhile). Cancel-safe: a send time dropped unused is wasted budget, never budget spent
    /// twice.
    pub async fn next_send_time(&self) -> Ticket {
        loop {
            if let Some(at) = self.take_slot() {
                return Ticket::Send(at);
            }
            let _turn = self.turn.lock().await;
            if !self.slots.lock().expect("budget slots").is_empty() {
                continue;
            }
            if let Some(ticket) = self.reserve().await {
                return ticket;
            }
        }
    }

    /// Counts the calling worker as waiting until the guard is dropped.
    pub fn waiting(&self) -> Waiting<'_> {
        self.waiting.fetch_add(1, Relaxed);
        Waiting(&self.waiting)
    }

    /// The process's own ceiling (at once, unless the budget row was tampered with).
    pub async fn ceiling(&self) {
        self.ceiling.until_ready().await;
    }

    /// The next send time not already too late.
    fn take_slot(&self) -> Option<Instant> {
        let mut slots = self.slots.lock().expect("budget slots");
        let now = Instant::now();
        while let Some(at) = slots.pop_front() {
            if now.saturating_duration_since(at) <= self.grid.late_allowance() {
                return Some(at);
            }
        }
        None
    }

    /// One reservation; `None` when it brought send times (the caller takes one), else the
    /// ticket to return.
    async fn reserve(&self) -> Option<Ticket> {
        let want = u32::try_from(self.waiting.load(Relaxed))
            .unwrap_or(u32::MAX)
            .saturating_mul(PER_WAITING)
            .clamp(1, self.chunk());
        let request = ReserveRequest {
            instance_id: &self.instance_id,
            want,
            rate_per_second: self.rate_per_second,
            burst: self.burst,
            late_slack_us: self.grid.late_slack().as_micros() as i64,
            probe_lease_us: self.probe_lease.as_micros() as i64,
            fresh: self.fresh.load(Relaxed),
        };
        let reservation = match self.store.reserve(&request).await {
            Ok(reservation) => {
                // A fresh process stays fresh until its probe is answered (`pause`, `end_probe`).
                if !matches!(reservation, Reservation::Probe { .. }) {
                    self.fresh.store(false, Relaxed);
                }
                self.unreachable.succeeded();
                self.backoff.lock().expect("budget backoff").reset();
                reservation
            }
            Err(e) => {
                self.unreachable.failed(&e);
                let wait = self.backoff.lock().expect("budget backoff").next_wait();
                tokio::time::sleep(wait).await;
                return Some(Ticket::Wait);
            }
        };
        // The database's clock was read before the read's answer arrived here (`read_at`): counted
        // from that arrival, a send time is never earlier than the budget says, and late by at
        // most the read's round trip (within `LATE_DROP`).
        let received = Instant::now();
        let local = |now_us: i64, read_at: Option<std::time::Instant>, at_us: i64| {
            let base = read_at.map_or(received, Instant::from_std);
            base + Duration::from_micros(u64::try_from(at_us - now_us).unwrap_or(0))
        };
        match reservation {
            Reservation::Slots { now_us, read_at, at_us } => {
                self.metrics.budget_reserved(at_us.len() as u64);
                self.cluster_open(true);
                let mut slots = self.slots.lock().expect("budget slots");
                slots.extend(at_us.into_iter().map(|at| local(now_us, read_at, at)));
                None
            }
            Reservation::Probe { now_us, read_at, at_us } => {
                self.metrics.budget_reserved(1);
                self.holds_probe.store(true, Relaxed);
                tracing::info!("this replica sends the cluster's probe: is the pause over?");
                Some(Ticket::Probe(local(now_us, read_at, at_us)))
            }
            Reservation::Paused(pause) => {
                self.cluster_paused(&pause);
                Some(Ticket::Wait)
            }
        }
    }

    /// The database says the cluster is paused: close this process's gate until it is worth
    /// asking again, and let readiness and `run --once` see an account pause.
    fn cluster_paused(&self, pause: &Pause) {
        self.show_pause(pause);
        let left = (pause.until - chrono::Utc::now()).to_std().unwrap_or_default();
        let wait = if left.is_zero() {
            PROBE_WAIT
        } else {
            left.min(PAUSE_RECHECK)
        };
        if self.gate.close_for(wait, Reopen::AtDeadline) && pause.paused_by.as_deref() != Some(&self.instance_id) {
            tracing::info!(
                reason = pause.reason,
                until = %pause.until.to_rfc3339(),
                paused_by = pause.paused_by.as_deref(),
                probing = pause.probing,
                "the cluster is paused (another replica's answer): this replica waits too"
            );
        }
    }

    /// Readiness and the metrics show the cluster's pause. Readiness not yet in a fresh process:
    /// its own first request tests the key and the quota (they may have been fixed).
    fn show_pause(&self, pause: &Pause) {
        self.metrics.set_cluster_pause(Some((&pause.reason, pause.until)));
        self.health.set_cluster_pause(Some((pause.reason.clone(), pause.until)));
        if self.fresh.load(Relaxed) {
            return;
        }
        let account = match pause.reason.as_str() {
            "key_rejected" => Some(AccountPause::KeyRejected),
            "quota_exhausted" => Some(AccountPause::QuotaSpent),
            _ => None,
        };
        if let Some(account) = account
            && self.health.account_pause() != Some(account)
        {
            self.pause_from_cluster.store(true, Relaxed);
            self.health.set_account_pause(Some(account));
            self.health.set_key_rejected(account == AccountPause::KeyRejected);
        }
    }

    /// A reservation succeeded: whatever pause this process knew of is over for the cluster.
    fn cluster_open(&self, log: bool) {
        self.metrics.set_cluster_pause(None);
        self.health.set_cluster_pause(None);
        if self.health.account_pause().is_some() {
            self.pause_from_cluster.store(false, Relaxed);
            self.health.set_account_pause(None);
            self.health.set_key_rejected(false);
            if log {
                tracing::info!("the cluster's pause is over; this replica resumes");
            }
        }
    }

    /// The heartbeat's look at the budget row: how a replica with nothing to send learns of the
    /// cluster's pause, and of its end.
    pub fn observe(&self, report: &BudgetReport) {
        match &report.pause {
            Some(pause) => self.show_pause(pause),
            None => {
                self.metrics.set_cluster_pause(None);
                self.health.set_cluster_pause(None);
                if self.pause_from_cluster.swap(false, Relaxed) {
                    self.health.set_account_pause(None);
                    self.health.set_key_rejected(false);
                }
            }
        }
    }

    /// Pauses the whole cluster for an answer this process got. Returns whether the cluster
    /// was not paused before (so the pause is logged once, by the replica that began it).
    /// When the database cannot be reached, this process's gate still holds the pause.
    pub async fn pause(
        &self,
        reason: AnswerClass,
        wait: Duration,
        reopen: Reopen,
        http_status: Option<u16>,
        api_code: Option<i64>,
    ) -> bool {
        self.fresh.store(false, Relaxed);
        self.holds_probe.store(false, Relaxed);
        let request = PauseRequest {
            instance_id: &self.instance_id,
            reason,
            wait_us: wait.as_micros() as i64,
            probe: reopen == Reopen::WithProbe,
            http_status,
            api_code,
            tolerance_us: self.tolerance_us(),
        };
        self.slots.lock().expect("budget slots").clear();
        let until = chrono::Utc::now() + crate::store::chrono_duration(wait);
        self.metrics.set_cluster_pause(Some((reason.label(), until)));
        self.health.set_cluster_pause(Some((reason.label().to_owned(), until)));
        match self.store.record_pause(&request).await {
            Ok(news) => news,
            Err(e) => {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "could not record the pause for the other replicas; this replica pauses alone"
                );
                true
            }
        }
    }

    /// The probe this process sent got an answer that asked for no pause (`true`), or got no
    /// answer at all / was abandoned (`false`, the next replica may probe). Returns whether the
    /// cluster's pause ended with it.
    pub async fn end_probe(&self, succeeded: bool) -> bool {
        // One probe through a pause per start, answered or not.
        self.fresh.store(false, Relaxed);
        if !self.holds_probe.swap(false, Relaxed) {
            return false;
        }
        match self
            .store
            .end_probe(&self.instance_id, succeeded, self.tolerance_us())
            .await
        {
            Ok(ended) => ended && succeeded,
            Err(e) => {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "could not record the probe's answer; the other replicas wait for its lease to run out"
                );
                false
            }
        }
    }
}

/// Counts a worker as waiting for a send time, from asking until it sends (or gives up): how
/// many send times the next reservation takes.
pub struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}
