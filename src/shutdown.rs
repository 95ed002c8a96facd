//! Signals, as tools really send them.
//!
//! - SIGTERM, SIGINT or SIGHUP asks for a graceful stop (no new claims, requests in flight
//!   finish within `shutdown.grace`, outcomes written, queued rows released).
//! - Repeated SIGTERMs and SIGHUPs count as one: GNU `timeout`, `kill` of a process group and
//!   container runtimes signal the daemon more than once, and each of them escalates with SIGKILL
//!   on its own when it stops waiting.
//! - A second SIGINT (Ctrl-C twice, a person in a hurry) or any SIGQUIT exits at once; the leases
//!   then run out and another run picks the rows up.
//!
//! SIGHUP stops gracefully rather than reloading: most settings (database URL, pool sizes,
//! concurrency, the listener) cannot change under a running pool, and both systemd
//! (`systemctl restart`) and Kubernetes (a rollout) restart a daemon to apply new configuration.
//! A terminal that hangs up (the other meaning of SIGHUP) should stop it cleanly too.

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Exit code after a second SIGINT (128 + SIGINT, as shells report an interrupt).
pub const EXIT_FORCED: i32 = 130;
/// Exit code after SIGQUIT (128 + SIGQUIT).
pub const EXIT_QUIT: i32 = 131;

/// Which signal arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    Term,
    Interrupt,
    Hangup,
    Quit,
}

/// What the process does about one more signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaction {
    /// Begin the graceful stop.
    StopGracefully,
    /// Already stopping: this one counts as the first.
    AlreadyStopping,
    /// Exit now with this code.
    ExitNow(i32),
}

/// The signal state machine: `stopping` is whether a graceful stop has begun.
pub fn react(stopping: bool, signal: Received) -> Reaction {
    match (stopping, signal) {
        (_, Received::Quit) => Reaction::ExitNow(EXIT_QUIT),
        (false, _) => Reaction::StopGracefully,
        (true, Received::Interrupt) => Reaction::ExitNow(EXIT_FORCED),
        (true, Received::Term | Received::Hangup) => Reaction::AlreadyStopping,
    }
}

/// Cancels the returned token on the first stop signal; exits the process on a forcing one.
pub fn on_signals() -> std::io::Result<CancellationToken> {
    let token = CancellationToken::new();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut quit = signal(SignalKind::quit())?;
    let cancel = token.clone();
    tokio::spawn(async move {
        let mut told_already_stopping = false;
        loop {
            let received = tokio::select! {
                _ = term.recv() => Received::Term,
                _ = int.recv() => Received::Interrupt,
                _ = hup.recv() => Received::Hangup,
                _ = quit.recv() => Received::Quit,
            };
            match react(cancel.is_cancelled(), received) {
                Reaction::StopGracefully => {
                    tracing::info!(signal = ?received,
                        "signal received: stopping gracefully (Ctrl-C again or SIGQUIT exits at once)");
                    crate::systemd::notify_stopping();
                    cancel.cancel();
                }
                Reaction::AlreadyStopping => {
                    if !told_already_stopping {
                        tracing::info!(signal = ?received, "another stop signal: already stopping gracefully");
                        told_already_stopping = true;
                    }
                }
                Reaction::ExitNow(code) => {
                    tracing::warn!(signal = ?received,
                        "exiting now; leased rows come free when their leases run out");
                    std::process::exit(code);
                }
            }
        }
    });
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_terms_and_hangups_count_as_one_stop() {
        assert_eq!(react(false, Received::Term), Reaction::StopGracefully);
        assert_eq!(react(true, Received::Term), Reaction::AlreadyStopping);
        assert_eq!(react(true, Received::Hangup), Reaction::AlreadyStopping);
        assert_eq!(react(false, Received::Hangup), Reaction::StopGracefully);
    }

    #[test]
    fn a_second_interrupt_or_any_quit_exits_at_once() {
        assert_eq!(react(false, Received::Interrupt), Reaction::StopGracefully);
        assert_eq!(react(true, Received::Interrupt), Reaction::ExitNow(EXIT_FORCED));
        assert_eq!(react(false, Received::Quit), Reaction::ExitNow(EXIT_QUIT));
    }
}
