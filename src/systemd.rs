//! systemd's notify protocol (a no-op when `NOTIFY_SOCKET` is unset): READY=1 once the daemon
//! can work, STATUS= lines, WATCHDOG=1 from the work loop, STOPPING=1 on shutdown.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use sd_notify::NotifyState;

/// READY=1 with a first STATUS= line in the same message, so `systemctl status` never shows an
/// active daemon without one (the periodic summary replaces it).
pub fn notify_ready() {
    let _ = sd_notify::notify(&[NotifyState::Ready, NotifyState::Status("ready: claiming due rows")]);
}

pub fn notify_stopping() {
    let _ = sd_notify::notify(&[NotifyState::Stopping]);
}

pub fn notify_status(status: &str) {
    let _ = sd_notify::notify(&[NotifyState::Status(status)]);
}

pub fn notify_watchdog() {
    let _ = sd_notify::notify(&[NotifyState::Watchdog]);
}

/// Pets systemd's watchdog at most every half `WatchdogSec=`; does nothing when it is unset.
pub struct Watchdog {
    every: Option<Duration>,
    last: Mutex<Option<Instant>>,
}

impl Watchdog {
    pub fn from_env() -> Self {
        Self {
            every: watchdog_interval(),
            last: Mutex::new(None),
        }
    }

    pub fn pet(&self) {
        let Some(every) = self.every else { return };
        let mut last = self.last.lock().expect("watchdog lock");
        if last.is_none_or(|at| at.elapsed() >= every) {
            notify_watchdog();
            *last = Some(Instant::now());
        }
    }
}

/// How often to pet the watchdog: half of `WatchdogSec=`, or never when it is unset.
fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok()? != std::process::id()
    {
        return None;
    }
    Some(Duration::from_micros(usec) / 2)
}
