//! The JSON line format, written straight into the line buffer: the same object that
//! `tracing_subscriber`'s JSON format writes (`timestamp`, `level`, `fields`, `target`, and
//! `span` with the current span's fields and name), without its detours. That format serializes
//! each event through serde's map machinery over two `Write` adaptors, formats the timestamp into
//! a `String` of its own, and parses the current span's fields back from JSON text for every
//! event; at full speed, with one `deletion finished` line per deletion, that was 6 % of the
//! daemon's CPU samples (the README, "Cost at the operating point").

use std::fmt::{self, Write};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// One JSON object per event, one line each.
pub struct JsonLines;

impl<S> FormatEvent<S, JsonFields> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, JsonFields>, mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let meta = event.metadata();
        w.write_str("{\"timestamp\":\"")?;
        write_timestamp(&mut w, std::time::SystemTime::now())?;
        w.write_str("\",\"level\":\"")?;
        w.write_str(meta.level().as_str())?;
        w.write_str("\",\"fields\":{")?;
        let mut fields = Fields {
            w: &mut w,
            first: true,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        w.write_str("},\"target\":")?;
        write_string(&mut w, meta.target())?;
        let span = event
            .parent()
            .and_then(|id| ctx.span(id))
            .or_else(|| ctx.lookup_current());
        if let Some(span) = span {
            w.write_str(",\"span\":{")?;
            let extensions = span.extensions();
            // The span's fields, as `JsonFields` wrote them when it was entered: a JSON object.
            let inner = extensions
                .get::<FormattedFields<JsonFields>>()
                .map(|f| f.fields.trim())
                .and_then(|f| f.strip_prefix('{')?.strip_suffix('}'))
                .unwrap_or("");
            if !inner.trim().is_empty() {
                w.write_str(inner)?;
                w.write_char(',')?;
            }
            w.write_str("\"name\":")?;
            write_string(&mut w, span.name())?;
            w.write_char('}')?;
        }
        w.write_str("}\n")
    }
}

/// Writes each field as `"name":value`, the way `tracing_serde` does: numbers and booleans as
/// JSON values, everything else (`Debug`, `Display`, errors) as a string.
struct Fields<'a, 'w> {
    w: &'a mut Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl Fields<'_, '_> {
    fn entry(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        self.result = (|| {
            if !self.first {
                self.w.write_char(',')?;
            }
            self.first = false;
            write_string(self.w, field.name())?;
            self.w.write_char(':')?;
            value(self.w)
        })();
    }
}

