//! One unit of work: delete one claimed session and decide what to write back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::backoff::RetryPolicy;
use super::budget::{Budget, Ticket};
use super::gate::{Gate, Pass};
use crate::api::{Answer, ApiClient, CODE_DEPRECATED, Verdict};
use crate::clock::Clock;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::outcome::DeletionOutcome;
use crate::session_id::{SessionId, logged};
use crate::store::{ClaimedRow, OutcomeWrite, STILL_DUE_FOR, State};

use super::recheck::Recheck;

/// Pause after a 429 that named no `Retry-After`.
pub const DEFAULT_429_PAUSE: Duration = Duration::from_secs(5);

/// The two stop signals a deletion obeys.
#[derive(Clone)]
pub struct Stop {
    /// Shutdown began: do not start a request (a queued row is released, never sent).
    pub no_new_requests: CancellationToken,
    /// The grace period ran out: abandon the request in flight.
    pub abandon_in_flight: CancellationToken,
}

/// Everything a deletion needs, shared by all workers of the process.
pub struct Deleter {
    pub api: ApiClient,
    /// This process's stop sign; the cluster's pause closes it too.
    pub gate: Arc<Gate>,
    /// The cluster's budget: every request waits for a send time reserved from it.
    pub budget: Arc<Budget>,
    pub policy: RetryPolicy,
    pub quota_pause: Duration,
    pub key_pause: Duration,
    pub metrics: Arc<Metrics>,
    /// Readiness: a rejected key makes `/readyz` fail until a probe succeeds.
    pub health: Arc<Health>,
    pub clock: Clock,
    /// Checks a row again right before its request when the claim's verdict is older than
    /// `STILL_DUE_FOR`; `None` trusts the claim (tests of the step alone).
    pub recheck: Option<Recheck>,
}

/// How a worker was let through: this process's gate, and whether its request is the cluster's
/// probe of a pause.
#[derive(Debug, Clone, Copy)]
struct Admitted {
    pass: Pass,
    cluster_probe: bool,
    /// The send time it was given.
    at: tokio::time::Instant,
    /// When it sends: `at` rounded up to the budget's grid, with the others of its group.
    send_at: tokio::time::Instant,
}

