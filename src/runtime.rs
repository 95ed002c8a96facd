//! The tokio runtime a command runs on, chosen once its configuration is known.
//!
//! A sidecar that sends 10 to 200 requests a second has work for a fraction of one core, and on
//! two runtime threads most of its wake-ups were one thread unparking the other to hand over a
//! task (issue #18: a third of all wake-ups at 200/s). So `run` with a low budget runs on the
//! current-thread runtime: every task on the thread that called `block_on`, no hand-overs, no
//! work-stealing. SQLite's connections keep their own threads (sqlx), and `spawn_blocking` still
//! has its pool, so nothing that blocks lands on the runtime's one thread. Full speed, and every
//! command without a budget (the stand-in serves the benchmark's traffic), keep tokio's default
//! multi-threaded runtime.

use crate::config::Config;

/// `run` at or below this budget (`worker.rate_per_second`) runs on one thread: a thousand
/// deletions a second is about a tenth of a core at full speed's cost per deletion, well within
/// one thread, while above it the second thread pays for itself.
pub const ONE_THREAD_UP_TO: u32 = 1_000;

/// Which runtime a command gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// Everything on the calling thread (`run` at a low budget; `TOKIO_WORKER_THREADS` does
    /// not apply).
    OneThread,
    /// tokio's multi-threaded default, a worker per core (`TOKIO_WORKER_THREADS` to change).
    Default,
}

impl Flavor {
    /// The runtime for `run` with this configuration, or for any other command (`run: false`).
    pub fn for_command(run: bool, config: Option<&Config>) -> Self {
        match config {
            Some(config) if run && config.worker.rate_per_second <= ONE_THREAD_UP_TO => Flavor::OneThread,
            _ => Flavor::Default,
        }
    }

    /// Builds the runtime, with its I/O and timer drivers.
    pub fn build(self) -> std::io::Result<tokio::runtime::Runtime> {
        let mut builder = match self {
            Flavor::OneThread => tokio::runtime::Builder::new_current_thread(),
            Flavor::Default => tokio::runtime::Builder::new_multi_thread(),
        };
        builder.enable_all().build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_at(rate_per_second: u32) -> Config {
        let sources = crate::config::Sources {
            file: None,
            env: [(
                "SESSION_REAPER_WORKER__RATE_PER_SECOND".to_owned(),
                rate_per_second.to_string(),
            )]
            .into(),
            needs_apikey: false,
        };
        crate::config::load(&sources).expect("a valid configuration")
    }

    #[test]
    fn run_at_a_low_budget_gets_one_thread_and_full_speed_the_default() {
        assert_eq!(Flavor::for_command(true, Some(&config_at(10))), Flavor::OneThread);
        assert_eq!(
            Flavor::for_command(true, Some(&config_at(ONE_THREAD_UP_TO))),
            Flavor::OneThread
        );
        assert_eq!(
            Flavor::for_command(true, Some(&config_at(ONE_THREAD_UP_TO + 1))),
            Flavor::Default
        );
    }

    #[test]
    fn commands_other_than_run_keep_the_default_runtime() {
        assert_eq!(Flavor::for_command(false, Some(&config_at(10))), Flavor::Default);
        assert_eq!(Flavor::for_command(false, None), Flavor::Default);
    }
}
