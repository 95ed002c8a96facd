//! Wall-clock time, passed in rather than read inline, so tests of retry timing, pauses and
//! leases can run at a fixed `t0`. (Waiting uses tokio's timers, which tests can pause.)

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};

/// Where "now" comes from: the system clock in the daemon, a fixed or stepped time in tests.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>);

impl Clock {
    pub fn system() -> Self {
        Self(Arc::new(Utc::now))
    }

    /// Always `at`.
    pub fn fixed(at: DateTime<Utc>) -> Self {
        Self(Arc::new(move || at))
    }

    pub fn now(&self) -> DateTime<Utc> {
        (self.0)()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Clock({})", self.now().to_rfc3339())
    }
}
