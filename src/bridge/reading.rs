//! Payload bytes → [`Reading`]: the one place that decides what an MQTT payload means.
//!
//! Sensors publish in many dialects: a bare number (`26.250`, ` 21.5\n`), a JSON number, or a JSON
//! document from which `--json-pointer` picks the value (`{"temperature": 21.5}` with
//! `/temperature`). Everything else is rejected with a [`PayloadError`] that says why, so the MQTT
//! task can log it and keep the last valid reading. Pure: no I/O, no clock.

use thiserror::Error;

/// Payloads larger than this are rejected without being parsed: no sensor reading needs more, and
/// a runaway publisher must not cost the bot memory or CPU.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;

/// One valid sensor value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// The measured value; always finite.
    pub value: f64,
}

/// How a payload is read: straight as a number, or through a JSON pointer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PayloadFormat {
    /// RFC 6901 pointer (e.g. `/temperature`) into a JSON document; `None` reads the payload as a
    /// number.
    pub json_pointer: Option<String>,
}

/// Why a payload was not accepted. The message is meant for the operator's log.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PayloadError {
    /// Nothing but whitespace.
    #[error("empty payload")]
    Empty,
    /// Over [`MAX_PAYLOAD_BYTES`].
    #[error("payload of {0} bytes is over the {MAX_PAYLOAD_BYTES}-byte limit")]
    TooLarge(usize),
    /// Not UTF-8 text.
    #[error("payload is not UTF-8 text")]
    NotUtf8,
    /// Text that is not a number (and no JSON pointer was configured).
    #[error("not a number (for JSON documents, set --json-pointer)")]
    NotANumber,
    /// NaN or an infinity: a sensor fault, not a temperature.
    #[error("value is not finite (NaN or infinity)")]
    NotFinite,
    /// A JSON pointer is configured but the payload is not JSON.
    #[error("not valid JSON: {0}")]
    InvalidJson(String),
    /// The JSON document has nothing at the configured pointer.
    #[error("JSON document has no value at {0}")]
    PointerNotFound(String),
    /// The value at the pointer is neither a number nor a string holding one.
    #[error("value at {0} is not a number")]
    PointerNotNumber(String),
    /// The topic holds characters XML cannot carry (control characters other than tab and
    /// line ends; XML 1.0 §2.2), which MQTT allows: no chat message, form or read-out could
    /// name it.
    #[error("the topic has control characters, which no XMPP message can carry")]
    UnprintableTopic,
}

/// Whether every character of `text` may appear in XML 1.0 text (§2.2).
pub fn xml_printable(text: &str) -> bool {
    text.chars().all(xml_char)
}

/// Whether `c` may appear in XML 1.0 text (§2.2): not a control character other than tab and
/// line ends, nor U+FFFE or U+FFFF.
pub fn xml_char(c: char) -> bool {
    !((c < ' ' && !matches!(c, '\t' | '\n' | '\r')) || matches!(c, '\u{fffe}' | '\u{ffff}'))
}

/// Parses one payload according to `format`.
pub fn parse(payload: &[u8], format: &PayloadFormat) -> Result<Reading, PayloadError> {
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(PayloadError::TooLarge(payload.len()));
    }
    let text = std::str::from_utf8(payload).map_err(|_| PayloadError::NotUtf8)?;
    let text = text.trim();
    if text.is_empty() {
        return Err(PayloadError::Empty);
    }
    match &format.json_pointer {
        None => parse_number(text),
        Some(pointer) => {
            let doc: serde_json::Value =
                serde_json::from_str(text).map_err(|e| PayloadError::InvalidJson(e.to_string()))?;
            let found = doc
                .pointer(pointer)
                .ok_or_else(|| PayloadError::PointerNotFound(pointer.clone()))?;
            match found {
                serde_json::Value::Number(n) => {
                    // serde_json numbers are finite by construction, but the f64 view of a huge
                    // integer or exponent can still overflow to infinity.
                    finite(n.as_f64().ok_or(PayloadError::NotFinite)?)
                }
                serde_json::Value::String(s) => parse_number(s.trim())
                    .map_err(|_| PayloadError::PointerNotNumber(pointer.clone())),
                _ => Err(PayloadError::PointerNotNumber(pointer.clone())),
            }
        }
    }
}

/// A plain decimal number as sensors print it; JSON numbers are a subset of this.
fn parse_number(text: &str) -> Result<Reading, PayloadError> {
    // Rust's float grammar also accepts "inf", "infinity" and "nan" in any case: those are sensor
    // faults, reported as such rather than as "not a number".
    let lowered = text.trim_start_matches(['+', '-']).to_ascii_lowercase();
    if matches!(lowered.as_str(), "nan" | "inf" | "infinity") {
        return Err(PayloadError::NotFinite);
    }
    let value: f64 = text.parse().map_err(|_| PayloadError::NotANumber)?;
    finite(value)
}

fn finite(value: f64) -> Result<Reading, PayloadError> {
    if value.is_finite() {
        Ok(Reading { value })
    } else {
        Err(PayloadError::NotFinite)
    }
}

