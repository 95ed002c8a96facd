//! The process's own ceiling: a governor limiter at the budget's rate and burst. The cluster's
//! budget (`budget.rs`) already paces every send; this only guarantees that nothing outside the
//! daemon (a budget row reset by hand, replicas configured with different budgets) makes one
//! process exceed the configured budget by itself. It costs one atomic operation per request
//! and waits only when the budget row was tampered with.

use std::num::NonZeroU32;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

pub struct Limiter {
    limiter: DefaultDirectRateLimiter,
}

impl Limiter {
    pub fn new(rate_per_second: u32, burst: u32) -> Self {
        let rate = NonZeroU32::new(rate_per_second.max(1)).expect("at least 1");
        let burst = NonZeroU32::new(burst.max(1)).expect("at least 1");
        Self {
            limiter: RateLimiter::direct(Quota::per_second(rate).allow_burst(burst)),
        }
    }

    /// Waits for one request's worth of this process's ceiling (at once, normally).
    pub async fn until_ready(&self) {
        if self.limiter.check().is_err() {
            self.limiter.until_ready().await;
        }
    }
}
