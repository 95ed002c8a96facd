//! Signals: the first SIGTERM or SIGINT asks for a graceful stop; a second one exits at once
//! (the leases then run out and another run picks the rows up).

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Exit code after a second signal (128 + SIGINT, as shells report an interrupt).
pub const EXIT_FORCED: i32 = 130;

/// Cancels the returned token on the first signal; exits the process on the second.
pub fn on_signals() -> std::io::Result<CancellationToken> {
    let token = CancellationToken::new();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let cancel = token.clone();
    tokio::spawn(async move {
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        tracing::info!("signal received: stopping gracefully (a second signal exits at once)");
        crate::systemd::notify_stopping();
        cancel.cancel();
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        tracing::warn!("second signal: exiting now; leased rows come free when their leases run out");
        std::process::exit(EXIT_FORCED);
    });
    Ok(token)
}
