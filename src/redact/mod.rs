//! Redaction before anything is stored: values under sensitive key names (or JSON paths), and
//! parts of strings that match sensitive patterns, in an event's payload are replaced by a
//! marker naming the rule that fired, and the event gains a `redaction` field listing the rules
//! and the rule set's version. The log then holds exactly the redacted bytes; changing the rules
//! changes what later events become, never what is stored. Nothing here knows HTTP.
//!
//! Most events carry nothing to redact, so a prefilter over the raw body decides first: no key
//! name anywhere (case-insensitive), no pattern match, and no JSON escape (which could spell a
//! key or a secret in other bytes) means the body is stored as it came, unparsed.
//!
//! The jobs, one a module: `rules` compiles the configuration into a [`Redactor`], `names`
//! matches key names, `prefilter` looks at the raw body, `walk` edits a JSON text, `text`
//! scans a string's text, `embedded` reads JSON held in a string.

mod embedded;
mod names;
mod prefilter;
mod rules;
mod text;
mod walk;

use std::collections::BTreeSet;

use regex::Regex;

use crate::event::{payload_of, Invalid, NewEvent, ValidEvent};
use crate::refusal::Code;

pub use embedded::EMBEDDED_JSON_LEVELS_MAX;
pub use names::{fold, words_of};
pub use rules::{DEFAULT_KEYS, DEFAULT_PATTERNS, EMAIL_PATTERN};

/// `[redaction]` as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedactionConfig {
    /// `enabled`: redaction on (default true).
    pub enabled: bool,
    /// `builtin`: the built-in key names and patterns apply (default true); the configured
    /// `keys` and `patterns` add to them.
    pub builtin: bool,
    /// `keys`: key names, or dotted JSON paths from the event's root such as
    /// `request_data.headers.x-api-key`; case-insensitive. Added to [`DEFAULT_KEYS`].
    pub keys: Vec<String>,
    /// `patterns`: regular expressions over string values, added to [`DEFAULT_PATTERNS`].
    pub patterns: Vec<String>,
    /// `emails`: also redact e-mail addresses (default false).
    pub emails: bool,
}

impl Default for RedactionConfig {
    fn default() -> RedactionConfig {
        RedactionConfig {
            enabled: true,
            builtin: true,
            keys: Vec::new(),
            patterns: Vec::new(),
            emails: false,
        }
    }
}

/// The compiled rules.
#[derive(Debug)]
pub struct Redactor {
    enabled: bool,
    /// Key names (no dot).
    keys: Vec<names::KeyName>,
    /// Lowercased dotted paths.
    paths: Vec<String>,
    /// Matches a raw body in which a rule could fire: a word of every key name, every path
    /// segment (case-insensitively), any pattern, or a JSON escape. One pass over the bytes.
    prefilter: Regex,
    /// Without configured patterns, a faster first pass over ASCII bodies: the same words, a
    /// backslash, and a literal every built-in pattern's match contains. A body it does not
    /// match cannot match `prefilter` either.
    literals: Option<aho_corasick::AhoCorasick>,
    patterns: Vec<(String, Regex)>,
    /// A word of some key name, in text: whether a string could name a secret's key.
    names: aho_corasick::AhoCorasick,
    /// `name=value`, `name: value`, `"name": "value"` in text.
    assignment: Regex,
    version: String,
}

impl Redactor {
    /// The rule set's version: a fingerprint of the rules, recorded in every redacted event.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The event to store: the client's, or its redacted form when a rule fired; refused when a
    /// secret sits where it cannot be redacted (an id, a member name) or the payload holds JSON
    /// text that redaction cannot read.
    pub fn new_event(&self, valid: &ValidEvent<'_>) -> Result<NewEvent, Invalid> {
        Ok(match self.redacted_body(valid)? {
            None => NewEvent::from(valid),
            Some(body) => NewEvent::new(
                valid.action,
                valid.timestamp,
                &valid.interaction_id,
                &valid.mcp_id,
                valid.event_id.as_deref(),
                &body,
            ),
        })
    }

