//! Structured logs: JSON lines by default (one object per event, with the current span's fields),
//! human-readable with `log.format = "pretty"`.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

use crate::config::{LogConfig, LogFormat};

/// Dependencies that log at debug/trace about connections; kept at warn unless asked by name.
const QUIET_DEPENDENCIES: &str =
    "hyper=warn,hyper_util=warn,reqwest=warn,h2=warn,rustls=warn,sqlx=warn,tower=warn,axum=warn";

/// Installs the global subscriber; logs go to stderr so `status --json` keeps stdout clean.
pub fn init(config: &LogConfig) {
    let filter = filter(&config.level);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_span_events(FmtSpan::NONE);
    let _ = match config.format {
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(false).try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}

/// `log.level` as given, with chatty dependencies quietened unless the level names them.
fn filter(level: &str) -> EnvFilter {
    let directives = if level.contains('=') {
        level.to_owned()
    } else {
        format!("{level},{QUIET_DEPENDENCIES}")
    };
    EnvFilter::try_new(directives).unwrap_or_else(|_| EnvFilter::new("info"))
}
