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
use std::ops::Range;

use regex::{Regex, RegexBuilder};
use sha2::{Digest, Sha256};

use crate::event::json::{self, JsonStr, ScanError, Visitor};
use crate::event::{payload_of, Invalid, NewEvent, ValidEvent, PAYLOAD_DEPTH_MAX};

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

/// The e-mail pattern, on with `emails = true`.
pub const EMAIL_PATTERN: (&str, &str) = (
    "email",
    r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b",
);

/// Most levels of JSON held in a string that holds JSON (tool arguments often are) that
/// redaction reads into; a document nested deeper in strings is refused rather than stored
/// unread.
pub const EMBEDDED_JSON_LEVELS_MAX: usize = 4;

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

/// A key name as matched: its words, lowercased.
#[derive(Debug)]
struct KeyName {
    /// The rule's name, `key:<name>` with the name lowercased as configured.
    rule: String,
    words: Vec<String>,
    /// The words run together.
    joined: String,
}

/// A key name folded for comparison: compatibility forms to their plain letters (fullwidth
/// `ｐａｓｓ`, `ſ`, mathematical letters), accents and other combining marks, invisible and
/// format characters (zero-width spaces, soft hyphens) dropped, and the dotless and dotted i as
/// `i`. Case is kept, for the camelCase split.
pub fn fold(name: &str) -> String {
    use unicode_normalization::char::is_combining_mark;
    use unicode_normalization::UnicodeNormalization;
    if name.is_ascii() {
        return name.to_owned();
    }
    name.nfkd()
        .filter(|&c| !is_combining_mark(c) && !crate::event::is_invisible(c))
        .map(|c| match c {
            '\u{131}' => 'i',
            '\u{130}' => 'I',
            c => c,
        })
        .collect()
}

/// The words of a key name, folded: split at every character that is neither a letter nor a
/// digit, and at camelCase steps (`xApiKey`, `APIKey`, `api_key` all give `api`, `key`),
/// lowercased; numbers at the end (`password1`, `apiKey2`) dropped.
pub fn words_of(name: &str) -> Vec<String> {
    let chars: Vec<char> = fold(name).chars().collect();
    let mut words = Vec::new();
    let mut word = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if !c.is_alphanumeric() {
            if !word.is_empty() {
                words.push(std::mem::take(&mut word));
            }
            continue;
        }
        if !word.is_empty() {
            let prev = chars[i - 1];
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            // `aB` starts a word at B; so does `ABc` at B (the end of an acronym), and a digit
            // after a letter.
            let step = (c.is_uppercase()
                && (prev.is_lowercase()
                    || prev.is_numeric()
                    || (prev.is_uppercase() && next_lower)))
                || (c.is_numeric() && !prev.is_numeric());
            if step {
                words.push(std::mem::take(&mut word));
            }
        }
        word.extend(c.to_lowercase());
    }
    if !word.is_empty() {
        words.push(word);
    }
    while words.len() > 1
        && words
            .last()
            .is_some_and(|w| w.chars().all(char::is_numeric))
    {
        words.pop();
    }
    words
}

/// The compiled rules.
#[derive(Debug)]
pub struct Redactor {
    enabled: bool,
    /// Key names (no dot).
    keys: Vec<KeyName>,
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
    /// Compiles the rules, or names the pattern that does not compile.
    pub fn new(config: &RedactionConfig) -> Result<Redactor, String> {
        Redactor::with_secrets(config, &[])
    }

