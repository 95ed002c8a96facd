//! What one daemon process has done and is doing: Prometheus metrics (served at `/metrics`) and
//! the periodic summary log line. (Liveness and readiness live in `health`.)
//! Label values come from fixed sets only; a session id never becomes a label.

use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::editor::Editor;
use crate::outcome::{AnswerClass, DeletionOutcome, OutcomeCounts};

type Labels = Vec<(&'static str, &'static str)>;

pub struct Metrics {
    registry: Registry,
    /// The family members of `deletions_total` and `api_answers_total`, resolved once at start
    /// (one per `DeletionOutcome` / `AnswerClass`, by index): no label lookup per deletion.
    deletion_counters: [Counter; 6],
    /// `deletions_by_editor_total{editor, outcome}`, resolved once the same way.
    editor_deletion_counters: [[Counter; 6]; 4],
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
    budget_reserved: Counter,
    /// 1 for the reason of the cluster's pause in force (as this replica last saw it), else 0.
    cluster_paused: Family<Labels, Gauge>,
    cluster_pause_until: Gauge<f64, std::sync::atomic::AtomicU64>,
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
            DeletionOutcome::ALL.map(|outcome| deletions.get_or_create(&vec![("outcome", outcome.label())]).clone());
        let answer_counters =
            AnswerClass::ALL.map(|class| answers.get_or_create(&vec![("class", class.label())]).clone());
        let by_editor: Family<Labels, Counter> = Family::default();
        let editor_deletion_counters = Editor::ALL.map(|editor| {
            DeletionOutcome::ALL.map(|outcome| {
                by_editor
                    .get_or_create(&vec![("editor", editor.label()), ("outcome", outcome.label())])
                    .clone()
            })
        });
        let m = Self {
            deletion_counters,
            editor_deletion_counters,
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
            budget_reserved: Counter::default(),
            cluster_paused: Family::default(),
            cluster_pause_until: Gauge::default(),
            registry: Registry::default(),
        };
        // name, help => metric: one line each, a table rustfmt leaves as it is.
        macro_rules! register {
            ($($name:literal, $help:literal => $metric:expr;)*) => { $(registry.register($name, $help, $metric);)* };
        }
        register! {
            "deletions", "Rows finished or handed back, by outcome" => deletions;
            "deletions_by_editor", "Rows finished or handed back, by editor and outcome" => by_editor;
            "api_answers", "API answers by class" => answers;
            "pauses", "Pool-wide pauses, by reason" => m.pauses.clone();
            "api_request_duration_seconds", "API request latency" => m.latency.clone();
            "api_requests", "API requests sent" => m.requests.clone();
            "attempts", "Attempts charged to rows" => m.attempts.clone();
            "rate_limit_waits", "Requests that waited for the rate limiter" => m.rate_limit_waits.clone();
            "rate_limit_wait_seconds", "Time spent waiting for the rate limiter" => m.rate_limit_wait_seconds.clone();
            "lease_takeovers", "Rows taken over from an expired lease" => m.takeovers.clone();
            "database_errors", "Failed database round trips" => m.database_errors.clone();
            "database_round_trips", "Store calls made by the daemon" => m.database_round_trips.clone();
            "lost_leases", "Outcomes not written because the lease had moved on" => m.lost_leases.clone();
            "in_flight", "Deletions under way in this process" => m.in_flight.clone();
            "due_backlog", "Open rows (pending or retrying) in the table" => m.backlog.clone();
            "oldest_due_age_seconds", "How long the oldest due row has waited" => m.oldest_due_age.clone();
            "rate_limit_per_second", "The cluster's budget (worker.rate_per_second), shared by every replica" => m.rate_limit.clone();
            "live_instances", "Replicas with a fresh heartbeat" => m.live_instances.clone();
            "budget_reserved", "Send times this replica reserved from the cluster's budget (summed over replicas: the cluster's use)" => m.budget_reserved.clone();
            "cluster_paused", "1 while the cluster's pause of this reason is in force (as this replica last saw it)" => m.cluster_paused.clone();
            "cluster_pause_until_timestamp_seconds", "When the cluster's pause in force ends or its probe may go (Unix time; 0 when none)" => m.cluster_pause_until.clone();
        }
        for reason in AnswerClass::PAUSES {
            let _ = m.pauses.get_or_create(&vec![("reason", reason.label())]);
            let _ = m.cluster_paused.get_or_create(&vec![("reason", reason.label())]);
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
        self.deletion_counters[outcome.index()].inc();
        if outcome.is_charged() {
            self.attempts.inc();
        }
    }

    /// A claimed row of `editor` finished or handed back: counted in total and per editor.
    pub fn deletion_of(&self, editor: Editor, outcome: DeletionOutcome) {
        self.deletion(outcome);
        self.editor_deletion_counters[editor.index()][outcome.index()].inc();
    }

    /// One answer (or its absence) of class `class`, after `latency`.
    pub fn answer(&self, class: AnswerClass, latency: Duration) {
        self.requests.inc();
        self.answer_counters[class.index()].inc();
        self.latency.observe(latency.as_secs_f64());
    }

    pub fn pause(&self, reason: AnswerClass) {
        self.pauses.get_or_create(&vec![("reason", reason.label())]).inc();
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

    /// The counters the metered store (`store::Store`) counts every call and failure in.
    pub fn store_counters(&self) -> (Counter, Counter) {
        (self.database_round_trips.clone(), self.database_errors.clone())
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

    pub fn budget_reserved(&self, n: u64) {
        self.budget_reserved.inc_by(n);
    }

    /// The cluster's pause as this replica last saw it: its reason and end, or none.
    pub fn set_cluster_pause(&self, pause: Option<(&str, chrono::DateTime<chrono::Utc>)>) {
        for reason in AnswerClass::PAUSES {
            let on = pause.is_some_and(|(r, _)| r == reason.label());
            self.cluster_paused
                .get_or_create(&vec![("reason", reason.label())])
                .set(i64::from(on));
        }
        let until = pause.map_or(0.0, |(_, until)| until.timestamp_millis() as f64 / 1000.0);
        self.cluster_pause_until.set(until);
    }

    pub fn set_live_instances(&self, n: i64) {
        self.live_instances.set(n);
    }

    /// Counts per outcome, for the summary line and the instances table.
    pub fn outcome_counts(&self) -> OutcomeCounts {
        OutcomeCounts::from_fn(|outcome| {
            i64::try_from(self.deletion_counters[outcome.index()].get()).unwrap_or(i64::MAX)
        })
    }

    /// Logs the summary line; returns the request count to pass next time.
    pub fn log_summary(&self, requests_before: u64, seconds: f64) -> u64 {
        let requests = self.requests.get();
        let rate = (requests - requests_before.min(requests)) as f64 / seconds.max(0.001);
        let counts = self.outcome_counts();
        tracing::info!(
            deleted = counts.deleted,
            gone = counts.gone,
            failed = counts.failed,
            invalid = counts.invalid,
            retry_scheduled = counts.retry_scheduled,
            released = counts.released,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deletion_counts_in_total_and_under_its_editor() {
        let metrics = Metrics::new();
        metrics.deletion_of(Editor::Sheet, DeletionOutcome::Deleted);
        let text = metrics.render();
        assert!(
            text.contains(r#"session_reaper_deletions_total{outcome="deleted"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"session_reaper_deletions_by_editor_total{editor="sheet",outcome="deleted"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"session_reaper_deletions_by_editor_total{editor="pdf",outcome="deleted"} 0"#),
            "{text}"
        );
    }
}
