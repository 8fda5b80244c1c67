//! The prefilter: most events carry nothing to redact, so one pass over the raw body decides
//! whether a rule could fire before anything is parsed. A key a name matches holds every word of
//! the name (its own words end with them, or join to the same letters), so the longest word
//! spelled in the raw body is a reason to look closer; so is every path segment, every pattern,
//! and a backslash (an escape could spell either).

use std::collections::BTreeSet;

use aho_corasick::AhoCorasick;
use regex::{Regex, RegexBuilder};

use super::names::{self, KeyName};
use super::{RedactionConfig, Redactor};

/// For each default pattern, literals one of which every match contains (compared without
/// regard to ASCII case): what the literal prefilter looks for in place of the pattern.
const DEFAULT_PATTERN_LITERALS: [&[&str]; 7] = [
    &["bearer"],
    &["sk-"],
    &["ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"],
    &["a3t", "akia", "asia", "abia", "acca"],
    &[
        "xoxa-", "xoxb-", "xoxp-", "xoxo-", "xoxs-", "xoxr-", "xoxe-",
    ],
    &["mcplog1."],
    &["mcplog_admin_"],
];

/// The words the prefilter looks for, compared without regard to case: the longest word of
/// each key name and every path segment.
pub(super) fn needles(keys: &[KeyName], paths: &[String]) -> BTreeSet<String> {
    let mut needles: BTreeSet<String> = names::longest_words(keys).cloned().collect();
    needles.extend(paths.iter().flat_map(|p| p.split('.').map(str::to_owned)));
    needles
}

/// The prefilter as one regex: a backslash, any needle, or any pattern (`(name, regex)`).
pub(super) fn regex(
    needles: &BTreeSet<String>,
    patterns: &[(String, String)],
) -> Result<Regex, String> {
    let mut alternatives: Vec<String> = vec![r"\\".to_owned()];
    alternatives.extend(needles.iter().map(|n| format!("(?i:{})", regex::escape(n))));
    alternatives.extend(patterns.iter().map(|(_, re)| format!("(?:{re})")));
    RegexBuilder::new(&alternatives.join("|"))
        .size_limit(1 << 22)
        .build()
        .map_err(|err| format!("redaction rules do not compile together: {err}"))
}

/// The faster first pass over ASCII bodies when no pattern is configured (only the built-in
/// patterns have known literals; configured ones keep the regex alone): the needles, a
/// backslash, the static keys, and a literal every built-in pattern's match contains.
pub(super) fn literals(
    needles: &BTreeSet<String>,
    config: &RedactionConfig,
    secrets: &[&str],
) -> Result<Option<AhoCorasick>, String> {
    if !config.patterns.is_empty() {
        return Ok(None);
    }
    let mut words: Vec<String> = needles.iter().cloned().collect();
    words.push("\\".to_owned());
    words.extend(
        secrets
            .iter()
            .filter(|s| !s.is_empty())
            .map(|s| (*s).to_owned()),
    );
    if config.builtin {
        words.extend(
            DEFAULT_PATTERN_LITERALS
                .iter()
                .flat_map(|list| list.iter().map(|w| (*w).to_owned())),
        );
    }
    if config.emails {
        words.push("@".to_owned());
    }
    AhoCorasick::builder()
        .ascii_case_insensitive(true)
        .build(&words)
        .map(Some)
        .map_err(|err| format!("redaction keys do not compile: {err}"))
}

impl Redactor {
    /// The prefilter: whether a rule could fire on these raw bytes.
    pub(super) fn may_fire(&self, body: &str) -> bool {
        // Non-ASCII text can spell a key name in letters that only fold onto it (`ｐａｓｓ`,
        // `ſ`, a zero-width space inside): no prefilter over the raw bytes can see that, so
        // such a body is always read.
        if !body.is_ascii() {
            return true;
        }
        match &self.literals {
            Some(literals) => literals.is_match(body),
            None => self.prefilter.is_match(body),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::redact::tests::joined_at_random;
    use crate::redact::{RedactionConfig, Redactor};

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
            for body in joined_at_random(&fragments, 7, 20_000, 0x2545_f491_4f6c_dd1d) {
                if redactor.prefilter.is_match(&body) {
                    assert!(redactor.may_fire(&body), "missed {body:?}");
                }
            }
            // A key spelled with the Kelvin sign is still looked at closely.
            assert!(redactor.may_fire("{\"to\u{212A}en\":1}"));
        }
    }
}
