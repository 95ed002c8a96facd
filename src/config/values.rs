//! How each kind of value is read and checked: text, positive numbers, durations, URLs, the
//! apikey. Each returns the problem as one readable sentence; `load` adds the key and the source.

use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use figment::value::Value;
use reqwest::Url;
use secrecy::SecretString;

use super::*;

/// Host of each data centre's API, as listed by the official SDKs.
pub fn data_center_host(dc: &str) -> Option<&'static str> {
    Some(match dc {
        "us" => "api.office-integrator.com",
        "eu" => "api.office-integrator.eu",
        "in" => "api.office-integrator.in",
        "cn" => "api.office-integrator.com.cn",
        "au" => "api.office-integrator.com.au",
        "jp" => "api.office-integrator.jp",
        "sa" => "api.office-integrator.sa",
        "ca" => "api.office-integrator.ca",
        _ => return None,
    })
}

/// Strings, and numbers written where a string was meant (environment variables arrive typed).
pub(super) fn text(v: &Value) -> Result<String, String> {
    match v {
        Value::String(_, s) => Ok(s.clone()),
        Value::Num(_, n) => Ok(n
            .to_u128()
            .map(|u| u.to_string())
            .or_else(|| n.to_i128().map(|i| i.to_string()))
            .or_else(|| n.to_f64().map(|f| f.to_string()))
            .unwrap_or_default()),
        other => Err(format!("expected a string, found {}", kind(other))),
    }
}

pub(super) fn kind(v: &Value) -> &'static str {
    match v {
        Value::String(..) => "a string",
        Value::Char(..) => "a character",
        Value::Bool(..) => "a boolean",
        Value::Num(..) => "a number",
        Value::Empty(..) => "nothing",
        Value::Dict(..) => "a table",
        Value::Array(..) => "an array",
    }
}

pub(super) fn positive(v: &Value, max: u128) -> Result<u128, String> {
    let n = match v {
        Value::Num(_, n) => n.to_i128().ok_or_else(|| "expected a whole number".to_owned())?,
        Value::String(_, s) => s
            .trim()
            .parse::<i128>()
            .map_err(|_| format!("expected a whole number, found {s:?}"))?,
        other => return Err(format!("expected a whole number, found {}", kind(other))),
    };
    if n < 1 || n as u128 > max {
        return Err(format!("must be between 1 and {max}, found {n}"));
    }
    Ok(n as u128)
}

pub(super) fn duration(v: &Value) -> Result<Duration, String> {
    match v {
        Value::String(_, s) if !s.is_empty() && s.trim().bytes().all(|b| b.is_ascii_digit()) => {
            Err(format!("expected a duration with a unit, like \"{}s\"", s.trim()))
        }
        Value::String(_, s) => humantime::parse_duration(s.trim())
            .map_err(|e| e.to_string())
            .and_then(|d| {
                if d > MAX_DURATION {
                    Err(format!(
                        "longer than the longest allowed, {}",
                        humantime::format_duration(MAX_DURATION)
                    ))
                } else {
                    Ok(d)
                }
            })
            .map_err(|e| format!("expected a duration like 30s, 200ms or 15m, found {s:?} ({e})")),
        Value::Num(..) => Err(format!("expected a duration with a unit, like \"{}s\"", text(v)?)),
        other => Err(format!("expected a duration like \"30s\", found {}", kind(other))),
    }
}

pub(super) fn at_least(v: &Value, min: Duration) -> Result<Duration, String> {
    let d = duration(v)?;
    if d < min {
        return Err(format!("must be at least {}", humantime::format_duration(min)));
    }
    Ok(d)
}

pub(super) fn database_url(v: &Value) -> Result<String, String> {
    let url = text(v)?;
    let valid = if url.starts_with("sqlite:") {
        sqlx::sqlite::SqliteConnectOptions::from_str(&url).is_ok()
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        sqlx::postgres::PgConnectOptions::from_str(&url).is_ok()
    } else {
        return Err("expected a URL starting with sqlite:, postgres:// or postgresql://".to_owned());
    };
    if valid {
        Ok(url)
    } else {
        Err(format!("not a valid database URL: {:?}", redact_url(&url)))
    }
}

pub(super) fn base_url(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw.trim_end_matches('/')).map_err(|e| format!("not a URL ({e})"))?;
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err("must not carry a query, a fragment or credentials".to_owned());
    }
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback(&url) => Ok(url),
        "http" => Err("plain http:// would send the apikey in clear; use https:// \
                       (http:// is allowed only to a loopback address)"
            .to_owned()),
        other => Err(format!("unsupported scheme {other:?}; use https://")),
    }
}

pub(super) fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    }
}

pub(super) fn apikey(raw: String) -> Result<SecretString, String> {
    if raw.is_empty() {
        return Err("the apikey is empty".to_owned());
    }
    if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("the apikey contains whitespace or control characters".to_owned());
    }
    Ok(SecretString::from(raw))
}
