//! `run`: the daemon (or, with `--once`, one pass over what is due).

use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::api::ApiClient;
use crate::config::{Config, redact_url};
use crate::store::Store;
use crate::worker::{Reaper, RunMode};

/// Longest wait between attempts to reach the database at startup.
const MAX_STARTUP_BACKOFF: Duration = Duration::from_secs(30);

pub async fn run(config: Config, once: bool) -> anyhow::Result<()> {
    let shutdown = crate::shutdown::on_signals().context("Failed to install signal handlers")?;
    let api = ApiClient::new(&config.api)?;
    let Some(store) = connect_with_retry(&config, &shutdown).await else {
        return Ok(());
    };
    crate::systemd::notify_ready();
    let mode = if once { RunMode::Once } else { RunMode::Daemon };
    Reaper::new(config, store, api).run(mode, shutdown).await
}

/// Connects and migrates, retrying with backoff while the database is away: a database that
/// starts after us is not a reason to crash-loop. `None` when shutdown came first.
async fn connect_with_retry(config: &Config, shutdown: &CancellationToken) -> Option<Store> {
    let mut wait = Duration::from_millis(500);
    let mut reported = false;
    loop {
        match super::open_store(config).await {
            Ok(store) => {
                if reported {
                    tracing::info!("database reachable; starting");
                }
                return Some(store);
            }
            Err(e) => {
                if !reported {
                    tracing::error!(error = format!("{e:#}"), database = %redact_url(&config.database.url),
                        "database unavailable at startup; retrying with backoff");
                    reported = true;
                }
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.cancelled() => return None,
                }
                wait = (wait * 2).min(MAX_STARTUP_BACKOFF);
            }
        }
    }
}
