//! The process's request budget: one governor limiter shared by all workers. Its rate can be
//! changed while running (a replica's share of the cluster budget moves as replicas come and go).

use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Jitter, Quota, RateLimiter};

/// Spreads workers that are released together, so they do not hit the API in one instant.
const JITTER: Duration = Duration::from_millis(2);

pub struct Limiter {
    /// Rate, burst, and the limiter built for them.
    current: RwLock<(u32, u32, Arc<DefaultDirectRateLimiter>)>,
    /// One waiter at the limiter at a time, the rest queue here (FIFO): 64 workers each polling
    /// the limiter on its own timer cost a quarter of a core at 200 requests/s.
    turn: tokio::sync::Mutex<()>,
}

impl Limiter {
    pub fn new(rate_per_second: u32, burst: u32) -> Self {
        let limiter = Self::build(rate_per_second, burst);
        Self {
            current: RwLock::new((rate_per_second, burst, limiter)),
            turn: tokio::sync::Mutex::new(()),
        }
    }

    fn build(rate_per_second: u32, burst: u32) -> Arc<DefaultDirectRateLimiter> {
        let rate = NonZeroU32::new(rate_per_second.max(1)).expect("at least 1");
        let burst = NonZeroU32::new(burst.max(1)).expect("at least 1");
        Arc::new(RateLimiter::direct(Quota::per_second(rate).allow_burst(burst)))
    }

    pub fn rate(&self) -> u32 {
        self.current.read().expect("limiter lock").0
    }

    /// Replaces rate and burst; waiters already queued finish on the old limiter. Returns whether
    /// anything changed. The new limiter starts with its burst available.
    pub fn set_rate(&self, rate_per_second: u32, burst: u32) -> bool {
        let mut current = self.current.write().expect("limiter lock");
        if (current.0, current.1) == (rate_per_second, burst) {
            return false;
        }
        *current = (rate_per_second, burst, Self::build(rate_per_second, burst));
        true
    }

    /// Waits for one request's worth of budget.
    pub async fn until_ready(&self) {
        // While the budget has room (and nobody is queued), take it without queueing: the turn
        // lock costs a hand-over between threads per request at full speed.
        let queued = self.turn.try_lock().is_err();
        let limiter = self.current.read().expect("limiter lock").2.clone();
        if !queued && limiter.check().is_ok() {
            return;
        }
        let _turn = self.turn.lock().await;
        let limiter = self.current.read().expect("limiter lock").2.clone();
        limiter.until_ready_with_jitter(Jitter::up_to(JITTER)).await;
    }
}
