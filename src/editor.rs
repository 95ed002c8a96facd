//! The Office Integrator editors whose sessions we delete, defined once: each one's label (the
//! `reaper_sessions.editor` value, a log field and a metric label), the path of its session
//! resource, and its own table of error codes.
//!
//! Everything here comes from `office-integrator-api.md` (the official SDKs and the public docs).
//! Only Writer documents a full table of codes; Sheet and Show document only their key and quota
//! codes, and the PDF editor none at all. A code an editor does not document is never read as
//! "gone" or "permanent": it is retried (attempts are bounded), so an unknown answer can cost
//! retries but never makes us record a live session as deleted.
//!
//! A leaf module: it imports nothing of the crate.

use std::fmt;

/// One editor of Office Integrator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Editor {
    /// Zoho Writer (documents): `DELETE /writer/officeapi/v1/sessions/{id}`.
    #[default]
    Writer,
    /// Zoho Sheet (spreadsheets): `DELETE /sheet/officeapi/v1/session/{id}` (singular).
    Sheet,
    /// Zoho Show (presentations): `DELETE /show/officeapi/v1/session/{id}` (singular).
    Show,
    /// The PDF editor: `DELETE /pdfeditor/officeapi/v1/sessions/{id}`.
    Pdf,
}

/// What an API error code means for a cleanup daemon, per editor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeMeaning {
    /// Worth retrying with backoff; also every code the editor does not document.
    Transient,
    /// The session no longer exists: nothing left to delete.
    Gone,
    /// The account's quota is spent: the whole pool pauses, the row is not charged.
    QuotaExhausted,
    /// The apikey was rejected: the whole pool pauses, the row is not charged.
    KeyRejected,
    /// Retrying cannot help this row.
    Permanent,
}

/// Writer's "deprecated API used": permanent, and logged loudly.
pub const WRITER_CODE_DEPRECATED: i64 = 1879;

impl Editor {
    pub const ALL: [Editor; 4] = [Editor::Writer, Editor::Sheet, Editor::Show, Editor::Pdf];

    /// The value in `reaper_sessions.editor`, `enqueue --editor`, logs and metrics.
    pub const fn label(self) -> &'static str {
        match self {
            Editor::Writer => "writer",
            Editor::Sheet => "sheet",
            Editor::Show => "show",
            Editor::Pdf => "pdf",
        }
    }

    /// Reads a label exactly as stored (lowercase; anything else is not an editor).
    pub fn parse(label: &str) -> Option<Editor> {
        Editor::ALL.into_iter().find(|editor| editor.label() == label)
    }

    /// The path of this editor's session resource below the data centre's base URL; the
    /// session id is appended as one more segment.
    pub const fn sessions_path(self) -> [&'static str; 4] {
        match self {
            Editor::Writer => ["writer", "officeapi", "v1", "sessions"],
            Editor::Sheet => ["sheet", "officeapi", "v1", "session"],
            Editor::Show => ["show", "officeapi", "v1", "session"],
            Editor::Pdf => ["pdfeditor", "officeapi", "v1", "sessions"],
        }
    }

    /// This editor's own table of codes. Unknown codes are transient, never gone.
    ///
    /// Writer: the General Errors table. Sheet: 2890 (invalid key), 2893 (usage exceeded).
    /// Show: 3890 / 3893. PDF editor: no code of its own is documented; its path has Writer's
    /// shape (`officeapi/v1/sessions`), so Writer's account-wide codes (quota 1845, key 1846,
    /// 1837, 1877) pause the pool there too: a pause charges no row and ends with a probe, so
    /// reading one wrongly costs time, never a session. Writer's gone (1833, 1834) and
    /// permanent codes are *not* applied to the other editors: nothing says they mean the same
    /// there, and a wrong "gone" would leave a live session (an edit link) undeleted for good.
    pub const fn code_meaning(self, code: i64) -> CodeMeaning {
        match (self, code) {
            (Editor::Writer | Editor::Pdf, 1801..=1803 | 1861) => CodeMeaning::Transient,
            (Editor::Writer, 1833 | 1834) => CodeMeaning::Gone,
            (Editor::Writer | Editor::Pdf, 1845) => CodeMeaning::QuotaExhausted,
            (Editor::Writer | Editor::Pdf, 1846 | 1837 | 1877) => CodeMeaning::KeyRejected,
            (Editor::Writer, 1831 | 1832 | 1838 | 1839 | 1848 | 1844 | WRITER_CODE_DEPRECATED) => {
                CodeMeaning::Permanent
            }
            (Editor::Sheet, 2890) | (Editor::Show, 3890) => CodeMeaning::KeyRejected,
            (Editor::Sheet, 2893) | (Editor::Show, 3893) => CodeMeaning::QuotaExhausted,
            _ => CodeMeaning::Transient,
        }
    }

    /// The code this editor answers for a rejected key (for the stand-in).
    pub const fn key_rejected_code(self) -> &'static str {
        match self {
            Editor::Writer | Editor::Pdf => "1846",
            Editor::Sheet => "2890",
            Editor::Show => "3890",
        }
    }

    /// The code this editor answers once the quota is spent (for the stand-in).
    pub const fn quota_code(self) -> &'static str {
        match self {
            Editor::Writer | Editor::Pdf => "1845",
            Editor::Sheet => "2893",
            Editor::Show => "3893",
        }
    }

    /// Position in `ALL` (for arrays of per-editor counters).
    pub(crate) const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Editor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

