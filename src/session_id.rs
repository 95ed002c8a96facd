//! Session ids: the only values that ever reach the API's URL path.
//!
//! The API publishes no format (samples are 45, 96 and 192 hex characters) and no SDK encodes
//! the id, so we accept plain tokens only and never percent-encode: an id that is not a plain
//! token is bad input and must not produce a request at all.

use std::fmt;

/// Longest id we send; the longest public sample is 192 characters.
pub const MAX_SESSION_ID_LEN: usize = 512;

/// How many characters of a rejected id we echo back in logs and errors.
const SHOWN_PREFIX_LEN: usize = 48;

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
    #[error("session id {0} contains characters other than ASCII letters, digits, '-', '_' and '.'")]
    BadCharacter(String),
    #[error("session id {0} is a path segment ('.' or '..')")]
    DotSegment(String),
}

impl SessionId {
    pub fn parse(raw: &str) -> Result<Self, InvalidSessionId> {
        if raw.is_empty() {
            return Err(InvalidSessionId::Empty);
        }
        if raw.len() > MAX_SESSION_ID_LEN {
            return Err(InvalidSessionId::TooLong(raw.len()));
        }
        if !raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(InvalidSessionId::BadCharacter(printable(raw)));
        }
        if raw == "." || raw == ".." {
            return Err(InvalidSessionId::DotSegment(raw.to_owned()));
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

/// A quoted, escaped and shortened rendering of untrusted text, safe for one log line:
/// control characters and right-to-left marks are escaped, long values are cut.
pub fn printable(raw: &str) -> String {
    let mut shown: String = raw.chars().take(SHOWN_PREFIX_LEN).collect();
    let cut = shown.len() < raw.len();
    shown = shown.escape_default().to_string();
    if cut {
        format!("\"{shown}\"... ({} bytes)", raw.len())
    } else {
        format!("\"{shown}\"")
    }
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
    fn printable_escapes_controls_and_bidi_marks_and_cuts_long_values() {
        assert_eq!(printable("a\nb\u{202e}"), "\"a\\nb\\u{202e}\"");
        assert!(printable(&"x".repeat(10_000)).ends_with("(10000 bytes)"));
    }
}