    /// The redacted body, if any rule fired. Only the bytes of what a rule caught change: every
    /// other byte of the client's body (numbers as written, white space, member order, escapes)
    /// is kept, and the record of what fired is added before the closing brace.
    pub fn redacted_body(&self, valid: &ValidEvent<'_>) -> Result<Option<String>, Invalid> {
        if !self.enabled || !self.may_fire(valid.body) {
            return Ok(None);
        }
        self.refuse_secret_ids(valid)?;
        let body = valid.body;
        let field = valid.action.payload_field();
        let unreadable = || {
            Invalid::field(
                field,
                Code::UnreadablePayload,
                format!("{field} could not be read for redaction"),
            )
        };
        let Some(raw) = payload_of(body, valid.action).map_err(|_| unreadable())? else {
            return Ok(None);
        };
        let mut fired = BTreeSet::new();
        let edits = self.redact_text(raw.get(), field, field, 0, &mut fired)?;
        if edits.is_empty() {
            return Ok(None);
        }
        Ok(Some(self.splice(
            body,
            raw.get(),
            &walk::apply(raw.get(), &edits),
            &fired,
        )))
    }

    /// Refuses an event whose id matches a pattern: an id is never redacted.
    fn refuse_secret_ids(&self, valid: &ValidEvent<'_>) -> Result<(), Invalid> {
        let ids = [
            ("interaction_id", Some(&valid.interaction_id)),
            ("mcp_id", Some(&valid.mcp_id)),
            ("event_id", valid.event_id.as_ref()),
        ];
        for (field, value) in ids {
            if let Some(rule) = value.and_then(|v| self.pattern_in(v)) {
                return Err(Invalid::field(
                    field,
                    Code::SecretInId,
                    format!(
                        "{field} matches the redaction rule {rule}; an id is never redacted, so the event is refused rather than stored with it"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// `body` with its payload (`payload`, a slice of it) replaced by `redacted`, every other
    /// byte the client sent kept, and the record of the rules that `fired` added before the
    /// closing brace.
    fn splice(
        &self,
        body: &str,
        payload: &str,
        redacted: &str,
        fired: &BTreeSet<String>,
    ) -> String {
        let start = payload.as_ptr() as usize - body.as_ptr() as usize;
        let end = start + payload.len();
        let close = body.trim_end().len() - 1;
        // Written out, so its bytes do not depend on how serde_json orders maps.
        let rules = serde_json::to_string(fired).expect("strings serialize");
        let note = format!(r#"{{"rules":{rules},"rule_set":"{}"}}"#, self.version);
        let mut out = String::with_capacity(body.len() + note.len() + 16);
        out.push_str(&body[..start]);
        out.push_str(redacted);
        out.push_str(&body[end..close]);
        out.push_str(",\"redaction\":");
        out.push_str(&note);
        out.push_str(&body[close..]);
        out
    }

    /// `text` (an error answer, which quotes what the client sent) with every part a pattern
    /// matches replaced by its marker, or `None` if none does.
    pub fn scrub(&self, text: &str) -> Option<String> {
        let mut out: Option<String> = None;
        for (rule, regex) in &self.patterns {
            let current = out.as_deref().unwrap_or(text);
            if regex.is_match(current) {
                let replaced = regex
                    .replace_all(current, format!("[redacted:{rule}]").as_str())
                    .into_owned();
                out = Some(replaced);
            }
        }
        out
    }

    /// The first pattern rule that matches `text`.
    fn pattern_in(&self, text: &str) -> Option<&str> {
        self.patterns
            .iter()
            .find(|(_, regex)| regex.is_match(text))
            .map(|(rule, _)| rule.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::validate;
    use serde_json::Value;

    pub(super) fn redact(config: &RedactionConfig, body: &str) -> Option<Value> {
        let redactor = Redactor::new(config).unwrap();
        let valid = validate(body).unwrap();
        redactor
            .redacted_body(&valid)
            .unwrap()
            .map(|b| serde_json::from_str(&b).expect("the redacted body is JSON"))
    }

    /// `count` texts, each 1 to `parts_max` of `parts` run together, picked by a xorshift from
    /// `seed`: deterministic, so a failure replays exactly.
    pub(super) fn joined_at_random(
        parts: &[&str],
        parts_max: u64,
        count: usize,
        mut seed: u64,
    ) -> Vec<String> {
        (0..count)
            .map(|_| {
                let mut text = String::new();
                for _ in 0..(seed % parts_max + 1) {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    text.push_str(parts[(seed % parts.len() as u64) as usize]);
                }
                text
            })
            .collect()
    }

    pub(super) fn start(payload: &str) -> String {
        format!(
            r#"{{"action":"interaction_start","interaction_id":"i","mcp_id":"m","timestamp":1,"request_data":{payload}}}"#
        )
    }

    #[test]
    fn paths_escapes_and_the_prefilter() {
        let config = RedactionConfig {
            keys: vec!["request_data.headers.X-Custom".into()],
            patterns: vec![r"\d{4}-\d{4}-\d{4}-\d{4}".into()],
            ..RedactionConfig::default()
        };
        let body =
            start(r#"{"headers":{"x-custom":"v"},"x-custom":"kept","card":"1234-5678-9012-3456"}"#);
        let event = redact(&config, &body).unwrap();
        assert_eq!(
            event["request_data"]["headers"]["x-custom"],
            "[redacted:path:request_data.headers.x-custom]"
        );
        assert_eq!(event["request_data"]["x-custom"], "kept");
        assert_eq!(event["request_data"]["card"], "[redacted:pattern:0]");
        // A key spelled with a JSON escape is still found.
        let escaped = start(r#"{"pass\u0077ord":"x"}"#);
        let event = redact(&RedactionConfig::default(), &escaped).unwrap();
        assert_eq!(event["request_data"]["password"], "[redacted:key:password]");
        // Nothing to redact: the body is not touched, and not even parsed.
        assert_eq!(
            redact(&RedactionConfig::default(), &start(r#"{"file":"a.pdf"}"#)),
            None
        );
        let off = RedactionConfig {
            enabled: false,
            ..RedactionConfig::default()
        };
        assert_eq!(redact(&off, &start(r#"{"password":"x"}"#)), None);
    }

    /// The bytes storage-format.md describes: the client's, but for each redacted value and the
    /// added `redaction` field before the closing brace. Numbers, white space, member order and
    /// escapes around the secret stay exactly as sent.
    #[test]
    fn a_redacted_body_keeps_every_other_byte_the_client_sent() {
        let redactor = Redactor::new(&RedactionConfig::default()).unwrap();
        let body = r#"{ "action": "interaction_start", "request_data": { "z": 12345678901234567890123, "Password": "x", "a": [ 1e2, -0, 1.50 ], "s": "caf\u00e9 \/ \"q\"", "m": {"b":1,"a":2} }, "interaction_id": "i", "mcp_id": "m", "timestamp": 1 }  "#;
        let redacted = redactor
            .redacted_body(&validate(body).unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(
            redacted,
            format!(
                r#"{{ "action": "interaction_start", "request_data": {{ "z": 12345678901234567890123, "Password": "[redacted:key:password]", "a": [ 1e2, -0, 1.50 ], "s": "caf\u00e9 \/ \"q\"", "m": {{"b":1,"a":2}} }}, "interaction_id": "i", "mcp_id": "m", "timestamp": 1 ,"redaction":{{"rules":["key:password"],"rule_set":"{}"}}}}  "#,
                redactor.version()
            )
        );
        // A pattern inside an escaped string changes only the matching bytes.
        let body = start(r#"{"cmd":"say \"hi\"\n then Bearer abcdefghijkl \u00e9nd"}"#);
        let redacted = redactor
            .redacted_body(&validate(&body).unwrap())
            .unwrap()
            .unwrap();
        assert!(
            redacted
                .contains(r#""cmd":"say \"hi\"\n then [redacted:pattern:bearer_token] \u00e9nd""#),
            "{redacted}"
        );
    }

    /// JSON as a strict consumer reads it: serde_json's grammar, numbers and surrogates, and no
    /// object naming a member twice.
    struct Strict;

    impl<'de> serde::Deserialize<'de> for Strict {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Strict, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = Strict;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("JSON")
                }
                fn visit_bool<E>(self, _: bool) -> Result<Strict, E> {
                    Ok(Strict)
                }
                fn visit_i64<E>(self, _: i64) -> Result<Strict, E> {
                    Ok(Strict)
                }
                fn visit_u64<E>(self, _: u64) -> Result<Strict, E> {
                    Ok(Strict)
                }
                fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Strict, E> {
                    if v.is_finite() {
                        Ok(Strict)
                    } else {
                        Err(E::custom("not finite"))
                    }
                }
                fn visit_str<E>(self, _: &str) -> Result<Strict, E> {
                    Ok(Strict)
                }
                fn visit_unit<E>(self) -> Result<Strict, E> {
                    Ok(Strict)
                }
                fn visit_seq<A: serde::de::SeqAccess<'de>>(
                    self,
                    mut a: A,
                ) -> Result<Strict, A::Error> {
                    while a.next_element::<Strict>()?.is_some() {}
                    Ok(Strict)
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut a: A,
                ) -> Result<Strict, A::Error> {
                    let mut seen = std::collections::HashSet::new();
                    while let Some(key) = a.next_key::<String>()? {
                        if !seen.insert(key) {
                            return Err(serde::de::Error::custom("a member named twice"));
                        }
                        a.next_value::<Strict>()?;
                    }
                    Ok(Strict)
                }
            }
            d.deserialize_any(V)
        }
    }

    /// Generated payloads: every one that validation accepts, stored as sent or as redacted,
    /// parses in a strict reader, and so does the replay line that carries it.
    #[test]
    fn every_accepted_payload_parses_strictly() {
        let redactor = Redactor::new(&RedactionConfig::default()).unwrap();
        let fragments = [
            "{",
            "}",
            "[",
            "]",
            ",",
            ":",
            "\"a\"",
            "\"b\"",
            "\"password\"",
            "\"apiKey\"",
            "1",
            "-0",
            "1e2",
            "1e400",
            "-1e309",
            "1e308",
            "12345678901234567890123",
            "0.5",
            "true",
            "null",
            "\"\\ud800\"",
            "\"\\udc00\"",
            "\"\\ud83d\\ude00\"",
            "\"\\u0000\"",
            "\"\\ufdd0\"",
            "\"\u{FFFE}\"",
            "\"\u{1F600}\"",
            "\"\\\"\"",
            "\"x\\\\\"",
            "\"{\\\"token\\\":1e400}\"",
            "\"{\\\"token\\\":\\\"t\\\"}\"",
            "\"Bearer abcdefghijk\"",
            " ",
            "\"\\u00e9\"",
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let (mut accepted, mut redacted) = (0, 0);
        for _ in 0..60_000 {
            let mut payload = String::from("{\"k\":");
            for _ in 0..(next() % 12 + 1) {
                payload.push_str(fragments[(next() % fragments.len() as u64) as usize]);
            }
            payload.push('}');
            let body = start(&payload);
            let Ok(valid) = validate(&body) else { continue };
            accepted += 1;
            let stored = match redactor.redacted_body(&valid) {
                Ok(Some(text)) => {
                    redacted += 1;
                    text
                }
                Ok(None) => body.clone(),
                Err(_) => continue,
            };
            let line = format!(r#"{{"seq":1,"event":{stored}}}"#);
            for text in [&stored, &line] {
                serde_json::from_str::<Strict>(text)
                    .unwrap_or_else(|err| panic!("{text} does not parse strictly: {err}"));
            }
        }
        assert!(
            accepted > 1000 && redacted > 100,
            "{accepted} accepted, {redacted} redacted"
        );
    }

    /// A secret shaped like a pattern where it cannot be redacted is refused: a member name, or
    /// an id.
    #[test]
    fn pattern_shaped_secrets_in_names_and_ids_are_refused() {
        let redactor = Redactor::new(&RedactionConfig::default()).unwrap();
        let key = "sk-abcdefghijklmnopqrstuvwx";
        let err = redactor
            .redacted_body(&validate(&start(&format!(r#"{{"{key}":1}}"#))).unwrap())
            .unwrap_err();
        assert_eq!(
            (err.code.as_str(), err.field.as_deref()),
            ("secret_in_key", Some("request_data"))
        );
        assert!(!err.message.contains(key), "the refusal repeats the secret");
        for field in ["interaction_id", "mcp_id", "event_id"] {
            let mut event: Value = serde_json::from_str(&start("{}")).unwrap();
            event[field] = Value::String(key.to_owned());
            let body = event.to_string();
            let err = redactor
                .redacted_body(&validate(&body).unwrap())
                .unwrap_err();
            assert_eq!(
                (err.code.as_str(), err.field.as_deref()),
                ("secret_in_id", Some(field))
            );
            assert!(!err.message.contains(key));
        }
        // With redaction off nothing is refused.
        let off = Redactor::new(&RedactionConfig {
            enabled: false,
            ..RedactionConfig::default()
        })
        .unwrap();
        assert_eq!(
            off.redacted_body(&validate(&start(&format!(r#"{{"{key}":1}}"#))).unwrap()),
            Ok(None)
        );
    }
}
