//! What an answer of the API means for us: the classification table of
//! `office-integrator-api.md`, plus what real HTTP adds (429, 5xx, proxy pages).

use std::time::Duration;

use serde_json::Value;

use crate::editor::{CodeMeaning, Editor, WRITER_CODE_DEPRECATED};
use crate::outcome::AnswerClass;

/// What the pool does next, decided from one answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The API confirmed the deletion.
    Deleted,
    /// 1833 / 1834: the session no longer exists; nothing left to delete.
    Gone,
    /// Worth retrying later with backoff; `retry_after` is the server's wish, if it said one.
    Transient { retry_after: Option<Duration> },
    /// HTTP 429: the whole pool waits; the row is not at fault.
    RateLimited { retry_after: Option<Duration> },
    /// 1845 (Sheet 2893, Show 3893): the account's quota is spent; the pool stops for long.
    QuotaExhausted,
    /// 1846, 1837, 1877 (Sheet 2890, Show 3890): our configuration is wrong; the pool stops,
    /// rows stay untouched.
    KeyRejected,
    /// Retrying cannot help this row.
    Permanent,
}

/// One answer as recorded on the row and in the logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub verdict: Verdict,
    /// `None` when no HTTP answer arrived (timeout, reset, refused).
    pub http_status: Option<u16>,
    pub api_code: Option<i64>,
    /// A short, printable description; never contains the apikey.
    pub message: Option<String>,
}

/// Longest message we keep from an answer.
const MAX_MESSAGE_CHARS: usize = 200;
/// Deprecated API (1879): permanent, and logged loudly by the caller.
pub const CODE_DEPRECATED: i64 = WRITER_CODE_DEPRECATED;

impl Answer {
    /// The bounded label of this answer (metrics never carry session ids or messages).
    pub fn class(&self) -> AnswerClass {
        match self.verdict {
            Verdict::Deleted => AnswerClass::Deleted,
            Verdict::Gone => AnswerClass::Gone,
            Verdict::Transient { .. } if self.http_status.is_none() => AnswerClass::NoAnswer,
            Verdict::Transient { .. } => AnswerClass::Transient,
            Verdict::RateLimited { .. } => AnswerClass::RateLimited,
            Verdict::QuotaExhausted => AnswerClass::QuotaExhausted,
            Verdict::KeyRejected => AnswerClass::KeyRejected,
            Verdict::Permanent => AnswerClass::Permanent,
        }
    }

    pub fn no_answer(message: String) -> Self {
        Self {
            verdict: Verdict::Transient { retry_after: None },
            http_status: None,
            api_code: None,
            message: Some(message),
        }
    }
}

/// Classifies one HTTP answer of Writer. `retry_after` is the parsed header, if any.
pub fn classify(status: u16, body: &[u8], retry_after: Option<Duration>) -> Answer {
    classify_for(Editor::Writer, status, body, retry_after)
}

/// Classifies one HTTP answer of `editor`, by that editor's own table of codes.
pub fn classify_for(editor: Editor, status: u16, body: &[u8], retry_after: Option<Duration>) -> Answer {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let object = json.as_ref().and_then(Value::as_object);
    let code = object.and_then(|o| o.get("code")).and_then(code_of);
    let api_message = object
        .and_then(|o| o.get("message"))
        .and_then(Value::as_str)
        .map(shorten);
    let answer = |verdict, message: Option<String>| Answer {
        verdict,
        http_status: Some(status),
        api_code: code,
        message,
    };

    if status == 429 {
        return answer(
            Verdict::RateLimited { retry_after },
            Some("HTTP 429 Too Many Requests".into()),
        );
    }
    if status == 200 && code.is_none() && object.is_some_and(confirms_deletion) {
        return answer(Verdict::Deleted, None);
    }
    if let Some(code) = code {
        // A code the editor does not document is transient: retried (attempts are bounded),
        // never counted as gone.
        let verdict = match editor.code_meaning(code) {
            CodeMeaning::Transient => Verdict::Transient { retry_after },
            CodeMeaning::Gone => Verdict::Gone,
            CodeMeaning::QuotaExhausted => Verdict::QuotaExhausted,
            CodeMeaning::KeyRejected => Verdict::KeyRejected,
            CodeMeaning::Permanent => Verdict::Permanent,
        };
        let message = api_message.unwrap_or_else(|| format!("API error code {code}"));
        return answer(verdict, Some(message));
    }
    let what = if json.is_some() {
        "an unrecognised JSON answer"
    } else if body.is_empty() {
        "an empty answer"
    } else {
        "a non-JSON answer (a proxy page?)"
    };
    // Unknown answers are retried a bounded number of times: never counted as gone.
    answer(
        Verdict::Transient { retry_after },
        Some(format!("HTTP {status} with {what}")),
    )
}

/// All documented success shapes: `session_delete`/`session_deleted`, as bool or "true".
fn confirms_deletion(object: &serde_json::Map<String, Value>) -> bool {
    ["session_delete", "session_deleted"].iter().any(|key| {
        matches!(object.get(*key), Some(Value::Bool(true)))
            || matches!(object.get(*key), Some(Value::String(s)) if s.eq_ignore_ascii_case("true"))
    })
}

