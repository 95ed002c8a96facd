//! What one daemon process has done and is doing: Prometheus metrics (served at `/metrics`),
//! the periodic summary log line, and the liveness/readiness facts behind `/livez` and `/readyz`.
//! Label values come from fixed sets only; a session id never becomes a label.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering::Relaxed};
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::worker::DeletionOutcome;

type Labels = Vec<(&'static str, &'static str)>;

/// Every `class` label of `api_answers` (see `worker::deletion`), shown from the start at zero.
pub const ANSWER_CLASSES: [&str; 8] = [
    "deleted",
    "gone",
    "transient",
    "no_answer",
    "rate_limited",
    "quota_exhausted",
    "key_rejected",
    "permanent",
];
/// Every `reason` label of `pauses`.
pub const PAUSE_REASONS: [&str; 3] = ["rate_limited", "quota_exhausted", "key_rejected"];

pub struct Metrics {
    registry: Registry,
    deletions: Family<Labels, Counter>,
    answers: Family<Labels, Counter>,
    /// The family members above, resolved once: no label lookup on the per-deletion path.
    deletion_counters: [Counter; 6],
    answer_counters: [Counter; 8],
    pauses: Family<Labels, Counter>,
    latency: Histogram,
    requests: Counter,
    attempts: Counter,
    rate_limit_waits: Counter,
    rate_limit_wait_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    takeovers: Counter,
    database_errors: Counter,
    database_round_trips: Counter,
    lost_leases: Counter,
    in_flight: Gauge,
    backlog: Gauge,
    oldest_due_age: Gauge<f64, std::sync::atomic::AtomicU64>,
    rate_limit: Gauge,
    live_instances: Gauge,
    /// Unix milliseconds of the work loop's last turn (for `/livez` and the watchdog).
    last_tick_ms: AtomicI64,
    /// The API rejected our key and no probe has succeeded since (for `/readyz`).
    key_rejected: AtomicBool,
    /// The last database round trip succeeded (for `/readyz`).
    database_ok: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("session_reaper");
        let deletions: Family<Labels, Counter> = Family::default();
        let answers: Family<Labels, Counter> = Family::default();
        let deletion_counters =
            DeletionOutcome::ALL.map(|outcome| deletions.get_or_create(&vec![("outcome", outcome.as_str())]).clone());
        let answer_counters = ANSWER_CLASSES.map(|class| answers.get_or_create(&vec![("class", class)]).clone());
        let m = Self {
            deletions,
            answers,
            deletion_counters,
            answer_counters,
            pauses: Family::default(),
            // 5 ms to about 40 s.
            latency: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            requests: Counter::default(),
            attempts: Counter::default(),
            rate_limit_waits: Counter::default(),
            rate_limit_wait_seconds: Counter::default(),
            takeovers: Counter::default(),
            database_errors: Counter::default(),
            database_round_trips: Counter::default(),
            lost_leases: Counter::default(),
            in_flight: Gauge::default(),
            backlog: Gauge::default(),
            oldest_due_age: Gauge::default(),
            rate_limit: Gauge::default(),
            live_instances: Gauge::default(),
            last_tick_ms: AtomicI64::new(now_ms()),
            key_rejected: AtomicBool::new(false),
            database_ok: AtomicBool::new(true),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "deletions",
            "Rows finished or handed back, by outcome",
            m.deletions.clone(),
        );
        r.register("api_answers", "API answers by class", m.answers.clone());
        r.register("pauses", "Pool-wide pauses, by reason", m.pauses.clone());
        r.register("api_request_duration_seconds", "API request latency", m.latency.clone());
        r.register("api_requests", "API requests sent", m.requests.clone());
        r.register("attempts", "Attempts charged to rows", m.attempts.clone());
        r.register(
            "rate_limit_waits",
            "Requests that waited for the rate limiter",
            m.rate_limit_waits.clone(),
        );
        r.register(
            "rate_limit_wait_seconds",
            "Time spent waiting for the rate limiter",
            m.rate_limit_wait_seconds.clone(),
        );
        r.register(
            "lease_takeovers",
            "Rows taken over from an expired lease",
            m.takeovers.clone(),
        );
        r.register(
            "database_errors",
            "Failed database round trips",
            m.database_errors.clone(),
        );
        r.register(
            "database_round_trips",
            "Store calls made by the daemon",
            m.database_round_trips.clone(),
        );
        r.register(
            "lost_leases",
            "Outcomes not written because the lease had moved on",
            m.lost_leases.clone(),
        );
        r.register("in_flight", "Deletions under way in this process", m.in_flight.clone());
        r.register(
            "due_backlog",
            "Open rows (pending or retrying) in the table",
            m.backlog.clone(),
        );
        r.register(
            "oldest_due_age_seconds",
            "How long the oldest due row has waited",
            m.oldest_due_age.clone(),
        );
        r.register(
            "rate_limit_per_second",
            "This process's share of worker.rate_per_second",
            m.rate_limit.clone(),
        );
        r.register(
            "live_instances",
            "Replicas with a fresh heartbeat",
            m.live_instances.clone(),
        );
        for reason in PAUSE_REASONS {
            let _ = m.pauses.get_or_create(&vec![("reason", reason)]);
        }
        Self { registry, ..m }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    pub fn deletion(&self, outcome: DeletionOutcome) {
        self.deletion_counter(outcome).inc();
        // Every outcome but these two came from an answer that was charged to the row.
        if !matches!(outcome, DeletionOutcome::Invalid | DeletionOutcome::Released) {
            self.attempts.inc();
        }
    }

