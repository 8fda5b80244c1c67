//! Redaction before anything is stored: values under sensitive key names (or JSON paths), and
//! parts of strings that match sensitive patterns, in an event's payload are replaced by a
//! marker naming the rule that fired, and the event gains a `redaction` field listing the rules
//! and the rule set's version. The log then holds exactly the redacted bytes; changing the rules
//! changes what later events become, never what is stored. Nothing here knows HTTP.
//!
//! Most events carry nothing to redact, so a prefilter over the raw body decides first: no key
//! name anywhere (case-insensitive), no pattern match, and no JSON escape (which could spell a
//! key or a secret in other bytes) means the body is stored as it came, unparsed.

use std::collections::BTreeSet;

use regex::{Regex, RegexBuilder};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::event::{payload_of, NewEvent, ValidEvent};

/// Key names redacted by default, compared case-insensitively.
pub const DEFAULT_KEYS: [&str; 12] = [
    "password",
    "passwd",
    "secret",
    "client_secret",
    "token",
    "access_token",
    "refresh_token",
    "api_key",
    "apikey",
    "authorization",
    "cookie",
    "private_key",
];

/// Value patterns redacted by default: (rule name, regular expression).
pub const DEFAULT_PATTERNS: [(&str, &str); 6] = [
    ("bearer_token", r"(?i-u)\bbearer\s+[a-z0-9._~+/=-]{8,}"),
    ("openai_key", r"(?-u)\bsk-[A-Za-z0-9_-]{20,}"),
    ("github_token", r"(?-u)\bgh[pousr]_[A-Za-z0-9]{30,}"),
    ("aws_access_key", r"(?-u)\bAKIA[0-9A-Z]{16}\b"),
    ("slack_token", r"(?-u)\bxox[abprs]-[A-Za-z0-9-]{10,}"),
    (
        "mcplog_key",
        r"(?-u)\bmcplog1\.[a-z]+\.[0-9]+\.[0-9a-f]*\.[0-9a-f]{16}\.[0-9a-f]{32}\b",
    ),
];

/// For each default pattern, literals one of which every match contains (compared without
/// regard to ASCII case): what the literal prefilter looks for in place of the pattern.
const DEFAULT_PATTERN_LITERALS: [&[&str]; 6] = [
    &["bearer"],
    &["sk-"],
    &["ghp_", "gho_", "ghu_", "ghs_", "ghr_"],
    &["akia"],
    &["xoxa-", "xoxb-", "xoxp-", "xoxr-", "xoxs-"],
    &["mcplog1."],
];

/// The e-mail pattern, on with `emails = true`.
pub const EMAIL_PATTERN: (&str, &str) = (
    "email",
    r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b",
);

/// `[redaction]` as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedactionConfig {
    /// `enabled`: redaction on (default true).
    pub enabled: bool,
    /// `keys`: key names, or dotted JSON paths from the event's root such as
    /// `request_data.headers.x-api-key`; case-insensitive. Default [`DEFAULT_KEYS`].
    pub keys: Vec<String>,
    /// `patterns`: regular expressions over string values; `None` means [`DEFAULT_PATTERNS`].
    pub patterns: Option<Vec<String>>,
    /// `emails`: also redact e-mail addresses (default false).
    pub emails: bool,
}

impl Default for RedactionConfig {
    fn default() -> RedactionConfig {
        RedactionConfig {
            enabled: true,
            keys: DEFAULT_KEYS.iter().map(|k| (*k).to_owned()).collect(),
            patterns: None,
            emails: false,
        }
    }
}

/// The compiled rules.
#[derive(Debug)]
pub struct Redactor {
    enabled: bool,
    /// Lowercased key names (no dot).
    names: Vec<String>,
    /// Lowercased dotted paths.
    paths: Vec<String>,
    /// Matches a raw body in which a rule could fire: any key name or path segment
    /// (case-insensitively), any pattern, or a JSON escape. One pass over the bytes.
    prefilter: Regex,
    /// With the default patterns, a faster first pass over ASCII bodies: the key names, path
    /// segments, a backslash, and a literal every default pattern's match contains. A body it
    /// does not match cannot match `prefilter` either.
    literals: Option<aho_corasick::AhoCorasick>,
    patterns: Vec<(String, Regex)>,
    version: String,
}