impl Visit for Fields<'_, '_> {
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.entry(field, |w| w.write_str(if value { "true" } else { "false" }));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.entry(field, |w| write!(w, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.entry(field, |w| write!(w, "{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // As serde_json: `21.0`, not `21`; and `null` for what JSON cannot say.
        self.entry(field, |w| match value.is_finite() {
            true => write!(w, "{value:?}"),
            false => w.write_str("null"),
        });
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.entry(field, |w| write_string(w, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.entry(field, |w| {
            w.write_char('"')?;
            write!(Escaped(&mut *w), "{value:?}")?;
            w.write_char('"')
        });
    }
}

/// A JSON string: quoted, escaped.
fn write_string(w: &mut impl Write, s: &str) -> fmt::Result {
    w.write_char('"')?;
    Escaped(&mut *w).write_str(s)?;
    w.write_char('"')
}

/// Escapes what it is given for the inside of a JSON string (as serde_json does: `\"`, `\\`,
/// `\n`, `\r`, `\t`, `\b`, `\f`, other control characters as `\u00XX`).
struct Escaped<W>(W);

impl<W: Write> Write for Escaped<W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let bytes = s.as_bytes();
        let mut start = 0;
        for (i, &b) in bytes.iter().enumerate() {
            let escape = match b {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0x08 => "\\b",
                0x0c => "\\f",
                0..=0x1f => "",
                _ => continue,
            };
            // Every byte matched above is ASCII, so `i` is a char boundary.
            self.0.write_str(&s[start..i])?;
            if escape.is_empty() {
                write!(self.0, "\\u{:04x}", b)?;
            } else {
                self.0.write_str(escape)?;
            }
            start = i + 1;
        }
        self.0.write_str(&s[start..])
    }
}

/// `2026-12-01T11:46:26.168719Z`, as `tracing_subscriber`'s `SystemTime` writes it (UTC,
/// microseconds).
fn write_timestamp(w: &mut impl Write, now: std::time::SystemTime) -> fmt::Result {
    let since = now.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, day_secs) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    write!(
        w,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        day_secs / 3600,
        day_secs / 60 % 60,
        day_secs % 60,
        since.subsec_micros()
    )
}

/// Year, month, day of a count of days since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn timestamp(secs: u64, micros: u64) -> String {
        let mut s = String::new();
        write_timestamp(
            &mut s,
            UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros),
        )
        .unwrap();
        s
    }

    #[test]
    fn timestamps_read_as_chrono_writes_them() {
        for secs in [
            0,
            951_782_400,
            1_709_164_800,
            1_764_589_586,
            4_102_444_799,
            32_503_680_000,
        ] {
            let expected = chrono::DateTime::from_timestamp(secs as i64, 168_719_000)
                .unwrap()
                .format("%Y-%m-%dT%H:%M:%S%.6fZ")
                .to_string();
            assert_eq!(timestamp(secs, 168_719), expected);
        }
    }

    /// Lines written by a subscriber, kept for the test.
    #[derive(Clone, Default)]
    struct Lines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Lines {
        type Writer = Lines;
        fn make_writer(&'a self) -> Lines {
            self.clone()
        }
    }

    /// Every kind of field, outside and inside a span (with a field recorded late).
    fn events() {
        let error = std::io::Error::other("disk \"full\"");
        tracing::info!(row_id = 7_i64, count = 3_u64, ok = true, ratio = 21.0, tiny = 1e-7, nan = f64::NAN,
            session = %"ab\ncd", mode = ?Some("x"), error = &error as &dyn std::error::Error, "deletion finished");
        let span = tracing::info_span!("deletion", row_id = 7, session = "s\"1", late = tracing::field::Empty);
        let _entered = span.enter();
        span.record("late", 5);
        tracing::warn!(big = u64::MAX, neg = -3, "inside {}", "a span");
        tracing::error!(text = "tab\there", "no fields of the span's kind");
    }

    fn lines_of(json_lines: bool) -> Vec<serde_json::Value> {
        let lines = Lines::default();
        let builder = tracing_subscriber::fmt()
            .with_writer(lines.clone())
            .with_ansi(false)
            .json();
        if json_lines {
            tracing::subscriber::with_default(builder.event_format(JsonLines).finish(), events);
        } else {
            let builder = builder.with_current_span(true).with_span_list(false);
            tracing::subscriber::with_default(builder.finish(), events);
        }
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|line| {
                let mut value: serde_json::Value = serde_json::from_str(line).expect(line);
                assert!(
                    value["timestamp"]
                        .as_str()
                        .is_some_and(|t| t.len() == 27 && t.ends_with('Z')),
                    "{line}"
                );
                value["timestamp"] = serde_json::Value::Null;
                value
            })
            .collect()
    }

    #[test]
    fn lines_carry_the_same_objects_as_tracing_subscribers_json_format() {
        let (ours, theirs) = (lines_of(true), lines_of(false));
        assert_eq!(ours.len(), 3);
        assert_eq!(ours, theirs);
        assert_eq!(ours[1]["span"]["late"], 5);
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        for s in [
            "plain",
            "quote \" and \\ backslash",
            "line\nbreak\ttab\r",
            "\u{1}\u{8}\u{c}\u{1f}",
            "é ✓ 日本",
        ] {
            let mut ours = String::new();
            write_string(&mut ours, s).unwrap();
            assert_eq!(ours, serde_json::to_string(s).unwrap());
        }
    }
}
