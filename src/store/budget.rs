//! The cluster's budget row (`reaper_budget`), decided once for both backends: a backend locks
//! the row, reads it with the database's clock (`BudgetRow`), lets `decide_reservation` or
//! `decide_pause` say what changes, and writes that back in the same transaction.
//!
//! The budget is a GCRA over the database's clock, so replicas on hosts whose clocks differ still
//! share one timeline. With `T` = 1 s / rate and `tau` = the burst tolerance, a reservation of `k`
//! send times at `now` hands out `max(now, max(tat, now) + i*T - tau)` for `i` in `0..k` and moves
//! `tat` to `max(tat, now) + k*T`: the sequence a single GCRA limiter would allow, whichever
//! replica asks.

use crate::outcome::AnswerClass;

/// Microseconds per second.
pub const US: i64 = 1_000_000;
const MINUTE_US: i64 = 60 * US;

/// The row as the database holds it; times in microseconds of the database's clock.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BudgetRow {
    /// The database's clock when the row was read.
    pub now_us: i64,
    /// Raised by every write; a write goes through only over the version it read.
    pub version: i64,
    /// When the read's answer arrived here: `now_us` happened no later (send times counted from
    /// it are never early, and late by at most the read's round trip).
    pub read_at: Option<std::time::Instant>,
    /// The budget as the replica that reserved last configured it.
    pub rate_per_second: i64,
    pub burst: i64,
    /// GCRA's theoretical arrival time: where the next send time would fall without a burst.
    pub tat_us: i64,
    /// The minute being counted, what it has handed out so far, and the last whole minute's.
    pub minute_start_us: i64,
    pub minute_reserved: i64,
    pub last_minute_reserved: i64,
    /// The cluster's pause: its reason (an `AnswerClass` label), since and until when, whether
    /// it ends with a probe, who began it and the API's answer.
    pub paused: bool,
    pub pause_reason: Option<String>,
    pub paused_since_us: Option<i64>,
    pub paused_until_us: Option<i64>,
    pub pause_probe: bool,
    pub paused_by: Option<String>,
    pub pause_http_status: Option<i64>,
    pub pause_api_code: Option<i64>,
    /// The replica holding the one probe through a pause, and until when its lease runs.
    pub probe_owner: Option<String>,
    pub probe_until_us: Option<i64>,
}

/// What a replica asks of the budget.
#[derive(Debug, Clone, Copy)]
pub struct ReserveRequest<'a> {
    /// The replica asking (it may hold the probe).
    pub instance_id: &'a str,
    /// Send times wanted (at least 1).
    pub want: u32,
    /// The configured budget: the cluster's, the same on every replica.
    pub rate_per_second: u32,
    pub burst: u32,
    /// Slack for sends a little late (timers, scheduling, network jitter): taken off the burst
    /// tolerance, so a send up to this late still keeps every one-second window in budget.
    pub late_slack_us: i64,
    /// How long a probe may stay out before another replica may send one.
    pub probe_lease_us: i64,
    /// The process's first reservation: through a quota or key pause it gets the probe at once
    /// (its configuration may hold a new key; a crash-looping replica costs one request per
    /// start). A 429's window is the API's instruction and holds for everyone.
    pub fresh: bool,
}

impl ReserveRequest<'_> {
    /// One send time's share of a second, at least a microsecond.
    pub fn interval_us(&self) -> i64 {
        (US / i64::from(self.rate_per_second.max(1))).max(1)
    }

    /// How far ahead of its GCRA time a send may go: the burst, less the slack for late sends.
    pub fn tolerance_us(&self) -> i64 {
        (i64::from(self.burst.max(1) - 1) * self.interval_us() - self.late_slack_us).max(0)
    }
}

/// What the budget answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    /// Send times, in order, on the database's clock (`now_us` is that clock at the reservation,
    /// `read_at` when its answer arrived here).
    Slots {
        now_us: i64,
        read_at: Option<std::time::Instant>,
        at_us: Vec<i64>,
    },
    /// The one request that tests whether the cluster's pause is over; at `at_us`.
    Probe {
        now_us: i64,
        read_at: Option<std::time::Instant>,
        at_us: i64,
    },
    /// The cluster is paused: no send time until the pause ends (or its probe answers).
    Paused(Pause),
}

/// A pause in force, as `status`, the page and the replicas see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pause {
    /// `rate_limited`, `quota_exhausted` or `key_rejected` (the `reason` of `pauses_total`).
    pub reason: String,
    pub since: chrono::DateTime<chrono::Utc>,
    /// When the pause ends (a 429) or when its probe may go (quota, key).
    pub until: chrono::DateTime<chrono::Utc>,
    /// Whether it ends with one successful probe rather than by time.
    pub probe: bool,
    /// A probe is out right now (another replica's, or this one's).
    pub probing: bool,
    /// The replica whose answer paused the cluster.
    pub paused_by: Option<String>,
    pub http_status: Option<i64>,
    pub api_code: Option<i64>,
}

/// The budget as operators see it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BudgetReport {
    /// As configured by the replica that reserved last (0 before any reservation).
    pub rate_per_second: i64,
    pub burst: i64,
    /// Send times handed out in the last whole minute, and so far in this one.
    pub used_last_minute: i64,
    pub used_this_minute: i64,
    /// The pause in force, if any.
    pub pause: Option<Pause>,
}

