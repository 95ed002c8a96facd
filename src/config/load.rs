//! Layered loading (defaults, then a TOML file, then `SESSION_REAPER_*` variables) with every
//! problem collected and reported at once, one line per key, naming where the value came from.
//!
//! Keys are read one by one instead of deserialising a whole struct, because serde stops at the
//! first error and an operator fixing a config wants the whole list.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use figment::providers::{Format, Toml};
use figment::value::{Dict, Value};
use figment::{Figment, Profile, Source};
use reqwest::Url;
use secrecy::SecretString;

use super::defaults::*;
use super::env::{EnvVars, is_config_variable};
use super::values::*;
use super::*;

/// Where configuration comes from; tests pass their own environment.
pub struct Sources {
    pub file: Option<PathBuf>,
    pub env: Vec<(String, String)>,
    /// Whether this command calls the API, so that a missing apikey is an error.
    pub needs_apikey: bool,
}

impl Sources {
    pub fn from_process(file: Option<PathBuf>, needs_apikey: bool) -> Self {
        Self {
            file,
            env: std::env::vars().collect(),
            needs_apikey,
        }
    }

    fn var(&self, name: &str) -> Option<&str> {
        self.env.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// All problems found in one load, one line each.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<String>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("\n"))
    }
}

impl std::error::Error for ConfigErrors {}

pub fn load(sources: &Sources) -> Result<Config, ConfigErrors> {
    let mut figment = Figment::new();
    if let Some(path) = &sources.file {
        if !path.is_file() {
            return Err(ConfigErrors(vec![format!(
                "config file {}: does not exist or is not a file",
                path.display()
            )]));
        }
        figment = figment.merge(Toml::file_exact(path));
    }
    figment = figment.merge(EnvVars(&sources.env));
    let reader = Reader::new(figment)?;
    reader.read_all(sources)
}

/// One warning line for each `SESSION_REAPER_*` variable that is not configuration and that
/// nothing else reads (`SESSION_REAPER_APIKEY` was probably meant as `SESSION_REAPER_API__APIKEY`).
pub fn ignored_variables(env: &[(String, String)]) -> Vec<String> {
    let mut names: Vec<&str> = env
        .iter()
        .map(|(name, _)| name.as_str())
        .filter(|name| name.starts_with(ENV_PREFIX) && !is_config_variable(name))
        .filter(|name| !OTHER_VARIABLES.contains(name))
        .collect();
    names.sort_unstable();
    names.dedup();
    names
        .into_iter()
        .map(|name| {
            let rest = &name[ENV_PREFIX.len()..];
            let guess = KNOWN_KEYS.iter().find(|key| {
                let (section, leaf) = key.split_once('.').unwrap_or(("", key));
                rest.eq_ignore_ascii_case(leaf) || rest.eq_ignore_ascii_case(&format!("{section}_{leaf}"))
            });
            let hint = match guess {
                Some(key) => format!("; did you mean {ENV_PREFIX}{}?", key.replace('.', "__").to_uppercase()),
                None => String::new(),
            };
            format!("ignoring {name}: configuration variables are {ENV_PREFIX}<SECTION>__<KEY>{hint}")
        })
        .collect()
}

struct Reader {
    figment: Figment,
    problems: Vec<String>,
    provenance: Provenance,
}

impl Reader {
    fn new(figment: Figment) -> Result<Self, ConfigErrors> {
        let all: Dict = figment.extract().map_err(|e| {
            // Parse errors span several lines (a caret diagram); an operator's log wants one.
            let one_line = |e: figment::Error| e.to_string().split_whitespace().collect::<Vec<_>>().join(" ");
            ConfigErrors(
                e.into_iter()
                    .map(|e| format!("configuration: {}", one_line(e)))
                    .collect(),
            )
        })?;
        let mut reader = Self {
            figment,
            problems: Vec::new(),
            provenance: Provenance::default(),
        };
        let mut present = BTreeSet::new();
        flatten("", &all, &mut present);
        for key in present.iter().filter(|k| !KNOWN_KEYS.contains(&k.as_str())) {
            let source = reader.source(key);
            reader.problems.push(format!("{key}: unknown key ({source})"));
        }
        Ok(reader)
    }

    fn source(&self, key: &str) -> String {
        let Some(meta) = self.figment.find_metadata(key) else {
            return "default".to_owned();
        };
        match &meta.source {
            Some(Source::File(path)) => format!("from file {}", path.display()),
            _ => {
                let keys: Vec<&str> = key.split('.').collect();
                let name = meta.interpolate(&Profile::Default, &keys);
                format!("from environment variable {name}")
            }
        }
    }

