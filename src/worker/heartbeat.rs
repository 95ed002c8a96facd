//! Every third of a lease: renew our leases, tell the instances table we are alive, and look at
//! the cluster's pause (a replica with nothing to send reserves no send times, so this is how it
//! learns of a pause for `/readyz` and its metrics). The budget itself needs no heartbeat: every
//! send time comes from the database (`budget.rs`).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::budget::Budget;
use super::held::Held;
use super::outage::Outage;
use crate::clock::Clock;
use crate::config::WorkerConfig;
use crate::metrics::Metrics;
use crate::store::{InstanceBeat, Store, chrono_duration};

/// A replica silent this many leases is removed from the instances table.
const FORGET_AFTER_LEASES: u32 = 10;

pub struct Heartbeat {
    pub store: Store,
    pub instance_id: String,
    /// Read once at start: the host name does not change while we run.
    pub host: String,
    pub started_at: DateTime<Utc>,
    pub worker: WorkerConfig,
    /// The cluster's budget, which takes the pause the heartbeat reads.
    pub budget: Arc<Budget>,
    pub metrics: Arc<Metrics>,
    pub clock: Clock,
    /// Rows claimed and not yet written back: the leases to renew.
    pub held: Arc<Held>,
    /// Failing renewals and heartbeats are reported once when they start and once when they
    /// end, not on every beat.
    pub trouble: HeartbeatTrouble,
}

/// What the heartbeat reports once per episode.
pub struct HeartbeatTrouble {
    renewals: Outage,
    beats: Outage,
    /// Whether rows locked by another transaction are being skipped (said once per episode).
    locked_rows: std::sync::atomic::AtomicBool,
}

impl Default for HeartbeatTrouble {
    fn default() -> Self {
        Self {
            renewals: Outage::new("could not renew leases", "database is back: leases renewed again"),
            beats: Outage::new(
                "could not record the heartbeat",
                "database is back: heartbeat recorded again",
            ),
            locked_rows: Default::default(),
        }
    }
}

impl Heartbeat {
    /// One heartbeat; also run once before the first claim, so a new replica is listed at once.
    pub async fn beat(&self) {
        let now = self.clock.now();
        let held = self.held.ids();
        if !held.is_empty() {
            let until = now + chrono_duration(self.worker.lease);
            match self.store.renew_leases(&self.instance_id, &held, until).await {
                Ok(renewal) => {
                    self.trouble.renewals.succeeded();
                    self.note_locked(renewal.locked);
                }
                Err(e) => {
                    self.trouble.renewals.failed(&e);
                }
            }
        }
        let beat = self.instance();
        let lease = self.worker.lease;
        match self.store.beat(&beat, now, lease, lease * FORGET_AFTER_LEASES).await {
            Ok((live, budget)) => {
                self.trouble.beats.succeeded();
                self.metrics.set_live_instances(live.max(1));
                self.budget.observe(&budget);
            }
            Err(e) => {
                self.trouble.beats.failed(&e);
            }
        }
    }

    /// Rows the application holds locked are skipped by the renewal; said once per episode.
    fn note_locked(&self, locked: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let was = self.trouble.locked_rows.swap(locked > 0, Relaxed);
        if locked > 0 && !was {
            tracing::warn!(
                locked,
                "lease renewal skipped rows another transaction holds locked; their leases run on \
                 and another replica may take them over if the lock outlasts the lease"
            );
        } else if locked == 0 && was {
            tracing::info!("lease renewal reaches every held row again");
        }
    }

    fn instance(&self) -> InstanceBeat {
        InstanceBeat {
            instance_id: self.instance_id.clone(),
            host: self.host.clone(),
            pid: i32::try_from(std::process::id()).unwrap_or(i32::MAX),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at: self.started_at,
            in_flight: i32::try_from(self.metrics.in_flight_now()).unwrap_or(i32::MAX),
            rate_limit: i32::try_from(self.budget.rate_per_second()).unwrap_or(i32::MAX),
            counts: self.metrics.outcome_counts(),
        }
    }

    /// Beats until `stop`, then removes this replica from the instances table.
    pub async fn run(self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.worker.lease / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! { _ = tick.tick() => {}, _ = stop.cancelled() => break }
            self.beat().await;
        }
        if let Err(e) = self.store.remove_instance(&self.instance_id).await {
            tracing::warn!(
                error = format!("{e:#}"),
                "could not remove this instance from reaper_instances"
            );
        }
    }
}

pub fn hostname() -> String {
    // uname(2), not /proc/sys/kernel/hostname: systemd's ProcSubset=pid hides /proc/sys.
    // SAFETY: `utsname` is plain bytes, so zeroed is valid; uname fills it and NUL-terminates
    // `nodename`, which is read only when it succeeded.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    let kernel = (unsafe { libc::uname(&mut uts) } == 0)
        .then(|| unsafe { std::ffi::CStr::from_ptr(uts.nodename.as_ptr()) })
        .map(|name| name.to_string_lossy().trim().to_owned())
        .filter(|name| !name.is_empty());
    kernel
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_owned())
}