    /// One answer (or its absence) of class `class`, after `latency`.
    pub fn answer(&self, class: &'static str, latency: Duration) {
        self.requests.inc();
        match ANSWER_CLASSES.iter().position(|c| *c == class) {
            Some(i) => self.answer_counters[i].inc(),
            None => self.answers.get_or_create(&vec![("class", class)]).inc(),
        };
        self.latency.observe(latency.as_secs_f64());
    }

    pub fn pause(&self, reason: &'static str) {
        self.pauses.get_or_create(&vec![("reason", reason)]).inc();
    }

    pub fn rate_limit_wait(&self, waited: Duration) {
        if waited >= Duration::from_millis(1) {
            self.rate_limit_waits.inc();
            self.rate_limit_wait_seconds.inc_by(waited.as_secs_f64());
        }
    }

    pub fn takeover(&self) {
        self.takeovers.inc();
    }

    pub fn lost_leases(&self, n: u64) {
        self.lost_leases.inc_by(n);
    }

    /// Every store call of the daemon passes through here: errors and round trips are counted.
    pub fn database_result<T, E>(&self, result: &Result<T, E>) {
        self.database_round_trips.inc();
        self.database_ok.store(result.is_ok(), Relaxed);
        if result.is_err() {
            self.database_errors.inc();
        }
    }

    pub fn in_flight(&self, delta: i64) {
        self.in_flight.inc_by(delta);
    }

    pub fn in_flight_now(&self) -> i64 {
        self.in_flight.get()
    }

    pub fn set_backlog(&self, open: i64, oldest_due_age: Option<Duration>) {
        self.backlog.set(open);
        self.oldest_due_age.set(oldest_due_age.map_or(0.0, |d| d.as_secs_f64()));
    }

    pub fn set_rate_limit(&self, per_second: u32) {
        self.rate_limit.set(i64::from(per_second));
    }

    pub fn set_live_instances(&self, n: i64) {
        self.live_instances.set(n);
    }

    pub fn set_key_rejected(&self, rejected: bool) {
        self.key_rejected.store(rejected, Relaxed);
    }

    /// The work loop turned.
    pub fn tick(&self) {
        self.last_tick_ms.store(now_ms(), Relaxed);
    }

    /// Time since the work loop last turned.
    pub fn since_tick(&self) -> Duration {
        Duration::from_millis(u64::try_from(now_ms() - self.last_tick_ms.load(Relaxed)).unwrap_or(0))
    }

    /// Why this process is not ready, if it is not.
    pub fn not_ready(&self) -> Option<&'static str> {
        if !self.database_ok.load(Relaxed) {
            Some("database unreachable")
        } else if self.key_rejected.load(Relaxed) {
            Some("the API rejected the apikey")
        } else {
            None
        }
    }

    fn deletion_counter(&self, outcome: DeletionOutcome) -> &Counter {
        let i = DeletionOutcome::ALL.iter().position(|o| *o == outcome).unwrap_or(0);
        &self.deletion_counters[i]
    }

    fn deletions_of(&self, outcome: DeletionOutcome) -> u64 {
        self.deletion_counter(outcome).get()
    }

    /// Counts per outcome, for the summary line and the instances table.
    pub fn outcome_counts(&self) -> [(DeletionOutcome, u64); 6] {
        DeletionOutcome::ALL.map(|outcome| (outcome, self.deletions_of(outcome)))
    }

    /// Logs the summary line; returns the request count to pass next time.
    pub fn log_summary(&self, requests_before: u64, seconds: f64) -> u64 {
        let requests = self.requests.get();
        let rate = (requests - requests_before.min(requests)) as f64 / seconds.max(0.001);
        let count = |outcome| self.deletions_of(outcome);
        tracing::info!(
            deleted = count(DeletionOutcome::Deleted),
            gone = count(DeletionOutcome::Gone),
            failed = count(DeletionOutcome::Failed),
            invalid = count(DeletionOutcome::Invalid),
            retry_scheduled = count(DeletionOutcome::RetryScheduled),
            released = count(DeletionOutcome::Released),
            takeovers = self.takeovers.get(),
            database_errors = self.database_errors.get(),
            in_flight = self.in_flight.get(),
            requests_per_second = (rate * 10.0).round() / 10.0,
            rate_limit = self.rate_limit.get(),
            "summary"
        );
        requests
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
