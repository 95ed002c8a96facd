//! Live counters of one daemon process: read by the summary log line, `status` and metrics.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use super::deletion::DeletionOutcome;

#[derive(Debug, Default)]
pub struct Stats {
    pub deleted: AtomicU64,
    pub gone: AtomicU64,
    pub failed: AtomicU64,
    pub invalid: AtomicU64,
    pub retry_scheduled: AtomicU64,
    pub released: AtomicU64,
    /// API requests sent (every answer, including 429 and pauses).
    pub requests: AtomicU64,
    pub rate_limited: AtomicU64,
    pub pauses: AtomicU64,
    pub takeovers: AtomicU64,
    pub database_errors: AtomicU64,
    /// Outcomes the database refused because our lease had moved on.
    pub lost_leases: AtomicU64,
    pub in_flight: AtomicI64,
}

impl Stats {
    pub fn record(&self, outcome: DeletionOutcome) {
        let counter = match outcome {
            DeletionOutcome::Deleted => &self.deleted,
            DeletionOutcome::Gone => &self.gone,
            DeletionOutcome::Failed => &self.failed,
            DeletionOutcome::Invalid => &self.invalid,
            DeletionOutcome::RetryScheduled => &self.retry_scheduled,
            DeletionOutcome::Released => &self.released,
        };
        counter.fetch_add(1, Relaxed);
    }

    /// Rows that reached a final state in this process.
    pub fn finished(&self) -> u64 {
        self.deleted.load(Relaxed) + self.gone.load(Relaxed) + self.failed.load(Relaxed) + self.invalid.load(Relaxed)
    }

    /// Logs one summary line; `requests_since` is the request count at the previous line.
    pub fn log_summary(&self, requests_since: u64, seconds: f64, rate_limit: u32) -> u64 {
        let requests = self.requests.load(Relaxed);
        let rate = (requests - requests_since) as f64 / seconds.max(0.001);
        tracing::info!(
            deleted = self.deleted.load(Relaxed),
            gone = self.gone.load(Relaxed),
            failed = self.failed.load(Relaxed),
            invalid = self.invalid.load(Relaxed),
            retry_scheduled = self.retry_scheduled.load(Relaxed),
            released = self.released.load(Relaxed),
            rate_limited = self.rate_limited.load(Relaxed),
            takeovers = self.takeovers.load(Relaxed),
            database_errors = self.database_errors.load(Relaxed),
            in_flight = self.in_flight.load(Relaxed),
            requests_per_second = (rate * 10.0).round() / 10.0,
            rate_limit,
            "summary"
        );
        requests
    }
}
