//! The pool's stop sign. A 429, a spent quota or a rejected key stops every worker, not just the
//! one that saw it: the rows are not at fault, the account is.
//!
//! After a 429 the gate simply reopens when the `Retry-After` window ends. After a quota or key
//! problem it reopens for one probe request only; the rest wait until that probe is answered
//! without a pause, so a broken key costs one call per pause, not one per worker.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How a worker was let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    Open,
    /// The one request that tests whether a quota or key pause is over.
    Probe,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reopen {
    /// Everyone may go when the time is up (429).
    AtDeadline,
    /// One probe goes when the time is up; everyone else waits for its answer.
    WithProbe,
}

#[derive(Debug, Default)]
struct Closed {
    until: Option<Instant>,
    probe: bool,
    probing: bool,
    /// The probe is a fresh process's first request, not a pause's: a pause it meets is news.
    first: bool,
}

#[derive(Debug, Default)]
pub struct Gate {
    closed: Mutex<Closed>,
    /// Wakes waiters when a probe succeeds (the gate opens before its deadline would say).
    opened: Notify,
}

/// Longest a waiter sleeps between looks at the gate while a probe is out.
const PROBE_POLL: Duration = Duration::from_millis(50);

impl Gate {
    /// A gate whose first request goes alone: a fresh process tests the key and the quota with
    /// one request before its whole pool follows.
    pub fn behind_probe() -> Self {
        Self {
            closed: Mutex::new(Closed {
                until: None,
                probe: true,
                probing: false,
                first: true,
            }),
            opened: Notify::new(),
        }
    }

    /// Closes the gate for at least `wait`. Returns true if it was open before (so the caller
    /// logs the pause once, not once per worker).
    pub fn close_for(&self, wait: Duration, reopen: Reopen) -> bool {
        let mut closed = self.closed.lock().expect("gate lock");
        let was_open = closed.until.is_none_or(|until| until <= Instant::now()) && (!closed.probe || closed.first);
        closed.first = false;
        let until = Instant::now() + wait;
        if closed.until.is_none_or(|current| current < until) {
            closed.until = Some(until);
        }
        closed.probe |= reopen == Reopen::WithProbe;
        closed.probing = false;
        was_open
    }

    /// The probe's answer did not ask for a pause: everyone may go again.
    pub fn probe_succeeded(&self) {
        let mut closed = self.closed.lock().expect("gate lock");
        *closed = Closed::default();
        drop(closed);
        self.opened.notify_waiters();
    }

    /// Whether a request admitted with `pass` may still go (the gate may have closed while the
    /// worker waited for the rate limiter).
    pub fn still_allows(&self, pass: Pass) -> bool {
        let closed = self.closed.lock().expect("gate lock");
        match pass {
            Pass::Probe => closed.probing,
            Pass::Open => closed.until.is_none_or(|until| until <= Instant::now()) && !closed.probe,
        }
    }

    /// The moment the gate reopens by time, if it is closed.
    pub fn closed_until(&self) -> Option<Instant> {
        let closed = self.closed.lock().expect("gate lock");
        closed.until.filter(|until| *until > Instant::now())
    }

    /// Waits until this worker may send. `None` when `stop` fires first.
    pub async fn wait(&self, stop: &CancellationToken) -> Option<Pass> {
        loop {
            let sleep_until = {
                let mut closed = self.closed.lock().expect("gate lock");
                let now = Instant::now();
                match closed.until {
                    Some(until) if until > now => until,
                    _ if !closed.probe => return Some(Pass::Open),
                    _ if !closed.probing => {
                        closed.probing = true;
                        return Some(Pass::Probe);
                    }
                    _ => now + PROBE_POLL,
                }
            };
            tokio::select! {
                _ = tokio::time::sleep_until(sleep_until) => {}
                _ = self.opened.notified() => {}
                _ = stop.cancelled() => return None,
            }
        }
    }

    /// A probe that never got its answer (shutdown) hands the probe to the next worker.
    pub fn probe_abandoned(&self) {
        self.closed.lock().expect("gate lock").probing = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_429_pause_lets_everyone_through_after_the_window() {
        let (gate, stop) = (Gate::default(), CancellationToken::new());
        assert!(gate.close_for(Duration::from_secs(5), Reopen::AtDeadline));
        assert!(
            !gate.close_for(Duration::from_secs(1), Reopen::AtDeadline),
            "second close is not news"
        );
        let start = Instant::now();
        assert_eq!(gate.wait(&stop).await, Some(Pass::Open));
        assert!(start.elapsed() >= Duration::from_secs(5));
        assert_eq!(gate.wait(&stop).await, Some(Pass::Open));
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_key_pause_only_one_probe_goes_until_it_succeeds() {
        let (gate, stop) = (Gate::default(), CancellationToken::new());
        gate.close_for(Duration::from_secs(60), Reopen::WithProbe);
        assert_eq!(gate.wait(&stop).await, Some(Pass::Probe));
        let second = tokio::time::timeout(Duration::from_secs(10), gate.wait(&stop)).await;
        assert!(second.is_err(), "a second worker went while the probe was out");
        gate.probe_succeeded();
        assert_eq!(gate.wait(&stop).await, Some(Pass::Open));
    }

    #[tokio::test(start_paused = true)]
    async fn a_fresh_gate_behind_a_probe_lets_one_request_go_first() {
        let (gate, stop) = (Gate::behind_probe(), CancellationToken::new());
        assert_eq!(gate.wait(&stop).await, Some(Pass::Probe));
        let second = tokio::time::timeout(Duration::from_secs(1), gate.wait(&stop)).await;
        assert!(second.is_err(), "a second worker went before the first answer");
        gate.probe_succeeded();
        assert_eq!(gate.wait(&stop).await, Some(Pass::Open));
    }

    #[tokio::test(start_paused = true)]
    async fn stopping_wakes_a_waiting_worker() {
        let (gate, stop) = (Gate::default(), CancellationToken::new());
        gate.close_for(Duration::from_secs(3600), Reopen::AtDeadline);
        stop.cancel();
        assert_eq!(gate.wait(&stop).await, None);
    }
}