impl Redactor {
    /// Compiles the rules, or names the pattern that does not compile.
    pub fn new(config: &RedactionConfig) -> Result<Redactor, String> {
        let mut names = Vec::new();
        let mut paths = Vec::new();
        for key in &config.keys {
            let key = key.trim().to_lowercase();
            if key.is_empty() {
                return Err("redaction.keys holds an empty name".into());
            }
            if key.contains('.') {
                paths.push(key);
            } else {
                names.push(key);
            }
        }
        let mut patterns: Vec<(String, String)> = match &config.patterns {
            None => DEFAULT_PATTERNS
                .iter()
                .map(|(name, re)| ((*name).to_owned(), (*re).to_owned()))
                .collect(),
            Some(list) => list
                .iter()
                .enumerate()
                .map(|(i, re)| (format!("{i}"), re.clone()))
                .collect(),
        };
        if config.emails {
            patterns.push((EMAIL_PATTERN.0.to_owned(), EMAIL_PATTERN.1.to_owned()));
        }
        let compiled = patterns
            .iter()
            .map(|(name, re)| {
                let regex = RegexBuilder::new(re)
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|err| {
                        format!("redaction pattern {name} ({re:?}) does not compile: {err}")
                    })?;
                Ok((format!("pattern:{name}"), regex))
            })
            .collect::<Result<Vec<_>, String>>()?;
        // Every name, and every segment of every path, spelled in the raw body is a reason to
        // look closer; so is every pattern, and a backslash (an escape could spell either).
        let mut needles: BTreeSet<String> = names.iter().cloned().collect();
        needles.extend(paths.iter().flat_map(|p| p.split('.').map(str::to_owned)));
        let mut alternatives: Vec<String> = vec![r"\\".to_owned()];
        alternatives.extend(needles.iter().map(|n| format!("(?i:{})", regex::escape(n))));
        alternatives.extend(patterns.iter().map(|(_, re)| format!("(?:{re})")));
        let prefilter = RegexBuilder::new(&alternatives.join("|"))
            .size_limit(1 << 22)
            .build()
            .map_err(|err| format!("redaction rules do not compile together: {err}"))?;
        // Only the default patterns have known literals; configured ones keep the regex alone.
        let literals = match &config.patterns {
            Some(_) => None,
            None => {
                let mut words: Vec<String> = needles.iter().cloned().collect();
                words.push("\\".to_owned());
                words.extend(
                    DEFAULT_PATTERN_LITERALS
                        .iter()
                        .flat_map(|list| list.iter().map(|w| (*w).to_owned())),
                );
                if config.emails {
                    words.push("@".to_owned());
                }
                Some(
                    aho_corasick::AhoCorasick::builder()
                        .ascii_case_insensitive(true)
                        .build(&words)
                        .map_err(|err| format!("redaction keys do not compile: {err}"))?,
                )
            }
        };
        let version = {
            let mut hasher = Sha256::new();
            let described = format!(
                "v1\nenabled={}\nnames={names:?}\npaths={paths:?}\npatterns={patterns:?}",
                config.enabled
            );
            hasher.update(described.as_bytes());
            crate::auth::hex(&hasher.finalize()[..8])
        };
        Ok(Redactor {
            enabled: config.enabled,
            names,
            paths,
            prefilter,
            literals,
            patterns: compiled,
            version,
        })
    }

    /// The rule set's version: a fingerprint of the rules, recorded in every redacted event.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The event to store: the client's, or its redacted form when a rule fired.
    pub fn new_event(&self, valid: &ValidEvent<'_>) -> NewEvent {
        match self.redacted_body(valid) {
            None => NewEvent::from(valid),
            Some(body) => NewEvent::new(
                valid.action,
                valid.timestamp,
                &valid.interaction_id,
                &valid.mcp_id,
                valid.event_id.as_deref(),
                &body,
            ),
        }
    }

    /// The redacted body, if any rule fired.
    pub fn redacted_body(&self, valid: &ValidEvent<'_>) -> Option<String> {
        if !self.enabled || !self.may_fire(valid.body) {
            return None;
        }
        let body = valid.body;
        let raw = payload_of(body, valid.action).ok()??;
        let mut payload: Value = serde_json::from_str(raw.get()).ok()?;
        let mut fired = BTreeSet::new();
        let mut path = valid.action.payload_field().to_owned();
        self.walk(&mut payload, &mut path, &mut fired);
        if fired.is_empty() {
            return None;
        }
        // The payload is a slice of the body: splice the redacted one in its place, keep every
        // other byte the client sent, and add the record of what fired before the closing brace.
        let start = raw.get().as_ptr() as usize - body.as_ptr() as usize;
        let end = start + raw.get().len();
        let close = body.trim_end().len() - 1;
        // Written out, so its bytes do not depend on how serde_json orders maps.
        let rules = serde_json::to_string(&fired).expect("strings serialize");
        let note = format!(r#"{{"rules":{rules},"rule_set":"{}"}}"#, self.version);
        let mut redacted = String::with_capacity(body.len() + note.len() + 16);
        redacted.push_str(&body[..start]);
        write_sorted(&payload, &mut redacted);
        redacted.push_str(&body[end..close]);
        redacted.push_str(",\"redaction\":");
        redacted.push_str(&note);
        redacted.push_str(&body[close..]);
        Some(redacted)
    }

    /// The prefilter: whether a rule could fire on these raw bytes.
    fn may_fire(&self, body: &str) -> bool {
        match &self.literals {
            // Non-ASCII text can fold onto a key name under Unicode case rules (the Kelvin sign
            // lowercases to `k`), which ASCII-insensitive literals would miss: the regex decides.
            Some(literals) if body.is_ascii() => literals.is_match(body),
            _ => self.prefilter.is_match(body),
        }
    }

    fn walk(&self, value: &mut Value, path: &mut String, fired: &mut BTreeSet<String>) {
        match value {
            Value::Object(map) => {
                for (key, child) in map.iter_mut() {
                    let len = path.len();
                    path.push('.');
                    path.push_str(&key.to_lowercase());
                    match self.key_rule(key, path) {
                        Some(rule) => {
                            *child = Value::String(format!("[redacted:{rule}]"));
                            fired.insert(rule);
                        }
                        None => self.walk(child, path, fired),
                    }
                    path.truncate(len);
                }
            }
            Value::Array(items) => {
                for item in items {
                    self.walk(item, path, fired);
                }
            }
            Value::String(text) => {
                for (rule, regex) in &self.patterns {
                    if regex.is_match(text) {
                        *text = regex
                            .replace_all(text, format!("[redacted:{rule}]").as_str())
                            .into_owned();
                        fired.insert(rule.clone());
                    }
                }
            }
            _ => {}
        }
    }

    /// The rule a key (at the lowercased dotted `path`) falls under, if one does.
    fn key_rule(&self, key: &str, path: &str) -> Option<String> {
        let lower = key.to_lowercase();
        if let Some(name) = self.names.iter().find(|n| **n == lower) {
            return Some(format!("key:{name}"));
        }
        self.paths
            .iter()
            .find(|p| p.as_str() == path)
            .map(|p| format!("path:{p}"))
    }
}

