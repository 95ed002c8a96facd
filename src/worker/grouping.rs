//! Sends at the API's pace go in small groups. Spaced one by one (every 5 ms at 200/s, every
//! 50 ms at 20/s), each send is a wake-up of its own: the timer, the request, its answer, the
//! recheck, each on cold caches. Rounding send times up to a grid makes the sends of one grid
//! step go from one wake-up, and their rechecks one query (`recheck`). Measured on SQLite at
//! 200/s, this halved the CPU per deletion (see the README, "Cost at the operating point").
//!
//! Rounding up only delays a send, and by at most one step, so the budget's promise (never more
//! than rate + burst requests in any one-second window) stands when the step is paid for: up to
//! `WITHIN_DROP` of it from `LATE_DROP` (the lateness allowed on our side), the rest taken off
//! the burst tolerance the budget hands out (`extra`, added to the reservation's late slack).

use std::time::Duration;

use tokio::time::Instant;

use super::budget::{LATE_DROP, LATE_SLACK};

/// How much of `LATE_DROP` a send may spend waiting for its group.
const WITHIN_DROP: Duration = Duration::from_millis(30);
/// The longest grid step: the most a send waits for its group.
const MOST: Duration = Duration::from_secs(1);
/// The shortest step worth having: the runtime's timer counts whole milliseconds.
const LEAST: Duration = Duration::from_millis(2);

/// The grid send times are rounded up to, and what it costs the budget.
#[derive(Debug, Clone, Copy)]
pub struct SendGrid {
    base: Instant,
    /// Zero: no grid (full speed, or too few sends per step to share a wake-up).
    step: Duration,
    /// The part of the step taken off the budget's burst tolerance.
    extra: Duration,
}

impl SendGrid {
    /// The grid for a budget of `rate_per_second` with `burst`, served by `concurrency`
    /// workers. A step holds at least two send times; it is at most half of what the workers
    /// can hold (each waits for its group holding one send time, so a longer step would starve
    /// the pipeline), and at most what the lateness allowance and the burst's headroom pay for.
    pub fn new(rate_per_second: u32, burst: u32, concurrency: u32) -> Self {
        let interval = Duration::from_secs(1) / rate_per_second.max(1);
        let headroom = (interval * burst.max(1).saturating_sub(1)).saturating_sub(LATE_SLACK);
        let step = (WITHIN_DROP + headroom)
            .min(MOST)
            .min(interval * concurrency.max(1) / 2);
        let step = if step < LEAST || step < interval * 2 {
            Duration::ZERO
        } else {
            step
        };
        Self {
            base: Instant::now(),
            step,
            extra: step.saturating_sub(WITHIN_DROP),
        }
    }

    /// When a send given `at` goes: the next grid point at or after it.
    pub fn send_at(&self, at: Instant) -> Instant {
        if self.step.is_zero() {
            return at;
        }
        let step = self.step.as_micros();
        let since = at.saturating_duration_since(self.base).as_micros();
        let rounded = since.div_ceil(step) * step;
        self.base + Duration::from_micros(u64::try_from(rounded).unwrap_or(u64::MAX))
    }

    /// How late past its send time (as the budget gave it) a send may still go.
    pub fn late_allowance(&self) -> Duration {
        LATE_DROP + self.extra
    }

    /// The late slack a reservation asks for: the budget's own, and the step's extra.
    pub fn late_slack(&self) -> Duration {
        LATE_SLACK + self.extra
    }

    pub fn step(&self) -> Duration {
        self.step
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_step_follows_the_pace_and_what_pays_for_it() {
        // 200/s, burst 20: the burst has no headroom past the slack, so the step comes out of
        // `LATE_DROP` alone and nothing is taken off the budget.
        let grid = SendGrid::new(200, 20, 64);
        assert_eq!((grid.step(), grid.late_slack()), (WITHIN_DROP, LATE_SLACK));
        assert_eq!(grid.late_allowance(), LATE_DROP);
        // 20/s, burst 20: the burst's headroom (850 ms) and `WITHIN_DROP` pay for the step.
        let grid = SendGrid::new(20, 20, 64);
        assert_eq!(grid.step(), Duration::from_millis(880));
        assert_eq!(grid.late_slack(), LATE_SLACK + Duration::from_millis(850));
        // A burst with more headroom than that: the longest step.
        assert_eq!(SendGrid::new(20, 60, 64).step(), MOST);
        // Few workers: at most half of what they hold.
        assert_eq!(SendGrid::new(20, 20, 4).step(), Duration::from_millis(100));
        // Full speed, or one send per step: no grid.
        assert_eq!(SendGrid::new(1_000_000, 20, 64).step(), Duration::ZERO);
        assert_eq!(SendGrid::new(50, 1, 64).step(), Duration::ZERO);
    }

    #[test]
    fn a_send_time_is_rounded_up_by_less_than_a_step() {
        let grid = SendGrid::new(200, 20, 64);
        for offset_us in [0, 1, 19_999, 20_000, 20_001, 123_456] {
            let at = grid.base + Duration::from_micros(offset_us);
            let send = grid.send_at(at);
            assert!(send >= at && send - at < grid.step(), "{offset_us}: {:?}", send - at);
            assert_eq!(send.duration_since(grid.base).as_micros() % grid.step().as_micros(), 0);
        }
        let none = SendGrid::new(1_000_000, 20, 64);
        let at = Instant::now();
        assert_eq!(none.send_at(at), at);
    }
}
