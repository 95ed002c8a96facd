//! `run`: the daemon (or, with `--once`, one pass over what is due).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::api::ApiClient;
use crate::config::{Config, redact_url};
use crate::metrics::Metrics;
use crate::store::Store;
use crate::worker::{Reaper, RunMode};

/// Longest wait between attempts to reach the database at startup.
const MAX_STARTUP_BACKOFF: Duration = Duration::from_secs(10);

pub async fn run(config: Config, once: bool) -> anyhow::Result<()> {
    let shutdown = crate::shutdown::on_signals().context("Failed to install signal handlers")?;
    let api = ApiClient::new(&config.api)?;
    let metrics = Arc::new(Metrics::new());
    // Liveness answers from the start: a database that is still coming up is not a dead process.
    let listener_stop = CancellationToken::new();
    if let Some(listen) = config.http.listen {
        crate::http::serve(listen, metrics.clone(), listener_stop.clone()).await?;
    }
    let Some(store) = connect_with_retry(&config, &shutdown, &metrics).await else {
        return Ok(());
    };
    crate::systemd::notify_ready();
    let mode = if once { RunMode::Once } else { RunMode::Daemon };
    let result = Reaper::new(config, store.clone(), api, metrics)
        .run(mode, shutdown)
        .await;
    listener_stop.cancel();
    store.close().await;
    result
}

/// Connects and migrates, retrying with backoff while the database is away: a database that
/// starts after us is not a reason to crash-loop. `None` when shutdown came first.
async fn connect_with_retry(config: &Config, shutdown: &CancellationToken, metrics: &Metrics) -> Option<Store> {
    let mut wait = Duration::from_millis(500);
    let mut reported = false;
    loop {
        metrics.tick();
        let opened = super::open_store(config).await;
        metrics.database_result(&opened);
        match opened {
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