    /// Compiles the rules, adding `secrets` (the server's static keys) as text that is always
    /// redacted, under the rule `pattern:static_key` (the rule never names which key).
    pub fn with_secrets(config: &RedactionConfig, secrets: &[&str]) -> Result<Redactor, String> {
        let mut names: Vec<KeyName> = Vec::new();
        let mut paths = Vec::new();
        let builtin_keys = DEFAULT_KEYS.iter().filter(|_| config.builtin).copied();
        for key in builtin_keys.chain(config.keys.iter().map(String::as_str)) {
            let key = key.trim().to_lowercase();
            if key.is_empty() {
                return Err("redaction.keys holds an empty name".into());
            }
            if key.contains('.') {
                paths.push(key);
                continue;
            }
            let words = words_of(&key);
            if words.is_empty() {
                return Err(format!(
                    "redaction.keys holds {key:?}, which has no letters or digits"
                ));
            }
            if !names.iter().any(|n| n.words == words) {
                names.push(KeyName {
                    rule: format!("key:{key}"),
                    joined: words.concat(),
                    words,
                });
            }
        }
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
        // A pattern that matches an empty or one-character text would redact, or refuse, almost
        // everything (every id): a mistake, refused when the configuration is read.
        for (i, re) in config.patterns.iter().enumerate() {
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
        let secret_count = secrets.len();
        let mut secret_literals: Vec<String> = secrets
            .iter()
            .filter(|s| !s.is_empty())
            .map(|s| regex::escape(s))
            .collect();
        secret_literals.sort();
        if !secret_literals.is_empty() {
            patterns.push(("static_key".to_owned(), secret_literals.join("|")));
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
        // A key a name matches holds every word of the name (its own words end with them, or
        // join to the same letters), so the longest word spelled in the raw body is a reason to
        // look closer; so is every path segment, every pattern, and a backslash (an escape
        // could spell either).
        let mut needles: BTreeSet<String> = names
            .iter()
            .filter_map(|n| n.words.iter().max_by_key(|w| w.len()).cloned())
            .collect();
        needles.extend(paths.iter().flat_map(|p| p.split('.').map(str::to_owned)));
        let mut alternatives: Vec<String> = vec![r"\\".to_owned()];
        alternatives.extend(needles.iter().map(|n| format!("(?i:{})", regex::escape(n))));
        alternatives.extend(patterns.iter().map(|(_, re)| format!("(?:{re})")));
        let prefilter = RegexBuilder::new(&alternatives.join("|"))
            .size_limit(1 << 22)
            .build()
            .map_err(|err| format!("redaction rules do not compile together: {err}"))?;
        // Only the built-in patterns have known literals; configured ones keep the regex alone.
        let literals = if config.patterns.is_empty() {
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
            Some(
                aho_corasick::AhoCorasick::builder()
                    .ascii_case_insensitive(true)
                    .build(&words)
                    .map_err(|err| format!("redaction keys do not compile: {err}"))?,
            )
        } else {
            None
        };
        let version = {
            let mut hasher = Sha256::new();
            let name_words: Vec<(&String, &Vec<String>)> =
                names.iter().map(|n| (&n.rule, &n.words)).collect();
            // The static keys change the rule set, but only their digests and count enter
            // its description: a fingerprint printed in every redacted event names no key.
            let described_patterns: Vec<&(String, String)> = patterns
                .iter()
                .filter(|(name, _)| name != "static_key")
                .collect();
            let mut secret_digests: Vec<String> = secrets
                .iter()
                .map(|s| crate::auth::hex(&Sha256::digest(s.as_bytes())))
                .collect();
            secret_digests.sort();
            let described = format!(
                "v3\nenabled={}\nnames={name_words:?}\npaths={paths:?}\npatterns={described_patterns:?}\nembedded={EMBEDDED_JSON_LEVELS_MAX}\nsecrets={secret_count}:{secret_digests:?}",
                config.enabled
            );
            hasher.update(described.as_bytes());
            crate::auth::hex(&hasher.finalize()[..8])
        };
        let name_words = aho_corasick::AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .build(
                names
                    .iter()
                    .filter_map(|n| n.words.iter().max_by_key(|w| w.len())),
            )
            .map_err(|err| format!("redaction keys do not compile: {err}"))?;
        let assignment = Regex::new(
            r#"(?P<name>[\pL\pN_.$\[\]-]{1,64})["']?\s*[:=]\s*(?P<value>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[^\s&,;"'}\])]+)"#,
        )
        .expect("the assignment pattern compiles");
        Ok(Redactor {
            enabled: config.enabled,
            keys: names,
            names: name_words,
            assignment,
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
        let ids = [
            ("interaction_id", Some(&valid.interaction_id)),
            ("mcp_id", Some(&valid.mcp_id)),
            ("event_id", valid.event_id.as_ref()),
        ];
        for (field, value) in ids {
            if let Some(rule) = value.and_then(|v| self.pattern_in(v)) {
                return Err(Invalid {
                    field: Some(field.to_owned()),
                    code: "secret_in_id",
                    message: format!(
                        "{field} matches the redaction rule {rule}; an id is never redacted, so the event is refused rather than stored with it"
                    ),
                });
            }
        }
        let body = valid.body;
        let field = valid.action.payload_field();
        let unreadable = || Invalid {
            field: Some(field.to_owned()),
            code: "unreadable_payload",
            message: format!("{field} could not be read for redaction"),
        };
        let Some(raw) = payload_of(body, valid.action).map_err(|_| unreadable())? else {
            return Ok(None);
        };
        let mut fired = BTreeSet::new();
        let edits = self.redact_text(raw.get(), field, field, 0, &mut fired)?;
        if edits.is_empty() {
            return Ok(None);
        }
        // The payload is a slice of the body: splice the edited one in its place, keep every
        // other byte the client sent, and add the record of what fired before the closing brace.
        let start = raw.get().as_ptr() as usize - body.as_ptr() as usize;
        let end = start + raw.get().len();
        let close = body.trim_end().len() - 1;
        // Written out, so its bytes do not depend on how serde_json orders maps.
        let rules = serde_json::to_string(&fired).expect("strings serialize");
        let note = format!(r#"{{"rules":{rules},"rule_set":"{}"}}"#, self.version);
        let mut redacted = String::with_capacity(body.len() + note.len() + 16);
        redacted.push_str(&body[..start]);
        redacted.push_str(&apply(raw.get(), &edits));
        redacted.push_str(&body[end..close]);
        redacted.push_str(",\"redaction\":");
        redacted.push_str(&note);
        redacted.push_str(&body[close..]);
        Ok(Some(redacted))
    }

    /// The edits that redact one JSON text (a payload, or JSON held in one of its strings at
    /// `level` strings deep), the rules that fired added to `fired`.
    fn redact_text(
        &self,
        text: &str,
        field: &str,
        path: &str,
        level: usize,
        fired: &mut BTreeSet<String>,
    ) -> Result<Vec<Edit>, Invalid> {
        let mut visitor = Redacting {
            redactor: self,
            text,
            field,
            path: path.to_lowercase(),
            lens: Vec::new(),
            level,
            rule: None,
            members: Vec::new(),
            pairs: Vec::new(),
            edits: Vec::new(),
            fired,
        };
        match json::scan(text, PAYLOAD_DEPTH_MAX, &mut visitor) {
            Ok(()) => {
                // A pair's value found before its name is edited late: back in order.
                visitor.edits.sort_by_key(|edit| edit.range.start);
                Ok(visitor.edits)
            }
            Err(ScanError::Stopped(invalid)) => Err(invalid),
            // Validation read the payload with the same reader, so this is JSON held in a
            // string; either way nothing unread is stored.
            Err(ScanError::Json(err)) => Err(Invalid {
                field: Some(field.to_owned()),
                code: err.code(),
                message: format!("{field} holds JSON text that {err}"),
            }),
        }
    }

    /// The prefilter: whether a rule could fire on these raw bytes.
    fn may_fire(&self, body: &str) -> bool {
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

    /// Whether `text` could name a key that a rule covers: a word of a key name in it, or any
    /// letter beyond ASCII (which may fold onto one).
    fn names_appear(&self, text: &str) -> bool {
        !text.is_ascii() || self.names.is_match(text)
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

    /// The rule a key (at the lowercased dotted `path`) falls under, if one does: the name with
    /// the most words that it matches, else a path.
    fn key_rule(&self, key: &str, path: &str) -> Option<String> {
        let words = words_of(key);
        // The key's last words are the name's (`db_password`, `x-api-key`, `accessToken`), or
        // it ends in the name's words run together (`apikey`, `X-APIKEY`, `PassWord`,
        // `dbpassword`). Either way the key's raw text holds every word of the name, which is
        // what the prefilter looks for.
        let folded = fold(key);
        let tail = folded.trim_end_matches(|c: char| !c.is_alphabetic());
        let matching = self
            .keys
            .iter()
            .filter(|name| words.ends_with(&name.words) || ends_in(tail, &name.joined));
        if let Some(name) = matching.max_by_key(|name| name.words.len()) {
            return Some(name.rule.clone());
        }
        self.paths
            .iter()
            .any(|p| p == path)
            .then(|| format!("path:{path}"))
    }
}

/// Whether `tail` (a key folded, without what follows its last letter: `password1`,
/// `password:`) ends in `joined` (lowercase), compared without regard to ASCII case: a key that
/// ends in a secret's name run together (`dbpassword`, `X-APIKEY`) holds that secret.
fn ends_in(tail: &str, joined: &str) -> bool {
    let bytes = tail.as_bytes();
    bytes.len() >= joined.len()
        && bytes[bytes.len() - joined.len()..].eq_ignore_ascii_case(joined.as_bytes())
}

/// Replace `range` of a JSON text by `text`.
#[derive(Debug)]
struct Edit {
    range: Range<usize>,
    text: String,
}

/// `text` with the edits (in order, not overlapping) applied.
fn apply(text: &str, edits: &[Edit]) -> String {
    let mut out = String::with_capacity(text.len() + edits.len() * 32);
    let mut at = 0;
    for edit in edits {
        out.push_str(&text[at..edit.range.start]);
        out.push_str(&edit.text);
        at = edit.range.end;
    }
    out.push_str(&text[at..]);
    out
}

/// `text` as the inside of a JSON string: escaped, without the quotes.
fn string_content(text: &str) -> String {
    let quoted = serde_json::to_string(text).expect("a string serializes");
    quoted[1..quoted.len() - 1].to_owned()
}

/// Whether a string's text could be a JSON object, array, or string (JSON encoded twice): it
/// starts so (a quoted string: starts and ends so), after any white space, byte-order mark or
/// control character.
fn looks_like_json(text: &str) -> bool {
    let t = text.trim_matches(|c: char| c.is_whitespace() || c.is_control() || c == '\u{feff}');
    t.starts_with(['{', '[']) || (t.len() >= 2 && t.starts_with('"') && t.ends_with('"'))
}

/// The redaction visitor over one JSON text.
struct Redacting<'r, 't> {
    redactor: &'r Redactor,
    text: &'t str,
    /// The payload field, for refusals.
    field: &'r str,
    /// The lowercased dotted path of the member being read.
    path: String,
    /// `path`'s length before each member entered.
    lens: Vec<usize>,
    /// How many strings deep this text is.
    level: usize,
    /// The rule that fired on the member being skipped.
    rule: Option<String>,
    /// The lowercased name of each member entered and not yet left.
    members: Vec<String>,
    /// For each object open, what its name/value pair members have shown so far.
    pairs: Vec<Pair>,
    edits: Vec<Edit>,
    fired: &'r mut BTreeSet<String>,
}

/// Members that name a secret in a name/value pair (`{"name": "Authorization", "value": "…"}`,
/// as HTTP header lists and HAR files write them).
const PAIR_NAME_MEMBERS: [&str; 6] = ["name", "key", "header", "field", "param", "parameter"];
/// Members that hold the value of such a pair.
const PAIR_VALUE_MEMBERS: [&str; 2] = ["value", "val"];

/// One object's name/value pair so far: the rule its name member fired, and the values seen
/// before the name was.
#[derive(Default)]
struct Pair {
    rule: Option<String>,
    values: Vec<Range<usize>>,
}

impl Redacting<'_, '_> {
    /// Replaces a whole value by the marker of `rule`, dropping the edits made inside it.
    fn replace(&mut self, range: Range<usize>, rule: &str) {
        self.edits
            .retain(|edit| edit.range.end <= range.start || edit.range.start >= range.end);
        let marker = format!("[redacted:{rule}]");
        self.edits.push(Edit {
            range,
            text: serde_json::to_string(&marker).expect("a string serializes"),
        });
        self.fired.insert(rule.to_owned());
    }

    /// Edits of a string token's decoded text (`a..b` in decoded bytes) as edits of the raw
    /// token, keeping every escape outside them as written.
    fn lift(&mut self, value: &JsonStr<'_>, inner: Vec<Edit>) {
        let content = value.raw.start + 1;
        let raw = &self.text[content..value.raw.end - 1];
        let map = (!value.is_verbatim()).then(|| json::decoded_offsets(raw));
        let at = |i: usize| content + map.as_ref().map_or(i, |m| m[i]);
        for edit in inner {
            self.edits.push(Edit {
                range: at(edit.range.start)..at(edit.range.end),
                text: string_content(&edit.text),
            });
        }
    }
}

impl Visitor for Redacting<'_, '_> {
    type Stop = Invalid;

    fn enter_member(&mut self, name: &JsonStr<'_>) -> Result<bool, Invalid> {
        if let Some(rule) = self.redactor.pattern_in(&name.text) {
            let field = self.field;
            return Err(Invalid {
                field: Some(field.to_owned()),
                code: "secret_in_key",
                message: format!(
                    "a member name in {field} matches the redaction rule {rule}; a name is never redacted, so the event is refused rather than stored with it"
                ),
            });
        }
        self.lens.push(self.path.len());
        let lower = name.text.to_lowercase();
        self.path.push('.');
        self.path.push_str(&lower);
        self.members.push(lower);
        self.rule = self.redactor.key_rule(&name.text, &self.path);
        Ok(self.rule.is_none())
    }

    fn skipped(&mut self, value: Range<usize>) {
        let rule = self.rule.take().expect("a skipped member has its rule");
        let marker = format!("[redacted:{rule}]");
        self.edits.push(Edit {
            range: value,
            text: serde_json::to_string(&marker).expect("a string serializes"),
        });
        self.fired.insert(rule);
    }

    fn leave_member(&mut self, value: Range<usize>) {
        let len = self.lens.pop().expect("entered before left");
        self.path.truncate(len);
        let name = self.members.pop().expect("entered before left");
        if PAIR_NAME_MEMBERS.contains(&name.as_str()) {
            let rule = serde_json::from_str::<String>(&self.text[value])
                .ok()
                .and_then(|named| self.redactor.key_rule(&named, ""));
            if let (Some(rule), Some(pair)) = (rule, self.pairs.last_mut()) {
                if pair.rule.is_none() {
                    let earlier = std::mem::take(&mut pair.values);
                    pair.rule = Some(rule.clone());
                    for range in earlier {
                        self.replace(range, &rule);
                    }
                }
            }
        } else if PAIR_VALUE_MEMBERS.contains(&name.as_str()) {
            match self.pairs.last_mut() {
                Some(Pair {
                    rule: Some(rule), ..
                }) => {
                    let rule = rule.clone();
                    self.replace(value, &rule);
                }
                Some(pair) => pair.values.push(value),
                None => {}
            }
        }
    }

    fn enter_object(&mut self) {
        self.pairs.push(Pair::default());
    }

    fn leave_object(&mut self) {
        self.pairs.pop();
    }

    fn string(&mut self, value: &JsonStr<'_>) -> Result<(), Invalid> {
        let text = value.text.as_ref();
        if looks_like_json(text) {
            match json::check(text, PAYLOAD_DEPTH_MAX) {
                Ok(()) if self.level >= EMBEDDED_JSON_LEVELS_MAX => {
                    let field = self.field;
                    return Err(Invalid {
                        field: Some(field.to_owned()),
                        code: "too_deep",
                        message: format!(
                            "{field} holds JSON in a string more than {EMBEDDED_JSON_LEVELS_MAX} levels deep, which redaction does not read"
                        ),
                    });
                }
                Ok(()) => {
                    let inner = self.redactor.redact_text(
                        text,
                        self.field,
                        &self.path,
                        self.level + 1,
                        &mut *self.fired,
                    )?;
                    self.lift(value, inner);
                    return Ok(());
                }
                Err(err) if err.is_strictness() => {
                    let field = self.field;
                    return Err(Invalid {
                        field: Some(field.to_owned()),
                        code: err.code(),
                        message: format!("{field} holds a string of JSON text that {err}"),
                    });
                }
                // Structured text that is not JSON (`NaN`, a trailing comma, a Python dict's
                // repr) and spells a secret's key name: it cannot be read, so it is refused
                // rather than stored with whatever the name holds.
                Err(_) if self.redactor.names_appear(text) => {
                    let field = self.field;
                    return Err(Invalid {
                        field: Some(field.to_owned()),
                        code: "unreadable_json_in_string",
                        message: format!(
                            "{field} holds a string that looks like JSON but is not (at least not I-JSON), and names a key that redaction covers; send it as JSON, or without the secret"
                        ),
                    });
                }
                // Not JSON and no key name: plain text, for the patterns.
                Err(_) => {}
            }
        }
        // Every pattern's matches, overlapping ones merged, each span named by the rule of its
        // first match.
        let redactor = self.redactor;
        let mut spans: Vec<(Range<usize>, &str)> = Vec::new();
        // `name=value` and `name: value` in text (a query string, a log line, a header dump)
        // under a key name: the value is redacted as a member's would be.
        let mut assigned: Vec<(Range<usize>, String)> = Vec::new();
        if redactor.names_appear(text) {
            for found in redactor.assignment.captures_iter(text) {
                let (Some(name), Some(value)) = (found.name("name"), found.name("value")) else {
                    continue;
                };
                if let Some(rule) = redactor.key_rule(name.as_str(), "") {
                    assigned.push((value.range(), rule));
                }
            }
        }
        for (range, rule) in &assigned {
            spans.push((range.clone(), rule.as_str()));
            self.fired.insert(rule.clone());
        }
        for (rule, regex) in &redactor.patterns {
            for found in regex.find_iter(text) {
                spans.push((found.range(), rule));
                self.fired.insert(rule.clone());
            }
        }
        if spans.is_empty() {
            return Ok(());
        }
        spans.sort_by_key(|(range, _)| (range.start, range.end));
        let mut merged: Vec<(Range<usize>, &str)> = Vec::new();
        for (range, rule) in spans {
            match merged.last_mut() {
                Some((last, _)) if range.start < last.end => last.end = last.end.max(range.end),
                _ => merged.push((range, rule)),
            }
        }
        let inner = merged
            .into_iter()
            .map(|(range, rule)| Edit {
                range,
                text: format!("[redacted:{rule}]"),
            })
            .collect();
        self.lift(value, inner);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::validate;
    use serde_json::Value;

    fn redact(config: &RedactionConfig, body: &str) -> Option<Value> {
        let redactor = Redactor::new(config).unwrap();
        let valid = validate(body).unwrap();
        redactor
            .redacted_body(&valid)
            .unwrap()
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

    /// Key names match whatever their case and separators, and as a suffix word.
    #[test]
    fn key_names_match_after_normalising_case_separators_and_camel_case() {
        let redactor = Redactor::new(&RedactionConfig::default()).unwrap();
        let rule = |key: &str| redactor.key_rule(key, "");
        for (key, expected) in [
            ("password", Some("key:password")),
            ("PASSWORD", Some("key:password")),
            ("db_password", Some("key:password")),
            ("dbPassword", Some("key:password")),
            ("accessToken", Some("key:access_token")),
            ("access-token", Some("key:access_token")),
            ("ACCESS_TOKEN", Some("key:access_token")),
            ("x-auth-token", Some("key:token")),
            ("session_token", Some("key:token")),
            ("clientSecret", Some("key:client_secret")),
            ("aws_secret", Some("key:secret")),
            ("privateKey", Some("key:private_key")),
            ("PRIVATE-KEY", Some("key:private_key")),
            ("x-api-key", Some("key:api_key")),
            ("X-API-KEY", Some("key:api_key")),
            ("apiKey", Some("key:api_key")),
            ("APIKey", Some("key:api_key")),
            ("apikey", Some("key:api_key")),
            ("X-APIKEY", Some("key:api_key")),
            ("a-pikey", None),
            ("PassWord", Some("key:password")),
            ("myAPIKEY", Some("key:api_key")),
            ("MYPASSWORD", Some("key:password")),
            ("dbpassword", Some("key:password")),
            ("openaiApiKey", Some("key:api_key")),
            ("set-cookie", Some("key:cookie")),
            ("Set-Cookie", Some("key:cookie")),
            ("Proxy-Authorization", Some("key:authorization")),
            ("secretKey", Some("key:secret_key")),
            ("aws_secret_access_key", Some("key:access_key")),
            ("AWS_ACCESS_KEY", Some("key:access_key")),
            ("db.password", Some("key:password")),
            ("user password", Some("key:password")),
            ("passphrase", Some("key:passphrase")),
            ("credentials", Some("key:credentials")),
            // Spellings a hostile pass found: run together in capitals, Unicode that folds onto
            // the name, any punctuation as a separator, a number after it, near forms.
            ("DBPASSWORD", Some("key:password")),
            ("XAPIKEY", Some("key:api_key")),
            ("pa\u{17f}\u{17f}word", Some("key:password")),
            ("AUTHOR\u{130}ZAT\u{130}ON", Some("key:authorization")),
            ("author\u{131}zat\u{131}on", Some("key:authorization")),
            (
                "\u{ff50}\u{ff41}\u{ff53}\u{ff53}\u{ff57}\u{ff4f}\u{ff52}\u{ff44}",
                Some("key:password"),
            ),
            ("pa\u{301}ssword", Some("key:password")),
            ("pass\u{200b}word", Some("key:password")),
            ("pass\u{ad}word", Some("key:password")),
            ("user[password]", Some("key:password")),
            ("db:password", Some("key:password")),
            ("$password", Some("key:password")),
            ("password:", Some("key:password")),
            ("password1", Some("key:password")),
            ("apiKey2", Some("key:api_key")),
            ("passwords", Some("key:passwords")),
            ("credential", Some("key:credential")),
            ("pwd", Some("key:pwd")),
            ("auth", Some("key:auth")),
            ("oauth", Some("key:auth")),
            // Not secrets: the name is not the key's last word, or only a part of a word.
            ("token_count", None),
            ("max_tokens", None),
            ("tokenizer", None),
            ("password_hint_shown", None),
            ("secretary", None),
            ("keyboard", None),
            ("cookies_enabled", None),
            ("session_id", None),
            ("user", None),
            ("", None),
        ] {
            assert_eq!(rule(key).as_deref(), expected, "{key}");
        }
        assert_eq!(
            words_of("getHTTPResponse2Code"),
            ["get", "http", "response", "2", "code"]
        );
        // Whatever key a name matches, the prefilter looks closer at a body holding it.
        let parts = [
            "api",
            "API",
            "Api",
            "key",
            "Key",
            "KEY",
            "pass",
            "word",
            "Word",
            "password",
            "token",
            "Token",
            "access",
            "x",
            "db",
            "-",
            "_",
            ".",
            " ",
            ":",
            "[",
            "]",
            "1",
            "set",
            "cookie",
            "Cookie",
            "secret",
            "private",
            "Private",
            "auth",
            "orization",
            "K",
            "\u{212A}",
            "\u{17f}",
            "\u{200b}",
            "\u{ff50}",
        ];
        let mut seed = 0x51_7cc1_b727_220au64;
        for _ in 0..50_000 {
            let mut key = String::new();
            for _ in 0..(seed % 4 + 1) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                key.push_str(parts[(seed % parts.len() as u64) as usize]);
            }
            if rule(&key).is_some() {
                let body = serde_json::json!({ key.clone(): 1 }).to_string();
                assert!(redactor.may_fire(&body), "the prefilter misses {key:?}");
            }
        }
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
            assert_eq!(err.code, "unreadable_json_in_string", "{payload}");
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
        assert_eq!(err.code, "secret_in_id");
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
                (err.code, err.field.as_deref()),
                (code, Some("request_data")),
                "{payload}"
            );
        }
        let mut deep = r#"{"password":"S"}"#.to_owned();
        for _ in 0..=EMBEDDED_JSON_LEVELS_MAX {
            deep = format!(r#"{{"a":{}}}"#, serde_json::to_string(&deep).unwrap());
        }
        assert_eq!(run(&deep).unwrap_err().code, "too_deep");
        // Text that merely starts with a brace is text.
        assert!(run(r#"{"note":"{not json, Bearer abcdefghijkl}"}"#)
            .unwrap()
            .is_some());
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
            (err.code, err.field.as_deref()),
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
                (err.code, err.field.as_deref()),
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
