//! Redaction inside a string's text: the value of `name=value` (a query string, a log line, a
//! header dump) under a key name, and every pattern's matches.

use std::collections::BTreeSet;
use std::ops::Range;

use regex::Regex;

use super::walk::Edit;
use super::Redactor;

/// `name=value`, `name: value`, `"name": "value"` in text.
pub(super) fn assignment() -> Regex {
    Regex::new(
        r#"(?P<name>[\pL\pN_.$\[\]-]{1,64})["']?\s*[:=]\s*(?P<value>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[^\s&,;"'}\])]+)"#,
    )
    .expect("the assignment pattern compiles")
}

impl Redactor {
    /// The edits (in `text`'s bytes, in order) that redact one string's decoded text, the rules
    /// that fired added to `fired`: every assignment under a key name and every pattern match,
    /// overlapping ones merged, each span named by the rule of its first match.
    pub(super) fn text_edits(&self, text: &str, fired: &mut BTreeSet<String>) -> Vec<Edit> {
        let assigned = self.assigned(text);
        let mut spans: Vec<(Range<usize>, &str)> = Vec::new();
        for (range, rule) in &assigned {
            spans.push((range.clone(), rule.as_str()));
            fired.insert(rule.clone());
        }
        for (rule, regex) in &self.patterns {
            for found in regex.find_iter(text) {
                spans.push((found.range(), rule));
                fired.insert(rule.clone());
            }
        }
        merge(spans)
            .into_iter()
            .map(|(range, rule)| Edit {
                range,
                text: format!("[redacted:{rule}]"),
            })
            .collect()
    }

    /// The values of `name=value` and `name: value` in `text` whose name a key rule covers,
    /// each with that rule: the value is redacted as a member's would be.
    fn assigned(&self, text: &str) -> Vec<(Range<usize>, String)> {
        if !self.names_appear(text) {
            return Vec::new();
        }
        let mut assigned = Vec::new();
        for found in self.assignment.captures_iter(text) {
            let (Some(name), Some(value)) = (found.name("name"), found.name("value")) else {
                continue;
            };
            if let Some(rule) = self.key_rule(name.as_str(), "") {
                assigned.push((value.range(), rule));
            }
        }
        assigned
    }
}

