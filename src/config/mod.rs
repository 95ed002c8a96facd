//! Typed configuration: what the daemon runs with, with durations as `Duration` and the apikey
//! as a secret. Loading, layering and validation live in [`load`].

mod defaults;
mod load;
mod values;

use std::net::SocketAddr;
use std::time::Duration;

use reqwest::Url;
use secrecy::SecretString;

pub use defaults::{ENV_PREFIX, MAX_DURATION};
pub use load::{ConfigErrors, Sources, load};
pub use values::data_center_host;

/// Exit code for bad configuration (sysexits `EX_CONFIG`); systemd is told not to restart on it.
pub const EXIT_CONFIG: i32 = 78;

#[derive(Debug, Clone)]
pub struct Config {
    pub database: DatabaseConfig,
    pub api: ApiConfig,
    pub worker: WorkerConfig,
    pub retry: RetryConfig,
    pub shutdown: ShutdownConfig,
    pub log: LogConfig,
    pub http: HttpConfig,
    pub retention: RetentionConfig,
}

#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// `sqlite://...` or `postgres://...`; may carry a password, so print it with [`redact_url`].
    pub url: String,
}

#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Scheme, host and optional path prefix; the session path is appended to it.
    pub base_url: Url,
    /// `None` only for commands that never call the API (`migrate`, `status`, ...).
    pub apikey: Option<SecretString>,
    pub timeout: Duration,
    pub connect_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub concurrency: usize,
    pub rate_per_second: u32,
    pub burst: u32,
    pub stale_after: Duration,
    pub lease: Duration,
    pub batch_size: u32,
    pub poll_interval: Duration,
}

#[derive(Debug, Clone)]
pub struct RetryConfig {
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// How long the whole pool stops after the account's quota is spent (code 1845).
    pub quota_pause: Duration,
    /// How long the whole pool stops after the apikey is rejected (1846, 1837, 1877).
    pub key_pause: Duration,
}

#[derive(Debug, Clone)]
pub struct ShutdownConfig {
    pub grace: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
    pub summary_interval: Duration,
}

#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Health and metrics listener; off when `None`.
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, Clone)]
pub struct RetentionConfig {
    /// Finished rows older than this are pruned by the daemon; `None` keeps them forever.
    pub finished: Option<Duration>,
}

impl Config {
    /// The effective configuration as TOML-like lines, the apikey and passwords redacted.
    pub fn render(&self) -> String {
        let d = |d: Duration| humantime::format_duration(d).to_string();
        let apikey = if self.api.apikey.is_some() {
            "\"[redacted]\""
        } else {
            "(none)"
        };
        let listen = self.http.listen.map_or("(off)".to_owned(), |a| a.to_string());
        let finished = self.retention.finished.map_or("(keep forever)".to_owned(), d);
        let format = match self.log.format {
            LogFormat::Json => "json",
            LogFormat::Pretty => "pretty",
        };
        [
            "[database]".to_owned(),
            format!("url = \"{}\"", redact_url(&self.database.url)),
            "[api]".to_owned(),
            format!("base_url = \"{}\"", self.api.base_url),
            format!("apikey = {apikey}"),
            format!("timeout = \"{}\"", d(self.api.timeout)),
            format!("connect_timeout = \"{}\"", d(self.api.connect_timeout)),
            "[worker]".to_owned(),
            format!("concurrency = {}", self.worker.concurrency),
            format!("rate_per_second = {}", self.worker.rate_per_second),
            format!("burst = {}", self.worker.burst),
            format!("stale_after = \"{}\"", d(self.worker.stale_after)),
            format!("lease = \"{}\"", d(self.worker.lease)),
            format!("batch_size = {}", self.worker.batch_size),
            format!("poll_interval = \"{}\"", d(self.worker.poll_interval)),
            "[retry]".to_owned(),
            format!("max_attempts = {}", self.retry.max_attempts),
            format!("base_delay = \"{}\"", d(self.retry.base_delay)),
            format!("max_delay = \"{}\"", d(self.retry.max_delay)),
            format!("quota_pause = \"{}\"", d(self.retry.quota_pause)),
            format!("key_pause = \"{}\"", d(self.retry.key_pause)),
            "[shutdown]".to_owned(),
            format!("grace = \"{}\"", d(self.shutdown.grace)),
            "[log]".to_owned(),
            format!("format = \"{format}\""),
            format!("level = \"{}\"", self.log.level),
            format!("summary_interval = \"{}\"", d(self.log.summary_interval)),
            "[http]".to_owned(),
            format!("listen = {listen}"),
            "[retention]".to_owned(),
            format!("finished = {finished}"),
        ]
        .join("\n")
    }
}

/// A database URL with its password replaced, for output an operator may paste anywhere.
pub fn redact_url(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("redacted"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}