/// A pause one replica saw, for the whole cluster.
#[derive(Debug, Clone, Copy)]
pub struct PauseRequest<'a> {
    /// The answer's class: which pause this is; a worse one is not replaced by a milder one.
    pub reason: AnswerClass,
    /// The replica whose request got the answer (shown as `paused_by`).
    pub instance_id: &'a str,
    /// How long the answer asks the cluster to wait (a 429's `Retry-After`, the quota's window).
    pub wait_us: i64,
    /// Ends with a probe (quota, key), or by time (429).
    pub probe: bool,
    /// The answer as the API gave it, for operators (`status`, the page).
    pub http_status: Option<u16>,
    pub api_code: Option<i64>,
    /// Resume paced, not with a burst: `tat` moves to the pause's end plus this.
    pub tolerance_us: i64,
}

fn time(us: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_micros(us).unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC)
}

/// Severity of a pause reason: a worse one is not replaced by a milder one while it lasts.
fn severity(reason: &str) -> u8 {
    match reason {
        "key_rejected" => 3,
        "quota_exhausted" => 2,
        _ => 1,
    }
}

impl BudgetRow {
    /// The pause in force at `now_us`, if any. A 429's pause past its end is over.
    pub fn pause(&self) -> Option<Pause> {
        let until = self.paused_until_us.unwrap_or(0);
        let in_force = self.paused && (self.pause_probe || until > self.now_us);
        in_force.then(|| Pause {
            reason: self.pause_reason.clone().unwrap_or_else(|| "rate_limited".into()),
            since: time(self.paused_since_us.unwrap_or(self.now_us)),
            until: time(until),
            probe: self.pause_probe,
            probing: self.probe_out(),
            paused_by: self.paused_by.clone(),
            http_status: self.pause_http_status,
            api_code: self.pause_api_code,
        })
    }

    fn probe_out(&self) -> bool {
        self.probe_owner.is_some() && self.probe_until_us.unwrap_or(0) > self.now_us
    }

    pub fn report(&self) -> BudgetReport {
        let (used_last_minute, used_this_minute) = self.minutes();
        BudgetReport {
            rate_per_second: self.rate_per_second,
            burst: self.burst,
            used_last_minute,
            used_this_minute,
            pause: self.pause(),
        }
    }

    /// (last whole minute, this minute) as of `now_us`, rolling the counters forward.
    fn minutes(&self) -> (i64, i64) {
        let this = self.now_us - self.now_us.rem_euclid(MINUTE_US);
        if self.minute_start_us == this {
            (self.last_minute_reserved, self.minute_reserved)
        } else if self.minute_start_us == this - MINUTE_US {
            (self.minute_reserved, 0)
        } else {
            (0, 0)
        }
    }

    fn count_reserved(&mut self, n: i64) {
        let (last, this) = self.minutes();
        self.minute_start_us = self.now_us - self.now_us.rem_euclid(MINUTE_US);
        self.last_minute_reserved = last;
        self.minute_reserved = this.saturating_add(n);
    }

    /// Hands out send times (or the probe, or nothing while paused) and updates the row.
    pub fn decide_reservation(&mut self, request: &ReserveRequest<'_>) -> Reservation {
        let now = self.now_us;
        self.rate_per_second = i64::from(request.rate_per_second);
        self.burst = i64::from(request.burst);
        let want = i64::from(request.want.max(1));
        let mut probe = false;
        if let Some(pause) = self.pause() {
            let due = !pause.probing && self.paused_until_us.unwrap_or(0) <= now;
            let probe_may_go = pause.probe && (due || request.fresh);
            if !probe_may_go {
                return Reservation::Paused(pause);
            }
            self.probe_owner = Some(request.instance_id.to_owned());
            self.probe_until_us = Some(now.saturating_add(request.probe_lease_us));
            probe = true;
        } else if self.paused {
            // A 429's pause ran out: the cluster is open again.
            self.paused = false;
        }
        if probe {
            // The probe goes now, alone: the budget's timeline stays where the pause put it
            // (after the pause's end), and the probe's success moves it back.
            self.count_reserved(1);
            return Reservation::Probe {
                now_us: now,
                read_at: self.read_at,
                at_us: now,
            };
        }
        let (t, tau) = (request.interval_us(), request.tolerance_us());
        let base = self.tat_us.max(now);
        let at_us: Vec<i64> = (0..want).map(|i| now.max(base + i * t - tau)).collect();
        self.tat_us = base.saturating_add(want * t);
        self.count_reserved(want);
        Reservation::Slots {
            now_us: now,
            read_at: self.read_at,
            at_us,
        }
    }

    /// Records a pause for the whole cluster. Returns whether it is news (the cluster was not
    /// paused already), so only the replica that started it logs it as such.
    pub fn decide_pause(&mut self, request: &PauseRequest<'_>) -> bool {
        let now = self.now_us;
        let until = now.saturating_add(request.wait_us.max(0));
        let current = self.pause();
        let news = current.is_none();
        let reason = request.reason.label();
        let keep_reason = current.as_ref().is_some_and(|p| severity(&p.reason) > severity(reason));
        if news {
            self.paused_since_us = Some(now);
            self.pause_probe = false;
        }
        if !keep_reason {
            self.pause_reason = Some(reason.to_owned());
            self.paused_by = Some(request.instance_id.to_owned());
            self.pause_http_status = request.http_status.map(i64::from);
            self.pause_api_code = request.api_code;
        }
        self.paused = true;
        self.pause_probe |= request.probe;
        self.paused_until_us = Some(self.paused_until_us.filter(|_| !news).unwrap_or(0).max(until));
        // The probe that was out (if any) has its answer: the next one goes after the new end.
        self.probe_owner = None;
        self.probe_until_us = None;
        self.tat_us = self.tat_us.max(until.saturating_add(request.tolerance_us));
        news
    }
}

#[cfg(test)]
#[path = "budget_tests.rs"]
mod tests;
