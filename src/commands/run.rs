//! `run`: the daemon (or, with `--once`, one pass over what is due).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::api::ApiClient;
use crate::config::{Config, redact_url};
use crate::health::Health;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::worker::{Backoff, Outage, Reaper, RunMode};

/// Waits between attempts to reach the database at startup: the first and the most.
const STARTUP_BACKOFF: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(10));

pub async fn run(config: Config, once: bool) -> anyhow::Result<()> {
    let shutdown = crate::shutdown::on_signals().context("Failed to install signal handlers")?;
    let api = ApiClient::new(&config.api)?;
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    // Liveness answers from the start: a database that is still coming up is not a dead process.
    let listener_stop = CancellationToken::new();
    if let Some(listen) = config.http.listen {
        crate::http::serve(listen, metrics.clone(), health.clone(), listener_stop.clone(), &config).await?;
    }
    let Some(store) = connect_with_retry(&config, &shutdown, &health).await else {
        return Ok(());
    };
    crate::systemd::notify_ready();
    let mode = if once { RunMode::Once } else { RunMode::Daemon };
    let result = Reaper::new(config, store.clone(), api, metrics, health)
        .run(mode, shutdown)
        .await;
    listener_stop.cancel();
    store.close().await;
    result
}

/// Connects and migrates, retrying with backoff while the database is away: a database that
/// starts after us is not a reason to crash-loop. `None` when shutdown came first.
async fn connect_with_retry(config: &Config, shutdown: &CancellationToken, health: &Health) -> Option<Store> {
    let outage = Outage::new(
        "database unavailable at startup; retrying with backoff",
        "database reachable; starting",
    );
    let mut backoff = Backoff::new(STARTUP_BACKOFF.0, STARTUP_BACKOFF.1);
    loop {
        health.tick();
        let opened = super::open_store(config).await;
        health.set_database_ok(opened.is_ok());
        match opened {
            Ok(store) => {
                outage.succeeded();
                return Some(store);
            }
            Err(e) => {
                outage.failed(&e.context(format!("database {}", redact_url(&config.database.url))));
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next_wait()) => {}
                    _ = shutdown.cancelled() => return None,
                }
            }
        }
    }
}