impl Deleter {
    /// Deletes one row's session: waits for the gate and the budget, sends, classifies.
    /// Pauses (429, quota, key) charge nothing and retry the same row once the gate reopens.
    ///
    /// The `deletion finished` line carries every field itself (row, session prefix, attempt,
    /// outcome, HTTP status, API code, latency, error), so it reads whole at any `log.level`;
    /// the span (debug) gives the same row's identity to the debug and trace lines inside it.
    #[tracing::instrument(name = "deletion", level = "debug", skip_all, fields(
        row_id = row.id.get(), session = %logged(&row.session_id), attempt = i64::from(row.attempts) + 1,
        taken_over = row.taken_over,
    ))]
    pub async fn delete(&self, row: &ClaimedRow, stop: &Stop) -> (DeletionOutcome, OutcomeWrite) {
        let (outcome, write, latency) = self.attempt(row, stop).await;
        self.metrics.deletion_of(row.editor, outcome);
        let (http_status, api_code, error) = match &write {
            OutcomeWrite::Finish {
                http_status,
                api_code,
                error,
                ..
            } => (*http_status, *api_code, error.as_deref()),
            OutcomeWrite::Release { .. } => (None, None, None),
        };
        let latency_ms = latency.map(|d| d.as_millis() as u64);
        macro_rules! finished {
            ($level:ident) => {
                tracing::$level!(
                    row_id = row.id.get(),
                    session = %logged(&row.session_id),
                    editor = row.editor.label(),
                    attempt = i64::from(row.attempts) + 1,
                    outcome = outcome.label(),
                    http_status,
                    api_code,
                    latency_ms,
                    taken_over = row.taken_over,
                    error,
                    "deletion finished"
                )
            };
        }
        if outcome.is_alarming() {
            finished!(warn)
        } else {
            finished!(info)
        }
        (outcome, write)
    }

    /// Sends the request (after the gate and a send time from the budget) and turns the answer into an outcome;
    /// with the latency of the concluding request, if one was sent.
    async fn attempt(&self, row: &ClaimedRow, stop: &Stop) -> (DeletionOutcome, OutcomeWrite, Option<Duration>) {
        let release = (DeletionOutcome::Released, OutcomeWrite::Release { id: row.id }, None);
        let id = match SessionId::parse(&row.session_id) {
            Ok(id) => id,
            Err(e) => {
                let write = OutcomeWrite::Finish {
                    id: row.id,
                    state: State::Invalid,
                    charge: false,
                    http_status: None,
                    api_code: None,
                    error: Some(e.to_string()),
                    attempted_at: None,
                    next_attempt_at: None,
                    decided_at: self.clock.now(),
                };
                return (DeletionOutcome::Invalid, write, None);
            }
        };
        // When the row was last found due: at the claim, then at each check before a request.
        let mut verdict_at = row.claimed_at;
        // The checks may read this row ahead, with another row's check, while it waits.
        let held = self.recheck.as_ref().map(|recheck| recheck.hold(row));
        loop {
            let waiting = Instant::now();
            let counted = self.budget.waiting();
            let Some(admitted) = self.admit(stop).await else {
                return release;
            };
            // Wait for the send time; a row whose verdict is old by then is checked again at it.
            // Most such rows find a verdict read ahead by an earlier check (`recheck`), so a
            // check costs no wake-up of its own, and one query serves a fifth of a second of
            // sends; the send that runs the query goes that much later (within `LATE_DROP`).
            let send_at = admitted.send_at;
            let needs_check =
                verdict_at.elapsed() + send_at.saturating_duration_since(tokio::time::Instant::now()) > STILL_DUE_FOR;
            if let Some(held) = &held {
                held.sends_at(send_at);
            }
            // When the row was found due, if it still is.
            let check = async {
                tokio::time::sleep_until(send_at).await;
                if !needs_check {
                    return Some(verdict_at);
                }
                match &self.recheck {
                    Some(recheck) => recheck.still_due(row, self.clock.now(), send_at).await,
                    None => Some(tokio::time::Instant::now()),
                }
            };
            let waited = tokio::select! {
                biased;
                _ = stop.no_new_requests.cancelled() => None,
                due = check => Some(due),
            };
            let Some(due) = waited else {
                self.abandon(admitted).await;
                return release;
            };
            let Some(found_due_at) = due else {
                self.abandon(admitted).await;
                return release;
            };
            verdict_at = found_due_at;
            self.metrics.rate_limit_wait(waiting.elapsed());
            drop(counted);
            // Past its send time by more than the slack on our side (a slow check, a loaded
            // host), or the gate closed meanwhile: this worker takes a new send time.
            // (A probe goes alone while the cluster is paused: being late crowds nothing.)
            let late = !admitted.cluster_probe && admitted.at.elapsed() > self.budget.grid().late_allowance();
            if late || !self.gate.still_allows(admitted.pass) {
                self.abandon(admitted).await;
                continue;
            }
            self.budget.ceiling().await;
            let started = Instant::now();
            let attempted_at = self.clock.now();
            let answer = tokio::select! {
                answer = self.api.delete_editor_session(row.editor, &id) => answer,
                _ = stop.abandon_in_flight.cancelled() => {
                    self.abandon(admitted).await;
                    tracing::warn!(
                        row_id = row.id.get(),
                        session = %logged(&row.session_id),
                        attempt = i64::from(row.attempts) + 1,
                        outcome = DeletionOutcome::Released.label(),
                        "request abandoned: the shutdown grace ran out; the row is released"
                    );
                    return release;
                }
            };
            let latency = started.elapsed();
            self.metrics.answer(answer.class(), latency);
            if self.pause_for(row, &answer).await {
                continue;
            }
            if admitted.pass == Pass::Probe || admitted.cluster_probe {
                if answer.http_status.is_some() {
                    self.probe_succeeded(admitted).await;
                } else {
                    // No answer says nothing about the key or the quota: the next worker probes.
                    self.abandon(admitted).await;
                }
            }
            let (outcome, write) = self.outcome_of(row, answer, attempted_at);
            return (outcome, write, Some(latency));
        }
    }

    /// A probe (this process's, the cluster's, or both) was answered without a pause.
    async fn probe_succeeded(&self, admitted: Admitted) {
        let was_paused = self.health.account_pause().is_some();
        let cluster_resumed = self.budget.end_probe(true).await;
        if cluster_resumed {
            tracing::info!("the API answers again; the cluster's pause is over and every replica resumes");
        } else if was_paused && admitted.pass == Pass::Probe {
            tracing::info!("the API answers again; resuming all workers");
        }
        self.health.set_key_rejected(false);
        self.health.set_account_pause(None);
        if admitted.pass == Pass::Probe {
            self.gate.probe_succeeded();
        }
    }

    /// A request admitted but never answered (shutdown, a row no longer due, no answer): its
    /// probes pass to the next worker or replica.
    async fn abandon(&self, admitted: Admitted) {
        if admitted.pass == Pass::Probe {
            self.gate.probe_abandoned()
        }
        if admitted.cluster_probe {
            self.budget.end_probe(false).await;
        }
    }

    /// Waits for the gate and a send time from the budget (the caller waits for that time).
    /// `None` when shutdown comes first: a row still queued when the signal comes is released,
    /// never sent, even if gate and budget are open.
    async fn admit(&self, stop: &Stop) -> Option<Admitted> {
        loop {
            if stop.no_new_requests.is_cancelled() {
                return None;
            }
            let pass = self.gate.wait(&stop.no_new_requests).await?;
            let ticket = tokio::select! {
                biased;
                _ = stop.no_new_requests.cancelled() => None,
                ticket = self.budget.next_send_time() => Some(ticket),
            };
            let Some(ticket) = ticket else {
                // A probe granted while the wait was cut short passes on too.
                let now = tokio::time::Instant::now();
                self.abandon(Admitted {
                    pass,
                    cluster_probe: true,
                    at: now,
                    send_at: now,
                })
                .await;
                return None;
            };
            let (at, cluster_probe) = match ticket {
                Ticket::Send(at) => (at, false),
                Ticket::Probe(at) => (at, true),
                Ticket::Wait => {
                    if pass == Pass::Probe {
                        self.gate.probe_abandoned()
                    }
                    continue;
                }
            };
            return Some(Admitted {
                pass,
                cluster_probe,
                at,
                send_at: self.budget.grid().send_at(at),
            });
        }
    }

    /// What one concluding answer means for the row (classification only; nothing is sent).
    fn outcome_of(
        &self,
        row: &ClaimedRow,
        answer: Answer,
        at: chrono::DateTime<Utc>,
    ) -> (DeletionOutcome, OutcomeWrite) {
        let attempts = u32::try_from(row.attempts).unwrap_or(0).saturating_add(1);
        let finish = |state, error: Option<String>, next_attempt_at| OutcomeWrite::Finish {
            id: row.id,
            state,
            charge: true,
            http_status: answer.http_status.map(i32::from),
            api_code: answer.api_code,
            error,
            attempted_at: Some(at),
            next_attempt_at,
            decided_at: at,
        };
        match answer.verdict {
            Verdict::Deleted => (DeletionOutcome::Deleted, finish(State::Deleted, None, None)),
            Verdict::Gone => (DeletionOutcome::Gone, finish(State::Gone, answer.message.clone(), None)),
            Verdict::Permanent => {
                if answer.api_code == Some(CODE_DEPRECATED) {
                    tracing::error!(
                        row_id = row.id.get(),
                        session = %logged(&row.session_id),
                        attempt = attempts,
                        http_status = answer.http_status,
                        api_code = answer.api_code,
                        error = answer.message.as_deref(),
                        "the API says this call is deprecated (1879): session-reaper needs an update"
                    );
                }
                (
                    DeletionOutcome::Failed,
                    finish(State::Failed, answer.message.clone(), None),
                )
            }
            Verdict::Transient { .. } if self.policy.exhausted(attempts) => {
                let message = answer.message.as_deref().unwrap_or_default();
                let error = format!("gave up after {attempts} attempts: {message}");
                (DeletionOutcome::Failed, finish(State::Failed, Some(error), None))
            }
            Verdict::Transient { retry_after } => {
                let next = self
                    .policy
                    .next_attempt_at(at, attempts, retry_after, &mut rand::thread_rng());
                let write = finish(State::Retrying, answer.message.clone(), Some(next));
                (DeletionOutcome::RetryScheduled, write)
            }
            // `pause_for` takes these before an answer is concluded; should one slip through, the
            // row is handed back untouched rather than charged.
            Verdict::RateLimited { .. } | Verdict::QuotaExhausted | Verdict::KeyRejected => {
                (DeletionOutcome::Released, OutcomeWrite::Release { id: row.id })
            }
        }
    }
}
