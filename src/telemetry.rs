//! Structured logs: JSON lines by default (one object per event, with the current span's fields),
//! human-readable with `log.format = "pretty"`.

mod json_lines;
mod log_writer;

use std::io::IsTerminal;

pub use log_writer::LogGuard;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::FmtSpan;

use crate::config::{LogConfig, LogFormat, SessionIdLogging};

/// Dependencies that log at debug/trace about connections; kept at warn unless asked by name.
const QUIET_DEPENDENCIES: &str =
    "hyper=warn,hyper_util=warn,reqwest=warn,h2=warn,rustls=warn,sqlx=warn,tower=warn,axum=warn";

/// What `log.level` accepts, for the error message.
const LEVELS: &str = "error, warn, info, debug, trace, off";

/// Installs the global subscriber; logs go to stderr so `status --json` keeps stdout clean.
///
/// Lines are written by a thread of their own (`log_writer`): a slow or stuck reader of stderr (a
/// full pipe, a stalled log shipper) must not stop the runtime, which may be holding SQLite's
/// write lock. If the buffer fills, lines are dropped (and counted) rather than stalling
/// deletions. Keep the returned guard alive until exit: dropping it flushes what is buffered.
///
/// Colour only when stderr is a terminal: a pipe, a file or the journal gets plain text.
pub fn init(config: &LogConfig) -> LogGuard {
    crate::session_id::log_whole_ids(config.session_ids == SessionIdLogging::Full);
    let (writer, guard) = log_writer::LogWriter::spawn(std::io::stderr());
    // `log.level` was checked when the configuration was loaded.
    let filter = filter(&config.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(std::io::stderr().is_terminal())
        .with_span_events(FmtSpan::NONE);
    let _ = match config.format {
        // The same objects as `builder.json().with_current_span(true).with_span_list(false)`.
        LogFormat::Json => builder.json().event_format(json_lines::JsonLines).try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
    guard
}

/// `log.level` as a filter, with chatty dependencies quietened unless the level names them, or
/// why it is not one. A bare word must be a level: `EnvFilter` would read `warning` as "trace
/// for the target named warning", which silently logs nothing of ours below error.
pub fn filter(level: &str) -> Result<EnvFilter, String> {
    let invalid = |why: String| {
        format!(
            "{why}; expected one of the levels {LEVELS}, or a filter of comma-separated \
             directives like \"info,session_reaper=debug\""
        )
    };
    if level.trim().is_empty() {
        return Err(invalid("empty".to_owned()));
    }
    for directive in level.split(',').map(str::trim) {
        let level_part = match directive.rsplit_once('=') {
            Some((_, level_part)) => level_part,
            None => directive,
        };
        if directive.is_empty() || level_part.parse::<LevelFilter>().is_err() {
            return Err(invalid(format!("{directive:?} is not a level")));
        }
    }
    let directives = if level.contains('=') {
        level.to_owned()
    } else {
        format!("{level},{QUIET_DEPENDENCIES}")
    };
    EnvFilter::builder()
        .parse(directives)
        .map_err(|e| invalid(format!("{level:?} is not a filter ({e})")))
}
