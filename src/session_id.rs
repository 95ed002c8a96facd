//! Session ids: the only values that ever reach the API's URL path.
//!
//! The API publishes no format (samples are 45, 96 and 192 hex characters) and no SDK encodes
//! the id, so we accept plain tokens only and never percent-encode: an id that is not a plain
//! token is bad input and must not produce a request at all.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

/// Longest id we send; the longest public sample is 192 characters.
pub const MAX_SESSION_ID_LEN: usize = 512;

/// How many characters of a session id a log line or an operator's listing shows by default.
pub const LOGGED_PREFIX_LEN: usize = 8;

/// `log.session_ids = "full"`: log whole ids instead of their prefix (set once by `telemetry`).
static LOG_WHOLE_IDS: AtomicBool = AtomicBool::new(false);

/// A session id that is safe to paste into `/writer/officeapi/v1/sessions/<id>`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SessionId(String);

/// Why an id was refused; the message names the problem without echoing the whole id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidSessionId {
    #[error("session id is empty")]
    Empty,
    #[error("session id is {0} bytes long (at most {MAX_SESSION_ID_LEN})")]
    TooLong(usize),
    /// The character (escaped) and its byte offset; the id itself is not echoed (it may be a
    /// live id with stray bytes around it, and a live id is an edit link).
    #[error("session id has {0} at byte {1}: only ASCII letters, digits, '-', '_' and '.' are allowed")]
    BadCharacter(String, usize),
    #[error("session id is a path segment ('.' or '..')")]
    DotSegment,
}

impl SessionId {
    pub fn parse(raw: &str) -> Result<Self, InvalidSessionId> {
        if raw.is_empty() {
            return Err(InvalidSessionId::Empty);
        }
        if raw.len() > MAX_SESSION_ID_LEN {
            return Err(InvalidSessionId::TooLong(raw.len()));
        }
        if let Some((at, bad)) = raw
            .char_indices()
            .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            let shown = match bad {
                ' ' => "a space".to_owned(),
                c => format!("'{}'", c.escape_default()),
            };
            return Err(InvalidSessionId::BadCharacter(shown, at));
        }
        if raw == "." || raw == ".." {
            return Err(InvalidSessionId::DotSegment);
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({})", self.0)
    }
}

/// Chooses whether [`logged`] shows whole ids (`log.session_ids = "full"`) or their prefix.
pub fn log_whole_ids(whole: bool) {
    LOG_WHOLE_IDS.store(whole, Ordering::Relaxed);
}

/// A session id as a log line carries it: by default its first [`LOGGED_PREFIX_LEN`]
/// characters, because a live id is a credential (it is the document's edit link); whole ids
/// only with `log.session_ids = "full"`. Either way the value is escaped (control characters,
/// right-to-left marks and other non-ASCII become `\u{..}`) and unquoted: the log format
/// adds its own quotes.
pub fn logged(raw: &str) -> String {
    if LOG_WHOLE_IDS.load(Ordering::Relaxed) {
        whole(raw)
    } else {
        prefix(raw)
    }
}

/// The first [`LOGGED_PREFIX_LEN`] characters of an id, escaped: what operator output
/// (`requeue --dry-run`) shows, whatever `log.session_ids` says.
pub fn prefix(raw: &str) -> String {
    escaped(raw, LOGGED_PREFIX_LEN)
}

/// The whole id, escaped; an id longer than any valid one is cut there.
fn whole(raw: &str) -> String {
    escaped(raw, MAX_SESSION_ID_LEN)
}

fn escaped(raw: &str, chars: usize) -> String {
    let shown: String = raw.chars().take(chars).collect();
    let mut out = shown.escape_default().to_string();
    if chars > LOGGED_PREFIX_LEN && shown.len() < raw.len() {
        out.push_str(&format!("... ({} bytes)", raw.len()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_sample_ids_are_accepted() {
        for id in [
            "d26aa7b8029bf4f8d34c7dd00139392357d12ffcb21c1",
            &"ab12".repeat(48),
            "a-b_c.d",
        ] {
            assert_eq!(SessionId::parse(id).unwrap().as_str(), id);
        }
    }

    #[test]
    fn hostile_ids_are_refused() {
        let long = "a".repeat(10_000);
        for id in [
            "",
            ".",
            "..",
            "a/b",
            "../x",
            "a?b",
            "a#b",
            "a%2Fb",
            "x&apikey=1",
            "a b",
            "a\nb",
            "a\u{0}b",
            "caf\u{e9}",
            "ab\u{202e}cd",
            long.as_str(),
        ] {
            assert!(SessionId::parse(id).is_err(), "{id:?} was accepted");
        }
    }

    #[test]
    fn logged_ids_are_an_unquoted_escaped_prefix_unless_whole_ids_are_asked_for() {
        let live = "58530adf0c1d4e7f9a2b3c4d5e6f708192a3b4c5d6e7f";
        assert_eq!(prefix(live), "58530adf");
        assert_eq!(prefix("a\nb\u{202e}cdefgh"), "a\\nb\\u{202e}cdef");
        assert_eq!(prefix("short"), "short");
        assert_eq!(whole(live), live);
        assert!(whole(&"x".repeat(10_000)).ends_with("... (10000 bytes)"));
    }

    #[test]
    fn a_refused_id_is_described_without_being_echoed() {
        let error = SessionId::parse("58530adf0c1d4e7f ").unwrap_err().to_string();
        assert_eq!(
            error,
            "session id has a space at byte 16: only ASCII letters, digits, '-', '_' and '.' are allowed"
        );
        assert!(!error.contains("58530adf"));
        let error = SessionId::parse("ab\u{202e}cd").unwrap_err().to_string();
        assert!(error.contains("'\\u{202e}' at byte 2"), "{error}");
    }
}
