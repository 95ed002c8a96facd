//! Back off and report once: the one helper behind every loop that retries a database that has
//! gone away (start-up, the claim loop, the outcome writers). An outage is logged once when it
//! starts, at ERROR with its cause, and once when it ends, at INFO with how long it lasted; the
//! retries in between wait longer each time, up to a ceiling.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Growing waits between retries: `first`, doubled each time, at most `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub const fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            next: first,
        }
    }

    /// The wait before the next retry; the one after it is longer.
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }

    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

/// One dependency's outage, shared by every task that meets it (two outcome writers report one
/// outage, not two).
#[derive(Debug)]
pub struct Outage {
    /// The ERROR line when it starts: what stops meanwhile.
    starts: &'static str,
    /// The INFO line when it ends: what resumes.
    ends: &'static str,
    since: Mutex<Option<Instant>>,
}

impl Outage {
    pub const fn new(starts: &'static str, ends: &'static str) -> Self {
        Self {
            starts,
            ends,
            since: Mutex::new(None),
        }
    }

    /// A failed attempt; logs only the first of an outage. Returns whether this one started it.
    pub fn failed(&self, error: &anyhow::Error) -> bool {
        let mut since = self.since();
        if since.is_some() {
            return false;
        }
        *since = Some(Instant::now());
        tracing::error!(error = format!("{error:#}"), "{}", self.starts);
        true
    }

    /// A successful attempt; logs the end of an outage if one was going on.
    pub fn succeeded(&self) -> bool {
        let Some(started) = self.since().take() else {
            return false;
        };
        let outage_s = (started.elapsed().as_secs_f64() * 10.0).round() / 10.0;
        tracing::info!(outage_s, "{}", self.ends);
        true
    }

    pub fn is_on(&self) -> bool {
        self.since().is_some()
    }

    fn since(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.since.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_ceiling_and_start_again_after_a_reset() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let waits: Vec<_> = (0..4).map(|_| backoff.next_wait().as_millis()).collect();
        assert_eq!(waits, [100, 200, 350, 350]);
        backoff.reset();
        assert_eq!(backoff.next_wait(), Duration::from_millis(100));
    }

    #[test]
    fn an_outage_is_reported_once_when_it_starts_and_once_when_it_ends() {
        let outage = Outage::new("down", "up");
        let error = anyhow::anyhow!("refused");
        assert!(!outage.succeeded(), "nothing to recover from yet");
        assert!(outage.failed(&error));
        assert!(!outage.failed(&error), "the second failure is not reported again");
        assert!(outage.is_on());
        assert!(outage.succeeded());
        assert!(!outage.succeeded());
    }
}
