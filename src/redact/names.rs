//! Key names as rules match them: folded (`fold`), split into words (`words_of`), and compared
//! as the key's last words or run together (`key_rule`).

use aho_corasick::AhoCorasick;

use super::rules::DEFAULT_KEYS;
use super::{RedactionConfig, Redactor};

/// A key name as matched: its words, lowercased.
#[derive(Debug)]
pub(super) struct KeyName {
    /// The rule's name, `key:<name>` with the name lowercased as configured.
    pub(super) rule: String,
    pub(super) words: Vec<String>,
    /// The words run together.
    pub(super) joined: String,
}

/// The configured key names (the built-in ones first unless `builtin = false`), lowercased, and
/// the dotted paths among them; a name with the words of one before it adds nothing.
pub(super) fn configured(config: &RedactionConfig) -> Result<(Vec<KeyName>, Vec<String>), String> {
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
    Ok((names, paths))
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

/// The longest word of each name: a key a name matches holds every word of the name, so this
/// one spelled in a text is the reason to look closer.
pub(super) fn longest_words(keys: &[KeyName]) -> impl Iterator<Item = &String> {
    keys.iter()
        .filter_map(|n| n.words.iter().max_by_key(|w| w.len()))
}

/// The matcher behind [`Redactor::names_appear`]: a word of some key name, in any ASCII case.
pub(super) fn matcher(keys: &[KeyName]) -> Result<AhoCorasick, String> {
    AhoCorasick::builder()
        .ascii_case_insensitive(true)
        .build(longest_words(keys))
        .map_err(|err| format!("redaction keys do not compile: {err}"))
}

impl Redactor {
    /// Whether `text` could name a key that a rule covers: a word of a key name in it, or any
    /// letter beyond ASCII (which may fold onto one).
    pub(super) fn names_appear(&self, text: &str) -> bool {
        !text.is_ascii() || self.names.is_match(text)
    }

    /// The rule a key (at the lowercased dotted `path`) falls under, if one does: the name with
    /// the most words that it matches, else a path.
    pub(super) fn key_rule(&self, key: &str, path: &str) -> Option<String> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redact::tests::joined_at_random;
    use crate::redact::RedactionConfig;

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
        for key in joined_at_random(&parts, 4, 50_000, 0x51_7cc1_b727_220a) {
            if rule(&key).is_some() {
                let body = serde_json::json!({ key.clone(): 1 }).to_string();
                assert!(redactor.may_fire(&body), "the prefilter misses {key:?}");
            }
        }
    }
}
