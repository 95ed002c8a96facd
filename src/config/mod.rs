//! Typed configuration: what the daemon runs with, with durations as `Duration` and the apikey
//! as a secret. Loading, layering and validation live in [`load`].

mod defaults;
mod env;
mod load;
mod values;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use reqwest::Url;
use secrecy::SecretString;

pub use defaults::{ENV_PREFIX, MAX_DURATION};
pub use load::{ConfigErrors, Sources, ignored_variables, load};
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
    pub source: SourceConfig,
    /// Where each key's value came from, for `check-config`.
    pub provenance: Provenance,
}

/// Where each key's value came from: `default`, `from file ...`, `from environment variable ...`.
#[derive(Debug, Clone, Default)]
pub struct Provenance(pub(crate) BTreeMap<&'static str, String>);

impl Provenance {
    /// The source of `key` as a phrase (`default` when no layer set it).
    pub fn of(&self, key: &str) -> &str {
        self.0.get(key).map_or("default", String::as_str)
    }

    /// Whether a file or a variable set `key`.
    pub fn is_set(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }
}

#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// `sqlite://...` or `postgres://...`; may carry a password, so print it with [`redact_url`].
    pub url: String,
    /// How long `run --once` waits for an unreachable database before it gives up (exit 69).
    pub connect_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// `us`, `eu`, ...: picks `base_url` unless that is set.
    pub data_center: String,
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
    /// How much of a session id a log line carries.
    pub session_ids: SessionIdLogging,
    pub summary_interval: Duration,
}

/// `log.session_ids`: a live session id is a credential (it is the document's edit link), so log
/// lines carry only its first 8 characters unless the operator asks for whole ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SessionIdLogging {
    #[default]
    Prefix,
    Full,
}

impl SessionIdLogging {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionIdLogging::Prefix => "prefix",
            SessionIdLogging::Full => "full",
        }
    }
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

/// `[source]`: stale sessions read from the application's own table. Off unless `query` is set.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// The application's database (`sqlite:` or `postgres://`); `None`: the daemon's `database.url`.
    pub url: Option<String>,
    /// SQL returning a column `session_id` (and optionally `editor`): the sessions stale now.
    pub query: Option<String>,
    pub interval: Duration,
}

impl Config {
    /// The database the source query reads: `source.url`, else the daemon's own.
    pub fn source_url(&self) -> &str {
        self.source.url.as_deref().unwrap_or(&self.database.url)
    }