/// `code` comes as a string in the docs and a number in the SDK models.
fn code_of(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn shorten(message: &str) -> String {
    let short: String = message.chars().take(MAX_MESSAGE_CHARS).collect();
    short.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn verdict(status: u16, body: &str) -> Verdict {
        classify(status, body.as_bytes(), None).verdict
    }

    #[test]
    fn all_three_documented_success_shapes_mean_deleted() {
        assert_eq!(verdict(200, r#"{"session_delete": true}"#), Verdict::Deleted);
        assert_eq!(verdict(200, r#"{"session_deleted": true}"#), Verdict::Deleted);
        assert_eq!(verdict(200, r#"{"session_delete": "true"}"#), Verdict::Deleted);
    }

    #[test]
    fn a_false_or_unknown_success_body_is_not_deleted_and_not_gone() {
        for body in [r#"{"session_delete": false}"#, r#"{"ok": 1}"#, "<html>", ""] {
            assert!(matches!(verdict(200, body), Verdict::Transient { .. }), "{body}");
        }
    }

    #[test]
    fn error_codes_map_to_the_documented_meaning_as_string_or_number() {
        assert_eq!(
            verdict(400, r#"{"code": "1833", "message": "Invalid session"}"#),
            Verdict::Gone
        );
        assert_eq!(verdict(400, r#"{"code": 1834}"#), Verdict::Gone);
        assert_eq!(verdict(400, r#"{"code": 1845}"#), Verdict::QuotaExhausted);
        assert_eq!(verdict(400, r#"{"code": "1846"}"#), Verdict::KeyRejected);
        assert_eq!(verdict(400, r#"{"code": 1877}"#), Verdict::KeyRejected);
        assert_eq!(verdict(400, r#"{"code": 1831}"#), Verdict::Permanent);
        assert_eq!(verdict(400, r#"{"code": 1879}"#), Verdict::Permanent);
        assert!(matches!(verdict(400, r#"{"code": 1861}"#), Verdict::Transient { .. }));
        assert!(matches!(verdict(400, r#"{"code": 4242}"#), Verdict::Transient { .. }));
    }

    #[test]
    fn rate_limits_and_server_errors_are_not_the_rows_fault() {
        let wait = Some(Duration::from_secs(3));
        assert_eq!(
            classify(429, b"", wait).verdict,
            Verdict::RateLimited { retry_after: wait }
        );
        assert!(matches!(
            verdict(502, "<html>Bad Gateway</html>"),
            Verdict::Transient { .. }
        ));
        assert!(matches!(verdict(503, ""), Verdict::Transient { .. }));
    }

    #[test]
    fn each_editor_reads_its_own_codes() {
        let of = |editor, body: &str| classify_for(editor, 400, body.as_bytes(), None).verdict;
        assert_eq!(of(Editor::Sheet, r#"{"code": "2890"}"#), Verdict::KeyRejected);
        assert_eq!(of(Editor::Sheet, r#"{"code": 2893}"#), Verdict::QuotaExhausted);
        assert_eq!(of(Editor::Show, r#"{"code": "3890"}"#), Verdict::KeyRejected);
        assert_eq!(of(Editor::Show, r#"{"code": 3893}"#), Verdict::QuotaExhausted);
        assert_eq!(of(Editor::Pdf, r#"{"code": 1846}"#), Verdict::KeyRejected);
        // Writer's gone codes are Writer's: elsewhere they are retried, never read as gone.
        for editor in [Editor::Sheet, Editor::Show, Editor::Pdf] {
            assert!(matches!(of(editor, r#"{"code": 1833}"#), Verdict::Transient { .. }));
        }
        // Sheet's success shape: the string "true".
        let ok = classify_for(Editor::Sheet, 200, br#"{"session_delete":"true"}"#, None);
        assert_eq!(ok.verdict, Verdict::Deleted);
    }

    proptest! {
        #[test]
        fn arbitrary_bodies_never_panic_and_never_count_as_gone_without_a_code(
            status in 100u16..600, body in proptest::collection::vec(any::<u8>(), 0..512)
        ) {
            let answer = classify(status, &body, None);
            if answer.verdict == Verdict::Gone {
                prop_assert!(matches!(answer.api_code, Some(1833 | 1834)));
            }
            for editor in [Editor::Sheet, Editor::Show, Editor::Pdf] {
                prop_assert!(classify_for(editor, status, &body, None).verdict != Verdict::Gone);
            }
            if let Some(message) = answer.message {
                prop_assert!(message.chars().count() <= MAX_MESSAGE_CHARS);
            }
        }

        #[test]
        fn deeply_nested_json_is_handled(depth in 1usize..2000) {
            let body = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            let transient = matches!(classify(200, body.as_bytes(), None).verdict, Verdict::Transient { .. });
            prop_assert!(transient);
        }
    }
}