/// A short, printable excerpt of a payload for log lines: at most `max` characters, control
/// characters escaped, invalid UTF-8 shown as replacement characters.
pub fn excerpt(payload: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(&payload[..payload.len().min(max * 4)]);
    let mut out: String = text
        .chars()
        .take(max)
        .flat_map(char::escape_debug)
        .collect();
    if text.chars().count() > max || payload.len() > max * 4 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(payload: &[u8]) -> Result<Reading, PayloadError> {
        parse(payload, &PayloadFormat::default())
    }

    fn pointer(payload: &[u8], p: &str) -> Result<Reading, PayloadError> {
        parse(
            payload,
            &PayloadFormat {
                json_pointer: Some(p.to_string()),
            },
        )
    }

    #[test]
    fn plain_numbers_as_sensors_print_them() {
        assert_eq!(plain(b"26.250"), Ok(Reading { value: 26.25 }));
        assert_eq!(plain(b" 21.5\n"), Ok(Reading { value: 21.5 }));
        assert_eq!(plain(b"-3"), Ok(Reading { value: -3.0 }));
        assert_eq!(plain(b"\t+7.25\r\n"), Ok(Reading { value: 7.25 }));
        assert_eq!(plain(b"1e3"), Ok(Reading { value: 1000.0 }));
    }

    #[test]
    fn json_number_without_pointer() {
        assert_eq!(plain(b"2.15e1"), Ok(Reading { value: 21.5 }));
        assert_eq!(plain(b"0"), Ok(Reading { value: 0.0 }));
    }

    #[test]
    fn json_document_needs_a_pointer() {
        assert_eq!(
            plain(br#"{"temperature": 21.5}"#),
            Err(PayloadError::NotANumber)
        );
    }

    #[test]
    fn json_pointer_picks_the_value() {
        let doc = br#"{"temperature": 21.5, "humidity": 40, "nested": {"v": [1, "2.5"]}}"#;
        assert_eq!(pointer(doc, "/temperature"), Ok(Reading { value: 21.5 }));
        assert_eq!(pointer(doc, "/humidity"), Ok(Reading { value: 40.0 }));
        assert_eq!(pointer(doc, "/nested/v/0"), Ok(Reading { value: 1.0 }));
        // Some devices send numbers as strings.
        assert_eq!(pointer(doc, "/nested/v/1"), Ok(Reading { value: 2.5 }));
    }

    #[test]
    fn json_pointer_errors_name_the_pointer() {
        let doc = br#"{"temperature": "warm", "ok": true}"#;
        assert_eq!(
            pointer(doc, "/missing"),
            Err(PayloadError::PointerNotFound("/missing".into()))
        );
        assert_eq!(
            pointer(doc, "/temperature"),
            Err(PayloadError::PointerNotNumber("/temperature".into()))
        );
        assert_eq!(
            pointer(doc, "/ok"),
            Err(PayloadError::PointerNotNumber("/ok".into()))
        );
        assert!(matches!(
            pointer(b"21.5 C", "/t"),
            Err(PayloadError::InvalidJson(_))
        ));
        // A JSON pointer applied to a bare JSON number document: the root pointer "" selects it.
        assert_eq!(pointer(b"21.5", ""), Ok(Reading { value: 21.5 }));
    }

    #[test]
    fn non_finite_values_are_sensor_faults() {
        for bad in [&b"NaN"[..], b"nan", b"inf", b"-inf", b"Infinity", b"+INF"] {
            assert_eq!(plain(bad), Err(PayloadError::NotFinite), "{bad:?}");
        }
        // Overflows to infinity when parsed.
        assert_eq!(plain(b"1e400"), Err(PayloadError::NotFinite));
        // serde_json refuses such numbers outright.
        assert!(matches!(
            pointer(br#"{"t": 1e400}"#, "/t"),
            Err(PayloadError::InvalidJson(_))
        ));
        assert_eq!(
            pointer(br#"{"t": "NaN"}"#, "/t"),
            Err(PayloadError::PointerNotNumber("/t".into()))
        );
    }

    #[test]
    fn garbage_is_rejected() {
        assert_eq!(plain(b""), Err(PayloadError::Empty));
        assert_eq!(plain(b" \n\t "), Err(PayloadError::Empty));
        assert_eq!(plain(b"\xff\xfe21"), Err(PayloadError::NotUtf8));
        assert_eq!(plain(b"twenty"), Err(PayloadError::NotANumber));
        assert_eq!(plain(b"21.5 C"), Err(PayloadError::NotANumber));
        assert_eq!(plain(b"0x15"), Err(PayloadError::NotANumber));
        assert_eq!(plain(b"1,5"), Err(PayloadError::NotANumber));
    }

    #[test]
    fn huge_payloads_are_rejected_before_parsing() {
        let huge = vec![b'1'; MAX_PAYLOAD_BYTES + 1];
        assert_eq!(
            plain(&huge),
            Err(PayloadError::TooLarge(MAX_PAYLOAD_BYTES + 1))
        );
        // Exactly at the limit it is still parsed: a number padded with whitespace.
        let mut at_limit = vec![b' '; MAX_PAYLOAD_BYTES];
        at_limit[0] = b'7';
        assert!(plain(&at_limit).is_ok());
    }

    #[test]
    fn excerpt_is_short_and_printable() {
        assert_eq!(excerpt(b"21.5", 10), "21.5");
        assert_eq!(excerpt(b"abc\ndef", 10), "abc\\ndef");
        assert_eq!(excerpt(b"0123456789abc", 10), "0123456789…");
        assert_eq!(excerpt(b"\xff1", 10), "\u{fffd}1");
        assert_eq!(excerpt(&vec![b'x'; 100_000], 8), "xxxxxxxx…");
    }
}
