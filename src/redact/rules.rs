//! The rule set: the built-in key names and patterns, the configured ones added, the server's
//! static keys as a pattern, compiled into a [`Redactor`] and fingerprinted into the rule set's
//! version.

use regex::{Regex, RegexBuilder};
use sha2::{Digest, Sha256};

use super::embedded::EMBEDDED_JSON_LEVELS_MAX;
use super::names::{self, KeyName};
use super::{prefilter, text, RedactionConfig, Redactor};

/// Key names redacted by default. A name matches a key that spells the same words, whatever
/// their case and separators (`apiKey`, `API-KEY` and `api_key` are one name), or that ends in
/// them (`db_password`, `x-api-key`, `set-cookie`, `accessToken`).
pub const DEFAULT_KEYS: [&str; 22] = [
    "password",
    "passwords",
    "passwd",
    "pwd",
    "passphrase",
    "secret",
    "secrets",
    "client_secret",
    "secret_key",
    "token",
    "access_token",
    "refresh_token",
    "api_key",
    "apikey",
    "access_key",
    "authorization",
    "auth",
    "cookie",
    "private_key",
    "credential",
    "credentials",
    "session_secret",
];

/// Value patterns redacted by default: (rule name, regular expression).
/// Written without a leading `\b` where a secret is often glued to a name (`my_sk-…`,
/// `keyAKIA…`), and without a trailing one, so that a suffix does not hide a key.
pub const DEFAULT_PATTERNS: [(&str, &str); 7] = [
    ("bearer_token", r"(?i)bearer[\s:=]+[^\s\x22',;]{8,}"),
    ("openai_key", r"(?-u)(?:\b|[_0-9])sk-[A-Za-z0-9_-]{20,}"),
    (
        "github_token",
        r"(?-u)gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{22,}",
    ),
    (
        "aws_access_key",
        r"(?-u)(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}",
    ),
    ("slack_token", r"(?-u)xox[abposre]-[A-Za-z0-9-]{10,}"),
    (
        "mcplog_key",
        r"(?-u)mcplog1\.[a-z]+\.[0-9]+\.[0-9a-f]*\.[0-9a-f]{16}\.[0-9a-f]{32}",
    ),
    ("mcplog_admin_key", r"(?-u)mcplog_admin_[A-Za-z0-9_-]{16,}"),
];

/// The e-mail pattern, on with `emails = true`.
pub const EMAIL_PATTERN: (&str, &str) = (
    "email",
    r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b",
);

/// The rule under which the server's static keys are redacted (`pattern:static_key`); it never
/// says which key.
const STATIC_KEY_RULE: &str = "static_key";

impl Redactor {
    /// Compiles the rules, or names the pattern that does not compile.
    pub fn new(config: &RedactionConfig) -> Result<Redactor, String> {
        Redactor::with_secrets(config, &[])
    }

    /// Compiles the rules, adding `secrets` (the server's static keys) as text that is always
    /// redacted, under the rule `pattern:static_key` (the rule never names which key).
    pub fn with_secrets(config: &RedactionConfig, secrets: &[&str]) -> Result<Redactor, String> {
        let (keys, paths) = names::configured(config)?;
        refuse_broad_patterns(&config.patterns)?;
        let sources = pattern_sources(config, secrets);
        let patterns = compile(&sources)?;
        let needles = prefilter::needles(&keys, &paths);
        let prefilter = prefilter::regex(&needles, &sources)?;
        let literals = prefilter::literals(&needles, config, secrets)?;
        let version = version(config, &keys, &paths, &sources, secrets);
        let names = names::matcher(&keys)?;
        Ok(Redactor {
            enabled: config.enabled,
            keys,
            names,
            assignment: text::assignment(),
            paths,
            prefilter,
            literals,
            patterns,
            version,
        })
    }
}

/// A pattern that matches an empty or one-character text would redact, or refuse, almost
/// everything (every id): a mistake, refused when the configuration is read.
fn refuse_broad_patterns(configured: &[String]) -> Result<(), String> {
    for (i, re) in configured.iter().enumerate() {
        if let Ok(regex) = Regex::new(re) {
            if ["", "a", "Z", "0", " ", "-"]
                .iter()
                .any(|t| regex.is_match(t))
            {
                return Err(format!(
                    "redaction pattern {i} ({re:?}) matches text of one character or none, so it would redact or refuse nearly every event"
                ));
            }
        }
    }
    Ok(())
}