impl std::str::FromStr for Editor {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Editor::parse(s).ok_or_else(|| {
            let known: Vec<_> = Editor::ALL.iter().map(|e| e.label()).collect();
            format!("unknown editor {s:?} (one of {})", known.join(", "))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_read_back_and_sit_at_their_index() {
        for (i, editor) in Editor::ALL.into_iter().enumerate() {
            assert_eq!(Editor::parse(editor.label()), Some(editor));
            assert_eq!(editor.index(), i);
        }
        assert_eq!(Editor::parse("Writer"), None);
        assert_eq!(Editor::parse(""), None);
    }

    #[test]
    fn only_writer_documents_gone_and_undocumented_codes_are_transient() {
        assert_eq!(Editor::Writer.code_meaning(1833), CodeMeaning::Gone);
        for editor in [Editor::Sheet, Editor::Show, Editor::Pdf] {
            assert_eq!(editor.code_meaning(1833), CodeMeaning::Transient, "{editor}");
            assert_eq!(editor.code_meaning(1834), CodeMeaning::Transient, "{editor}");
            assert_eq!(editor.code_meaning(1832), CodeMeaning::Transient, "{editor}");
            assert_eq!(editor.code_meaning(4242), CodeMeaning::Transient, "{editor}");
        }
        assert_eq!(Editor::Sheet.code_meaning(2890), CodeMeaning::KeyRejected);
        assert_eq!(Editor::Sheet.code_meaning(2893), CodeMeaning::QuotaExhausted);
        assert_eq!(Editor::Show.code_meaning(3890), CodeMeaning::KeyRejected);
        assert_eq!(Editor::Show.code_meaning(3893), CodeMeaning::QuotaExhausted);
        assert_eq!(Editor::Writer.code_meaning(2890), CodeMeaning::Transient);
        assert_eq!(Editor::Sheet.code_meaning(3890), CodeMeaning::Transient);
        assert_eq!(Editor::Pdf.code_meaning(1846), CodeMeaning::KeyRejected);
        assert_eq!(Editor::Pdf.code_meaning(1845), CodeMeaning::QuotaExhausted);
    }

    #[test]
    fn each_editor_answers_its_own_key_and_quota_codes() {
        for editor in Editor::ALL {
            let key: i64 = editor.key_rejected_code().parse().unwrap();
            let quota: i64 = editor.quota_code().parse().unwrap();
            assert_eq!(editor.code_meaning(key), CodeMeaning::KeyRejected);
            assert_eq!(editor.code_meaning(quota), CodeMeaning::QuotaExhausted);
        }
    }
}
