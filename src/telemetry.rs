//! Structured logs: JSON lines by default (one object per event, with the current span's fields),
//! human-readable with `log.format = "pretty"`.

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

use crate::config::{LogConfig, LogFormat};

/// Dependencies that log at debug/trace about connections; kept at warn unless asked by name.
const QUIET_DEPENDENCIES: &str =
    "hyper=warn,hyper_util=warn,reqwest=warn,h2=warn,rustls=warn,sqlx=warn,tower=warn,axum=warn";

/// Installs the global subscriber; logs go to stderr so `status --json` keeps stdout clean.
///
/// Lines are written by a thread of their own: a slow or stuck reader of stderr (a full pipe, a
/// stalled log shipper) must not stop the runtime, which may be holding SQLite's write lock. If
/// the buffer fills, lines are dropped (and counted) rather than stalling deletions. Keep the
/// returned guard alive until exit: dropping it flushes what is buffered.
pub fn init(config: &LogConfig) -> WorkerGuard {
    let (writer, guard) = tracing_appender::non_blocking(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(&config.level))
        .with_writer(writer)
        .with_span_events(FmtSpan::NONE);
    let _ = match config.format {
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(false).try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
    guard
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