/// Every pattern as (name, regex), in the order they are tried: the built-in ones unless
/// `builtin = false`, the configured ones named by their index, e-mail if on, and the static
/// keys as one alternation of literals.
fn pattern_sources(config: &RedactionConfig, secrets: &[&str]) -> Vec<(String, String)> {
    let mut patterns: Vec<(String, String)> = Vec::new();
    if config.builtin {
        patterns.extend(
            DEFAULT_PATTERNS
                .iter()
                .map(|(name, re)| ((*name).to_owned(), (*re).to_owned())),
        );
    }
    patterns.extend(
        config
            .patterns
            .iter()
            .enumerate()
            .map(|(i, re)| (format!("{i}"), re.clone())),
    );
    if config.emails {
        patterns.push((EMAIL_PATTERN.0.to_owned(), EMAIL_PATTERN.1.to_owned()));
    }
    let mut secret_literals: Vec<String> = secrets
        .iter()
        .filter(|s| !s.is_empty())
        .map(|s| regex::escape(s))
        .collect();
    secret_literals.sort();
    if !secret_literals.is_empty() {
        patterns.push((STATIC_KEY_RULE.to_owned(), secret_literals.join("|")));
    }
    patterns
}

/// The patterns compiled, each under its rule's name `pattern:<name>`.
fn compile(sources: &[(String, String)]) -> Result<Vec<(String, Regex)>, String> {
    sources
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
        .collect()
}

/// The rule set's version: a fingerprint of everything that decides what is redacted. The
/// static keys change the rule set, but only their digests and count enter its description: a
/// fingerprint printed in every redacted event names no key.
fn version(
    config: &RedactionConfig,
    keys: &[KeyName],
    paths: &[String],
    sources: &[(String, String)],
    secrets: &[&str],
) -> String {
    let name_words: Vec<(&String, &Vec<String>)> =
        keys.iter().map(|n| (&n.rule, &n.words)).collect();
    let described_patterns: Vec<&(String, String)> = sources
        .iter()
        .filter(|(name, _)| name != STATIC_KEY_RULE)
        .collect();
    let secret_count = secrets.len();
    let mut secret_digests: Vec<String> = secrets
        .iter()
        .map(|s| crate::auth::hex(&Sha256::digest(s.as_bytes())))
        .collect();
    secret_digests.sort();
    let described = format!(
        "v3\nenabled={}\nnames={name_words:?}\npaths={paths:?}\npatterns={described_patterns:?}\nembedded={EMBEDDED_JSON_LEVELS_MAX}\nsecrets={secret_count}:{secret_digests:?}",
        config.enabled
    );
    let mut hasher = Sha256::new();
    hasher.update(described.as_bytes());
    crate::auth::hex(&hasher.finalize()[..8])
}

#[cfg(test)]
mod tests {
    use crate::redact::tests::{redact, start};
    use crate::redact::{RedactionConfig, Redactor};

    /// Configured keys and patterns add to the built-ins; `builtin = false` drops them.
    #[test]
    fn configured_rules_add_to_the_built_ins_unless_builtin_is_off() {
        let body = start(
            r#"{"ssn":"123-45-6789","password":"p","note":"Bearer abcdefghijkl","pin":"9999"}"#,
        );
        let added = RedactionConfig {
            keys: vec!["ssn".into()],
            patterns: vec![r"\b\d{4}\b".into()],
            ..RedactionConfig::default()
        };
        let event = redact(&added, &body).unwrap();
        let data = &event["request_data"];
        assert_eq!(data["ssn"], "[redacted:key:ssn]");
        assert_eq!(data["password"], "[redacted:key:password]");
        assert_eq!(data["note"], "[redacted:pattern:bearer_token]");
        assert_eq!(data["pin"], "[redacted:pattern:0]");
        let alone = RedactionConfig {
            builtin: false,
            ..added
        };
        let event = redact(&alone, &body).unwrap();
        let data = &event["request_data"];
        assert_eq!(data["ssn"], "[redacted:key:ssn]");
        assert_eq!(data["password"], "p");
        assert_eq!(data["note"], "Bearer abcdefghijkl");
        assert_eq!(data["pin"], "[redacted:pattern:0]");
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
            patterns: vec!["(".into()],
            ..RedactionConfig::default()
        };
        assert!(Redactor::new(&bad).unwrap_err().contains("pattern 0"));
    }
}