/// The spans sorted, overlapping ones merged into the first (whose rule names the whole).
fn merge(mut spans: Vec<(Range<usize>, &str)>) -> Vec<(Range<usize>, &str)> {
    spans.sort_by_key(|(range, _)| (range.start, range.end));
    let mut merged: Vec<(Range<usize>, &str)> = Vec::new();
    for (range, rule) in spans {
        match merged.last_mut() {
            Some((last, _)) if range.start < last.end => last.end = last.end.max(range.end),
            _ => merged.push((range, rule)),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use crate::event::validate;
    use crate::redact::tests::{redact, start};
    use crate::redact::{RedactionConfig, Redactor};
    use serde_json::Value;

    #[test]
    fn patterns_replace_only_the_matching_part_of_a_string() {
        let body = start(
            r#"{"cmd":"curl -H 'Authorization: Bearer abc.def-123456' x","key":"use sk-abcdefghijklmnopqrstuvwx now","mail":"ann@example.com"}"#,
        );
        let event = redact(&RedactionConfig::default(), &body).unwrap();
        let data = &event["request_data"];
        assert_eq!(
            data["cmd"],
            "curl -H 'Authorization: [redacted:key:authorization]' x"
        );
        assert_eq!(data["key"], "use [redacted:pattern:openai_key] now");
        assert_eq!(
            data["mail"], "ann@example.com",
            "e-mail addresses are opt-in"
        );
        let with_emails = RedactionConfig {
            emails: true,
            ..RedactionConfig::default()
        };
        let event = redact(&with_emails, &body).unwrap();
        assert_eq!(event["request_data"]["mail"], "[redacted:pattern:email]");
    }

    /// Secrets in text: `name=value` under a key name is redacted; text that looks like JSON
    /// but is not, and names a covered key, is refused; the built-in patterns catch the forms a
    /// hostile pass found, and the server's static keys are always redacted.
    #[test]
    fn secrets_in_text_and_the_pattern_edges() {
        let redactor =
            Redactor::with_secrets(&RedactionConfig::default(), &["static-key-0123456789"])
                .unwrap();
        let run = |payload: &str| {
            redactor.redacted_body(
                &validate(&start(payload)).unwrap_or_else(|e| panic!("{payload}: {e:?}")),
            )
        };
        let stored = |payload: &str| run(payload).unwrap().unwrap();
        let text =
            stored(r#"{"q":"user=ann&password=hunter2&x=1","log":"Enter Password: hunter3 now"}"#);
        assert!(
            text.contains("user=ann&password=[redacted:key:password]&x=1")
                && text.contains("Enter Password: [redacted:key:password] now"),
            "{text}"
        );
        for payload in [
            r#"{"args":"{\"password\": \"S\", \"x\": NaN}"}"#,
            r#"{"args":"{'password': 'S'}"}"#,
            r#"{"args":" \ufeff{\"password\":\"S\",}"}"#,
        ] {
            let err = run(payload).unwrap_err();
            assert_eq!(err.code.as_str(), "unreadable_json_in_string", "{payload}");
        }
        // Name/value pairs, as header lists write them, in either order.
        let text = stored(
            r#"{"headers":[{"name":"Authorization","value":"hdr-1"},{"value":{"v":"hdr-2"},"Key":"x-api-key"},{"name":"Accept","value":"json"}]}"#,
        );
        assert!(!text.contains("hdr-1") && !text.contains("hdr-2"), "{text}");
        assert!(
            text.contains(r#"{"name":"Accept","value":"json"}"#),
            "{text}"
        );
        // Broken JSON that names no covered key is text.
        assert_eq!(run(r#"{"args":"{\"n\": NaN}"}"#), Ok(None));
        for secret in [
            "my_sk-abcdefghijklmnopqrstuvwx",
            "1sk-abcdefghijklmnopqrstuvwx",
            "keyAKIAABCDEFGHIJKLMNOP",
            "ASIAABCDEFGHIJKLMNOPx",
            "github_pat_abcdefghijklmnopqrstuvwxyz",
            "Bearer\\u00a0abcdefghijkl",
            "Bearer:abcdefghijkl",
            "xoxe-abcdefghijkl",
            "mcplog_admin_0123456789abcdef0123",
            "see static-key-0123456789 here",
        ] {
            let text = stored(&format!(r#"{{"note":"{secret}"}}"#));
            let event: Value = serde_json::from_str(&text).unwrap();
            let note = event["request_data"]["note"].as_str().unwrap();
            assert!(note.contains("[redacted:pattern:"), "{secret}: {note}");
            assert!(
                !note.contains("abcdefghijkl") && !note.contains("0123456789"),
                "{secret}: {note}"
            );
        }
        // The rule set's fingerprint does not carry a static key.
        assert!(!redactor.version().contains("static"));
        let err = redactor
            .redacted_body(
                &validate(&start("{}").replace(r#""i""#, r#""static-key-0123456789""#)).unwrap(),
            )
            .unwrap_err();
        assert_eq!(err.code.as_str(), "secret_in_id");
        // Error answers quote what was sent: scrubbed.
        assert_eq!(
            redactor
                .scrub("unknown field \"sk-abcdefghijklmnopqrstuvwx\"")
                .as_deref(),
            Some("unknown field \"[redacted:pattern:openai_key]\"")
        );
        // A configured pattern that matches (nearly) everything is refused.
        for pattern in ["", ".", "a*", "\\w"] {
            let bad = RedactionConfig {
                patterns: vec![pattern.into()],
                ..RedactionConfig::default()
            };
            assert!(Redactor::new(&bad).is_err(), "{pattern:?}");
        }
    }
}