    /// Reads `key` with `parse`, or returns `default` when no layer sets it.
    fn read<T>(&mut self, key: &str, default: T, parse: impl FnOnce(&Value) -> Result<T, String>) -> T
    where
        T: Clone,
    {
        let Ok(value) = self.figment.find_value(key) else {
            return default;
        };
        match parse(&value) {
            Ok(parsed) => parsed,
            Err(why) => {
                let source = self.source(key);
                self.problems.push(format!("{key}: {why} ({source})"));
                default
            }
        }
    }

    fn is_set(&self, key: &str) -> bool {
        self.figment.find_value(key).is_ok()
    }

    fn problem(&mut self, key: &str, why: impl fmt::Display) {
        let source = self.source(key);
        self.problems.push(format!("{key}: {why} ({source})"));
    }

    fn read_all(mut self, sources: &Sources) -> Result<Config, ConfigErrors> {
        let default_db = match sources.var("STATE_DIRECTORY") {
            // systemd's StateDirectory= may list several folders separated by ':'.
            Some(dir) => format!(
                "sqlite://{}/{DEFAULT_SQLITE_FILE}",
                dir.split(':').next().unwrap_or(dir)
            ),
            None => format!("sqlite://{DEFAULT_SQLITE_FILE}"),
        };
        let database = DatabaseConfig {
            url: self.read("database.url", default_db, database_url),
            connect_timeout: self.read("database.connect_timeout", DEFAULT_DATABASE_CONNECT_TIMEOUT, |v| {
                at_least(v, Duration::from_millis(1))
            }),
        };
        let api = self.read_api(sources);
        let worker = WorkerConfig {
            concurrency: self.read("worker.concurrency", DEFAULT_CONCURRENCY, |v| {
                Ok(positive(v, MAX_CONCURRENCY)? as usize)
            }),
            rate_per_second: self.read("worker.rate_per_second", DEFAULT_RATE_PER_SECOND, |v| {
                Ok(positive(v, u32::MAX as u128)? as u32)
            }),
            burst: self.read("worker.burst", DEFAULT_BURST, |v| {
                Ok(positive(v, u32::MAX as u128)? as u32)
            }),
            stale_after: self.read("worker.stale_after", DEFAULT_STALE_AFTER, duration),
            lease: self.read("worker.lease", DEFAULT_LEASE, |v| at_least(v, Duration::from_secs(1))),
            batch_size: self.read("worker.batch_size", DEFAULT_BATCH_SIZE, |v| {
                Ok(positive(v, MAX_BATCH_SIZE as u128)? as u32)
            }),
            poll_interval: self.read("worker.poll_interval", DEFAULT_POLL_INTERVAL, |v| {
                at_least(v, Duration::from_millis(10))
            }),
        };
        let retry = RetryConfig {
            max_attempts: self.read("retry.max_attempts", DEFAULT_MAX_ATTEMPTS, |v| {
                Ok(positive(v, 1000)? as u32)
            }),
            base_delay: self.read("retry.base_delay", DEFAULT_BASE_DELAY, duration),
            max_delay: self.read("retry.max_delay", DEFAULT_MAX_DELAY, duration),
            quota_pause: self.read("retry.quota_pause", DEFAULT_QUOTA_PAUSE, |v| {
                at_least(v, Duration::from_millis(10))
            }),
            key_pause: self.read("retry.key_pause", DEFAULT_KEY_PAUSE, |v| {
                at_least(v, Duration::from_millis(10))
            }),
        };
        if retry.max_delay < retry.base_delay {
            self.problem("retry.max_delay", "must not be shorter than retry.base_delay");
        }
        let shutdown = ShutdownConfig {
            grace: self.read("shutdown.grace", DEFAULT_GRACE, duration),
        };
        let log = LogConfig {
            format: self.read("log.format", LogFormat::Json, |v| match text(v)?.as_str() {
                "json" => Ok(LogFormat::Json),
                "pretty" => Ok(LogFormat::Pretty),
                other => Err(format!("expected \"json\" or \"pretty\", found {other:?}")),
            }),
            level: self.read("log.level", "info".to_owned(), |v| {
                let level = text(v)?;
                crate::telemetry::filter(&level).map(|_| level.clone())
            }),
            session_ids: self.read("log.session_ids", SessionIdLogging::Prefix, |v| {
                match text(v)?.as_str() {
                    "prefix" => Ok(SessionIdLogging::Prefix),
                    "full" => Ok(SessionIdLogging::Full),
                    other => Err(format!("expected \"prefix\" or \"full\", found {other:?}")),
                }
            }),
            summary_interval: self.read("log.summary_interval", DEFAULT_SUMMARY_INTERVAL, |v| {
                at_least(v, Duration::from_secs(1))
            }),
        };
        let http = HttpConfig {
            listen: self.read("http.listen", None, |v| {
                let addr = text(v)?;
                SocketAddr::from_str(&addr)
                    .map(Some)
                    .map_err(|_| format!("expected an address like 0.0.0.0:9187, found {addr:?}"))
            }),
        };
        let retention = RetentionConfig {
            finished: self.read("retention.finished", None, |v| {
                at_least(v, Duration::from_secs(60)).map(Some)
            }),
        };
        let source = SourceConfig {
            url: self.read("source.url", None, |v| database_url(v).map(Some)),
            query: self.read("source.query", None, |v| {
                let query = text(v)?;
                let trimmed = query.trim().trim_end_matches(';').trim();
                if trimmed.is_empty() {
                    Err("must not be empty (leave it unset to turn the source off)".to_owned())
                } else {
                    Ok(Some(trimmed.to_owned()))
                }
            }),
            interval: self.read("source.interval", DEFAULT_SOURCE_INTERVAL, |v| {
                at_least(v, Duration::from_millis(100))
            }),
        };
        for key in KNOWN_KEYS {
            if self.is_set(key) && !self.provenance.is_set(key) {
                let source = self.source(key);
                self.provenance.0.insert(key, source);
            }
        }
        if !self.provenance.is_set("database.url") && sources.var("STATE_DIRECTORY").is_some() {
            self.provenance
                .0
                .insert("database.url", "default, in $STATE_DIRECTORY".to_owned());
        }
        if self.problems.is_empty() {
            Ok(Config {
                database,
                api,
                worker,
                retry,
                shutdown,
                log,
                http,
                retention,
                source,
                provenance: self.provenance,
            })
        } else {
            Err(ConfigErrors(self.problems))
        }
    }

