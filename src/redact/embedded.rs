//! JSON held in a string (tool arguments often are): read and redacted inside as a JSON text of
//! its own, one level deeper, its edits lifted through the string's escapes; refused when it
//! cannot be read and could hide a secret.

use crate::event::json::{self, JsonStr};
use crate::event::{Invalid, PAYLOAD_DEPTH_MAX};

use super::walk::Redacting;
use crate::refusal::Code;

/// Most levels of JSON held in a string that holds JSON (tool arguments often are) that
/// redaction reads into; a document nested deeper in strings is refused rather than stored
/// unread.
pub const EMBEDDED_JSON_LEVELS_MAX: usize = 4;

/// Whether a string's text could be a JSON object, array, or string (JSON encoded twice): it
/// starts so (a quoted string: starts and ends so), after any white space, byte-order mark or
/// control character.
fn looks_like_json(text: &str) -> bool {
    let t = text.trim_matches(|c: char| c.is_whitespace() || c.is_control() || c == '\u{feff}');
    t.starts_with(['{', '[']) || (t.len() >= 2 && t.starts_with('"') && t.ends_with('"'))
}

impl Redacting<'_, '_> {
    /// Redacts the string `value` as the JSON text it holds: `Ok(true)` when it was read so,
    /// `Ok(false)` when it is plain text (for the text rules), or the refusal when it looks like
    /// JSON that redaction cannot read.
    pub(super) fn embedded(&mut self, value: &JsonStr<'_>) -> Result<bool, Invalid> {
        let text = value.text.as_ref();
        if !looks_like_json(text) {
            return Ok(false);
        }
        let field = self.field;
        match json::check(text, PAYLOAD_DEPTH_MAX) {
            Ok(()) if self.level >= EMBEDDED_JSON_LEVELS_MAX => Err(Invalid::field(
                field,
                Code::TooDeep,
                format!(
                    "{field} holds JSON in a string more than {EMBEDDED_JSON_LEVELS_MAX} levels deep, which redaction does not read"
                ),
            )),
            Ok(()) => {
                let inner = self.redactor.redact_text(
                    text,
                    field,
                    &self.path,
                    self.level + 1,
                    &mut *self.fired,
                )?;
                self.lift(value, inner);
                Ok(true)
            }
            Err(err) if err.is_strictness() => Err(Invalid::field(
                field,
                err.code(),
                format!("{field} holds a string of JSON text that {err}"),
            )),
            // Structured text that is not JSON (`NaN`, a trailing comma, a Python dict's repr)
            // and spells a secret's key name: it cannot be read, so it is refused rather than
            // stored with whatever the name holds.
            Err(_) if self.redactor.names_appear(text) => Err(Invalid::field(
                field,
                Code::UnreadableJsonInString,
                format!(
                    "{field} holds a string that looks like JSON but is not (at least not I-JSON), and names a key that redaction covers; send it as JSON, or without the secret"
                ),
            )),
            // Not JSON and no key name: plain text, for the patterns.
            Err(_) => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::validate;
    use crate::redact::tests::start;
    use crate::redact::{RedactionConfig, Redactor};
    use serde_json::Value;

    /// A string holding JSON (tool arguments often do) is redacted inside, every other byte of
    /// it kept as escaped by the client; JSON text that redaction cannot read is refused.
    #[test]
    fn json_held_in_strings_is_redacted_inside_or_refused() {
        let redactor = Redactor::new(&RedactionConfig::default()).unwrap();
        let run = |payload: &str| redactor.redacted_body(&validate(&start(payload)).unwrap());
        let redacted = run(r#"{"arguments":"{\"user\":\"ann\",\"apiKey\":\"k-1\",\"n\":1e2}"}"#)
            .unwrap()
            .unwrap();
        assert!(
            redacted.contains(r#""arguments":"{\"user\":\"ann\",\"apiKey\":\"[redacted:key:api_key]\",\"n\":1e2}""#),
            "{redacted}"
        );
        // Two strings deep.
        let text = serde_json::json!({"inner": {"password": "p"}}).to_string();
        let in_string = serde_json::to_string(&text).unwrap();
        let twice = serde_json::to_string(&in_string).unwrap();
        let redacted = run(&format!(r#"{{"a":{twice}}}"#)).unwrap().unwrap();
        let event: Value = serde_json::from_str(&redacted).unwrap();
        let once = event["request_data"]["a"].as_str().unwrap();
        let inner: Value =
            serde_json::from_str(&serde_json::from_str::<String>(once).unwrap()).unwrap();
        assert_eq!(inner["inner"]["password"], "[redacted:key:password]");
        // JSON text that is not I-JSON inside a string: refused, never stored unread.
        for (payload, code) in [
            (
                r#"{"arguments":"{\"password\":\"S\",\"n\":1e400}"}"#,
                "number_out_of_range",
            ),
            (
                r#"{"arguments":"{\"password\":\"S\",\"s\":\"\\ud800\"}"}"#,
                "lone_surrogate",
            ),
            (
                r#"{"arguments":"{\"password\":\"S\",\"password\":\"T\"}"}"#,
                "duplicate_member",
            ),
        ] {
            let err = run(payload).unwrap_err();
            assert_eq!(
                (err.code.as_str(), err.field.as_deref()),
                (code, Some("request_data")),
                "{payload}"
            );
        }
        let mut deep = r#"{"password":"S"}"#.to_owned();
        for _ in 0..=EMBEDDED_JSON_LEVELS_MAX {
            deep = format!(r#"{{"a":{}}}"#, serde_json::to_string(&deep).unwrap());
        }
        assert_eq!(run(&deep).unwrap_err().code.as_str(), "too_deep");
        // Text that merely starts with a brace is text.
        assert!(run(r#"{"note":"{not json, Bearer abcdefghijkl}"}"#)
            .unwrap()
            .is_some());
    }
}
