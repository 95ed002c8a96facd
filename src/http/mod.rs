//! Health, metrics and the status page on one listener, off unless `http.listen` is set:
//! `/livez` (the work loop turned recently), `/readyz` (database reachable and the apikey not
//! rejected), `/metrics` (Prometheus text format), `/` (the status page, HTML) and
//! `/status.json` (the same data as JSON; see `page`).

mod chart;
mod page;
mod render;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::health::Health;
use crate::metrics::Metrics;

/// The loop turns every second even when idle; this much silence means it is stuck.
pub const LIVENESS_LIMIT: Duration = Duration::from_secs(30);

/// Binds `listen` and serves until `stop`. Binding errors surface at once. The status page
/// reads `config`'s database through a read-only store of its own, opened at the first view
/// (the daemon's store does not exist yet when the listener starts).
pub async fn serve(
    listen: SocketAddr,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    stop: CancellationToken,
    config: &Config,
) -> anyhow::Result<SocketAddr> {
    let page = Arc::new(page::Page::new(config, metrics.clone(), health.clone()));
    let app = Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .with_state(health)
        .merge(Router::new().route("/metrics", get(render_metrics)).with_state(metrics))
        .merge(
            Router::new()
                .route("/", get(page::html))
                .route("/status.json", get(page::json))
                .with_state(page),
        );
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("Failed to listen on {listen} (http.listen)"))?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
        {
            tracing::error!(error = %e, "the health and metrics listener failed");
        }
    });
    tracing::info!(listen = %bound, "health and metrics listening");
    Ok(bound)
}

async fn livez(State(health): State<Arc<Health>>) -> Response {
    let silent = health.since_tick();
    if silent <= LIVENESS_LIMIT {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        let body = format!("work loop silent for {}s\n", silent.as_secs());
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

/// 503 while the database is unreachable or the key is rejected; a pause of the cluster's is
/// named in the body either way (a 429's or a spent quota's pause leaves the replica ready).
async fn readyz(State(health): State<Arc<Health>>) -> Response {
    let pause = health.cluster_pause().map_or(String::new(), |(reason, until)| {
        format!("the cluster is paused: {reason} until {}\n", until.to_rfc3339())
    });
    match health.not_ready() {
        None => (StatusCode::OK, format!("ready\n{pause}")).into_response(),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n{pause}")).into_response(),
    }
}

async fn render_metrics(State(metrics): State<Arc<Metrics>>) -> Response {
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    ([(header::CONTENT_TYPE, content_type)], metrics.render()).into_response()
}