    fn read_api(&mut self, sources: &Sources) -> ApiConfig {
        let data_center = self.read("api.data_center", DEFAULT_DATA_CENTER.to_owned(), |v| {
            let dc = text(v)?;
            data_center_host(&dc)
                .map(|_| dc.clone())
                .ok_or_else(|| format!("unknown data centre {dc:?} (one of us, eu, in, cn, au, jp, sa, ca)"))
        });
        let dc_url = format!("https://{}", data_center_host(&data_center).unwrap_or_default());
        let dc_url = Url::parse(&dc_url).expect("data centre hosts are valid URLs");
        let base_url = self.read("api.base_url", dc_url, |v| base_url(&text(v)?));
        let apikey = self.read_apikey(sources);
        ApiConfig {
            data_center,
            base_url,
            apikey,
            timeout: self.read("api.timeout", DEFAULT_TIMEOUT, |v| {
                at_least(v, Duration::from_millis(1))
            }),
            connect_timeout: self.read("api.connect_timeout", DEFAULT_CONNECT_TIMEOUT, |v| {
                at_least(v, Duration::from_millis(1))
            }),
        }
    }

    fn read_apikey(&mut self, sources: &Sources) -> Option<SecretString> {
        if self.is_set("api.apikey") && self.is_set("api.apikey_file") {
            self.problem("api.apikey_file", "set together with api.apikey; set only one");
            return None;
        }
        let from_value = self.read("api.apikey", None, |v| apikey(text(v)?).map(Some));
        if from_value.is_some() {
            return from_value;
        }
        let credential = sources
            .var("CREDENTIALS_DIRECTORY")
            .map(|dir| Path::new(dir).join("apikey"))
            .filter(|p| p.is_file());
        let file = self.read("api.apikey_file", credential, |v| Ok(Some(PathBuf::from(text(v)?))));
        match file {
            Some(path) => match std::fs::read_to_string(&path) {
                Ok(content) => match apikey(content.trim().to_owned()) {
                    Ok(key) => {
                        let how = if self.is_set("api.apikey_file") {
                            format!("api.apikey_file, {}", self.source("api.apikey_file"))
                        } else {
                            "a systemd credential".to_owned()
                        };
                        self.provenance
                            .0
                            .insert("api.apikey", format!("read from {} ({how})", path.display()));
                        Some(key)
                    }
                    Err(why) => {
                        self.problem("api.apikey_file", format!("{}: {why}", path.display()));
                        None
                    }
                },
                Err(e) => {
                    self.problem("api.apikey_file", format!("cannot read {}: {e}", path.display()));
                    None
                }
            },
            None if sources.needs_apikey && !self.is_set("api.apikey") => {
                self.problems.push(
                    "api.apikey: no apikey configured (set api.apikey, api.apikey_file, \
                     SESSION_REAPER_API__APIKEY or a systemd credential named apikey)"
                        .to_owned(),
                );
                None
            }
            None => None,
        }
    }
}

fn flatten(prefix: &str, dict: &Dict, out: &mut BTreeSet<String>) {
    for (key, value) in dict {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            Value::Dict(_, inner) => flatten(&path, inner, out),
            _ => {
                out.insert(path);
            }
        }
    }
}
