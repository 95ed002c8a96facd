//! `run`: the daemon (or, with `--once`, one pass over what is due).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::Exit;
use crate::api::ApiClient;
use crate::config::{Config, redact_url};
use crate::health::Health;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::worker::{Backoff, Outage, Reaper, RunEnd, RunMode};

/// How long closing the connections may take at exit.
const CLOSE_WITHIN: Duration = Duration::from_millis(500);
/// Waits between attempts to reach the database at startup: the first and the most.
const STARTUP_BACKOFF: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(10));

/// `run --once` exit codes (sysexits): the database stayed unreachable.
pub const EXIT_DATABASE_UNAVAILABLE: u8 = 69;
/// `run --once`: rows are left for the next run (a signal, a spent quota, rows handed back).
pub const EXIT_INCOMPLETE: u8 = 75;
/// `run --once`: the API rejected the apikey.
pub const EXIT_KEY_REJECTED: u8 = 77;

pub async fn run(config: Config, once: bool) -> anyhow::Result<()> {
    super::check_source(&config, false).await?;
    let shutdown = crate::shutdown::on_signals().context("Failed to install signal handlers")?;
    let api = ApiClient::new(&config.api)?;
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    // Liveness answers from the start: a database that is still coming up is not a dead process.
    let listener_stop = CancellationToken::new();
    if let Some(listen) = config.http.listen {
        crate::http::serve(listen, metrics.clone(), health.clone(), listener_stop.clone(), &config).await?;
    }
    let give_up_after = once.then_some(config.database.connect_timeout);
    let store = match connect_with_retry(&config, &shutdown, &health, give_up_after).await {
        Connected::Yes(store) => store,
        // A daemon asked to stop before it could start has done its job; a single pass has not.
        Connected::Stopped if !once => return Ok(()),
        Connected::Stopped => return Err(Exit(EXIT_INCOMPLETE).into()),
        Connected::Failed(e) => return Err(e),
        Connected::GaveUp => {
            tracing::error!(
                database = %redact_url(&config.database.url),
                waited_s = config.database.connect_timeout.as_secs_f64(),
                "the database stayed unreachable for database.connect_timeout: giving up"
            );
            return Err(Exit(EXIT_DATABASE_UNAVAILABLE).into());
        }
    };
    crate::systemd::notify_ready();
    let mode = if once { RunMode::Once } else { RunMode::Daemon };
    let result = Reaper::new(config, store.clone(), api, metrics, health)
        .run(mode, shutdown)
        .await;
    listener_stop.cancel();
    // Closing says goodbye to the server; a database that does not answer gets a moment only.
    let _ = tokio::time::timeout(CLOSE_WITHIN, store.close()).await;
    match result? {
        RunEnd::Done => Ok(()),
        RunEnd::Incomplete | RunEnd::QuotaSpent => Err(Exit(EXIT_INCOMPLETE).into()),
        RunEnd::KeyRejected => Err(Exit(EXIT_KEY_REJECTED).into()),
        RunEnd::DatabaseUnavailable => Err(Exit(EXIT_DATABASE_UNAVAILABLE).into()),
    }
}

/// What connecting at start came to.
enum Connected {
    Yes(Store),
    /// Shutdown came first.
    Stopped,
    /// Unreachable for longer than `give_up_after`.
    GaveUp,
    /// Migrations could not get their lock: an error to show, not to retry.
    Failed(anyhow::Error),
}

/// Connects and migrates, retrying with backoff while the database is away: a database that
/// starts after us is not a reason to crash-loop. `None` when shutdown came first.
async fn connect_with_retry(
    config: &Config,
    shutdown: &CancellationToken,
    health: &Health,
    give_up_after: Option<Duration>,
) -> Connected {
    let started = tokio::time::Instant::now();
    let outage = Outage::new(
        "database unavailable at startup; retrying with backoff",
        "database reachable; starting",
    );
    let mut backoff = Backoff::new(STARTUP_BACKOFF.0, STARTUP_BACKOFF.1);
    loop {
        health.tick();
        let opened = super::open_store(config).await;
        health.set_database_ok(crate::health::DatabaseUse::Write, opened.is_ok());
        match opened {
            Ok(store) => {
                outage.succeeded();
                return Connected::Yes(store);
            }
            Err(e) if e.downcast_ref::<crate::store::MigrationBlocked>().is_some() => return Connected::Failed(e),
            Err(e) => {
                outage.failed(&e.context(format!("database {}", redact_url(&config.database.url))));
                let wait = backoff.next_wait();
                if let Some(limit) = give_up_after {
                    let left = limit.saturating_sub(started.elapsed());
                    if left.is_zero() {
                        return Connected::GaveUp;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(wait.min(left)) => {}
                        _ = shutdown.cancelled() => return Connected::Stopped,
                    }
                    continue;
                }
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.cancelled() => return Connected::Stopped,
                }
            }
        }
    }
}