/// Compact JSON with every object's keys in byte order: the same bytes whatever order
/// serde_json's maps keep (a crate feature another dependency may switch on).
fn write_sorted(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, child)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_sorted(child, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_sorted(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::validate;

    fn redact(config: &RedactionConfig, body: &str) -> Option<Value> {
        let redactor = Redactor::new(config).unwrap();
        let valid = validate(body).unwrap();
        redactor
            .redacted_body(&valid)
            .map(|b| serde_json::from_str(&b).expect("the redacted body is JSON"))
    }

    fn start(payload: &str) -> String {
        format!(
            r#"{{"action":"interaction_start","interaction_id":"i","mcp_id":"m","timestamp":1,"request_data":{payload}}}"#
        )
    }

    #[test]
    fn keys_of_any_case_at_any_depth_and_in_arrays_are_redacted() {
        let body = start(
            r#"{"user":"ann","PassWord":"hunter2","headers":{"Authorization":"Bearer abcdefghijkl"},
               "items":[{"api_key":"k1"},{"note":"fine"}],"nested":{"deeper":{"Token":{"a":1}}}}"#,
        );
        let event = redact(&RedactionConfig::default(), &body).unwrap();
        let data = &event["request_data"];
        assert_eq!(data["user"], "ann");
        assert_eq!(data["PassWord"], "[redacted:key:password]");
        assert_eq!(
            data["headers"]["Authorization"],
            "[redacted:key:authorization]"
        );
        assert_eq!(data["items"][0]["api_key"], "[redacted:key:api_key]");
        assert_eq!(data["items"][1]["note"], "fine");
        assert_eq!(data["nested"]["deeper"]["Token"], "[redacted:key:token]");
        let rules: Vec<&str> = event["redaction"]["rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap())
            .collect();
        assert_eq!(
            rules,
            [
                "key:api_key",
                "key:authorization",
                "key:password",
                "key:token"
            ]
        );
        assert_eq!(event["redaction"]["rule_set"].as_str().unwrap().len(), 16);
        // Every other field as the client sent it.
        assert_eq!(
            (&event["action"], &event["interaction_id"]),
            (&"interaction_start".into(), &"i".into())
        );
    }

    #[test]
    fn patterns_replace_only_the_matching_part_of_a_string() {
        let body = start(
            r#"{"cmd":"curl -H 'Authorization: Bearer abc.def-123456' x","key":"use sk-abcdefghijklmnopqrstuvwx now","mail":"ann@example.com"}"#,
        );
        let event = redact(&RedactionConfig::default(), &body).unwrap();
        let data = &event["request_data"];
        assert_eq!(
            data["cmd"],
            "curl -H 'Authorization: [redacted:pattern:bearer_token]' x"
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

    #[test]
    fn paths_escapes_and_the_prefilter() {
        let config = RedactionConfig {
            keys: vec!["request_data.headers.X-Custom".into()],
            patterns: Some(vec![r"\d{4}-\d{4}-\d{4}-\d{4}".into()]),
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

    /// The bytes storage-format.md describes: the client's, but for the payload (compact, keys
    /// in byte order) and the added `redaction` field before the closing brace.
    #[test]
    fn a_redacted_body_keeps_every_other_byte_the_client_sent() {
        let redactor = Redactor::new(&RedactionConfig::default()).unwrap();
        let body = r#"{ "action": "interaction_start", "request_data": { "z": 1, "Password": "x", "a": [ 2 ] }, "interaction_id": "i", "mcp_id": "m", "timestamp": 1 }  "#;
        let redacted = redactor.redacted_body(&validate(body).unwrap()).unwrap();
        assert_eq!(
            redacted,
            format!(
                r#"{{ "action": "interaction_start", "request_data": {{"Password":"[redacted:key:password]","a":[2],"z":1}}, "interaction_id": "i", "mcp_id": "m", "timestamp": 1 ,"redaction":{{"rules":["key:password"],"rule_set":"{}"}}}}  "#,
                redactor.version()
            )
        );
    }

    #[test]
    fn the_rule_set_version_changes_with_the_rules_only() {
        let a = Redactor::new(&RedactionConfig::default()).unwrap();
        let b = Redactor::new(&RedactionConfig::default()).unwrap();
        assert_eq!(a.version(), b.version());
        let c = Redactor::new(&RedactionConfig {
            emails: true,
            ..RedactionConfig::default()
        })
        .unwrap();
        assert_ne!(a.version(), c.version());
        let bad = RedactionConfig {
            patterns: Some(vec!["(".into()]),
            ..RedactionConfig::default()
        };
        assert!(Redactor::new(&bad).unwrap_err().contains("pattern 0"));
    }

    /// The literal first pass never lets through a body the regex prefilter would catch.
    #[test]
    fn the_literal_prefilter_misses_nothing_the_regex_catches() {
        for emails in [false, true] {
            let redactor = Redactor::new(&RedactionConfig {
                emails,
                ..RedactionConfig::default()
            })
            .unwrap();
            assert!(redactor.literals.is_some());
            let fragments = [
                "pass",
                "word",
                "PASSWORD",
                "Token",
                r"to\u006ben",
                "to\u{212A}en",
                "bearer ",
                "Bearer\t",
                "abcdefghij",
                "sk-",
                "SK-",
                "ghp_",
                "GHS_",
                "AKIA",
                "akia",
                "0123456789ABCDEF",
                "xoxb-",
                "mcplog1.writer.1.",
                "a@b.co",
                " ",
                "\"",
                ":",
                "{",
                "}",
                "cookie",
                "private_",
                "key",
                "api",
                "_",
                "-",
                ".",
                "authorization",
                "é",
            ];
            let mut seed = 0x2545_f491_4f6c_dd1du64;
            for _ in 0..20_000 {
                let mut body = String::new();
                for _ in 0..(seed % 7 + 1) {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    body.push_str(fragments[(seed % fragments.len() as u64) as usize]);
                }
                if redactor.prefilter.is_match(&body) {
                    assert!(redactor.may_fire(&body), "missed {body:?}");
                }
            }
            // A key spelled with the Kelvin sign is still looked at closely.
            assert!(redactor.may_fire("{\"to\u{212A}en\":1}"));
        }
    }
}