    /// The effective configuration as TOML (a TOML parser reads it, and so does `--config`), the
    /// apikey and passwords redacted, each value followed by where it came from. Optional keys
    /// that are not set appear as comments.
    pub fn render(&self) -> String {
        let d = |d: Duration| toml_string(&humantime::format_duration(d).to_string());
        let format = match self.log.format {
            LogFormat::Json => "json",
            LogFormat::Pretty => "pretty",
        };
        let mut out = Render {
            lines: Vec::new(),
            provenance: &self.provenance,
        };
        out.section("database");
        out.key("database.url", toml_string(&redact_url(&self.database.url)));
        out.key("database.connect_timeout", d(self.database.connect_timeout));
        out.section("api");
        out.key("api.data_center", toml_string(&self.api.data_center));
        if self.provenance.is_set("api.base_url") {
            out.key("api.base_url", toml_string(self.api.base_url.as_str()));
        } else {
            out.unset("api.base_url", &format!("{} (from data_center)", self.api.base_url));
        }
        match &self.api.apikey {
            Some(_) => out.key("api.apikey", toml_string("[redacted]")),
            None => out.unset("api.apikey", "none (commands that call the API need one)"),
        }
        out.key("api.timeout", d(self.api.timeout));
        out.key("api.connect_timeout", d(self.api.connect_timeout));
        out.section("worker");
        out.key("worker.concurrency", self.worker.concurrency.to_string());
        out.key("worker.rate_per_second", self.worker.rate_per_second.to_string());
        out.key("worker.burst", self.worker.burst.to_string());
        out.key("worker.stale_after", d(self.worker.stale_after));
        out.key("worker.lease", d(self.worker.lease));
        out.key("worker.batch_size", self.worker.batch_size.to_string());
        out.key("worker.poll_interval", d(self.worker.poll_interval));
        out.section("retry");
        out.key("retry.max_attempts", self.retry.max_attempts.to_string());
        out.key("retry.base_delay", d(self.retry.base_delay));
        out.key("retry.max_delay", d(self.retry.max_delay));
        out.key("retry.quota_pause", d(self.retry.quota_pause));
        out.key("retry.key_pause", d(self.retry.key_pause));
        out.section("shutdown");
        out.key("shutdown.grace", d(self.shutdown.grace));
        out.section("log");
        out.key("log.format", toml_string(format));
        out.key("log.level", toml_string(&self.log.level));
        out.key("log.session_ids", toml_string(self.log.session_ids.as_str()));
        out.key("log.summary_interval", d(self.log.summary_interval));
        out.section("http");
        match self.http.listen {
            Some(listen) => out.key("http.listen", toml_string(&listen.to_string())),
            None => out.unset("http.listen", "off"),
        }
        out.section("retention");
        match self.retention.finished {
            Some(keep) => out.key("retention.finished", d(keep)),
            None => out.unset("retention.finished", "finished rows are kept forever"),
        }
        out.section("source");
        match &self.source.url {
            Some(url) => out.key("source.url", toml_string(&redact_url(url))),
            None => out.unset("source.url", "database.url"),
        }
        match &self.source.query {
            Some(query) => out.key("source.query", toml_string(query)),
            None => out.unset("source.query", "off"),
        }
        out.key("source.interval", d(self.source.interval));
        out.lines.join("\n")
    }
}

/// Lines of `Config::render`.
struct Render<'a> {
    lines: Vec<String>,
    provenance: &'a Provenance,
}

impl Render<'_> {
    fn section(&mut self, name: &str) {
        if !self.lines.is_empty() {
            self.lines.push(String::new());
        }
        self.lines.push(format!("[{name}]"));
    }

    /// `leaf = value  # source`; `value` is already TOML.
    fn key(&mut self, key: &str, value: String) {
        let leaf = key.rsplit('.').next().unwrap_or(key);
        self.lines
            .push(format!("{leaf} = {value}  # {}", self.provenance.of(key)));
    }

    /// An optional key no layer set: a comment, so that the output stays TOML.
    fn unset(&mut self, key: &str, meaning: &str) {
        let leaf = key.rsplit('.').next().unwrap_or(key);
        self.lines.push(format!("# {leaf}: not set: {meaning}"));
    }
}

/// A TOML basic string: quotes, backslashes and control characters escaped.
fn toml_string(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A database URL with its password replaced (in the user part, or a `password=` /
/// `sslpassword=` parameter), for output an operator may paste anywhere.
pub fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = Url::parse(url) else {
        return url.to_owned();
    };
    let secret = |name: &str| name.eq_ignore_ascii_case("password") || name.eq_ignore_ascii_case("sslpassword");
    let mut changed = false;
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some("redacted"));
        changed = true;
    }
    if parsed.query_pairs().any(|(name, _)| secret(&name)) {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(name, value)| {
                let value = if secret(&name) { "redacted".into() } else { value };
                (name.into_owned(), value.into_owned())
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
        changed = true;
    }
    if changed { parsed.to_string() } else { url.to_owned() }
}

/// The database as error messages name it: the file of a SQLite URL, `host:port/database` of a
/// PostgreSQL one (never a user's password).
pub fn database_label(url: &str) -> String {
    if url.starts_with("sqlite:") {
        return match <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(url) {
            Ok(options) => options.get_filename().display().to_string(),
            Err(_) => redact_url(url),
        };
    }
    match Url::parse(url) {
        Ok(parsed) => {
            let host = parsed.host_str().unwrap_or("localhost");
            let port = parsed.port().unwrap_or(5432);
            format!("{host}:{port}{}", parsed.path())
        }
        Err(_) => redact_url(url),
    }
}
