//! What exists only to load the reference design's configuration file: its aliases
//! (`[interaction_logging]`, `[api] host`/`port`, level `warning`), `key = null`, and keys with no
//! meaning here, which become warnings rather than errors.

use super::{Applied, Config, ConfigError};

/// Applies a key of the reference design's file that is not a setting of mcplog's own; `None`
/// when the key is not one of those either.
pub(super) fn apply(
    config: &mut Config,
    section: &str,
    name: &str,
    value: &toml::Value,
    key: &str,
) -> Option<Result<Applied, ConfigError>> {
    let bad = |message: String| ConfigError {
        key: key.to_owned(),
        message,
    };
    if let Some((section, name)) = alias(section, name) {
        let setting = super::setting(section, name).expect("an alias names a setting");
        return Some(
            setting
                .set_toml(config, value)
                .map(|()| Applied::Yes)
                .map_err(bad),
        );
    }
    let applied = match (section, name) {
        ("api", "host") => value
            .as_str()
            .ok_or_else(|| bad(format!("{value} is not a string")))
            .map(|host| {
                config.api.bind = rebind(&config.api.bind, Some(host), None);
                Applied::Yes
            }),
        ("api", "port") => value
            .as_integer()
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| bad(format!("{value} is not a port")))
            .map(|port| {
                config.api.bind = rebind(&config.api.bind, None, Some(port));
                Applied::Yes
            }),
        ("logging", "level")
            if value
                .as_str()
                .is_some_and(|l| l.eq_ignore_ascii_case("warning")) =>
        {
            config.logging.level = "warn".to_owned();
            Ok(Applied::Yes)
        }
        ("logging", "format") if value.as_str().is_some_and(|f| f != "text" && f != "json") => {
            Ok(Applied::NotHere(
                "a format other than \"text\" or \"json\" (the reference's Python format string has no meaning here); text is used",
            ))
        }
        ("interaction_logging", "database_path") => {
            Ok(Applied::NotHere("mcplog keeps its log in storage.data_dir"))
        }
        ("api", "workers") => Ok(Applied::NotHere(
            "the server sizes its worker threads to the machine",
        )),
        ("extensions", _) => Ok(Applied::NotHere("has no meaning here")),
        _ => return None,
    };
    Some(applied)
}

/// The setting a key of the reference's `[interaction_logging]` section stands for.
fn alias(section: &str, name: &str) -> Option<(&'static str, &'static str)> {
    match (section, name) {
        ("interaction_logging", "cleanup_interval") => Some(("storage", "cleanup_interval")),
        ("interaction_logging", "max_records") => Some(("storage", "max_records")),
        ("interaction_logging", "api_key_cache_ttl") => Some(("security", "api_key_cache_ttl")),
        _ => None,
    }
}

/// `bind` with its host or its port replaced: the reference sets them apart.
fn rebind(bind: &str, host: Option<&str>, port: Option<u16>) -> String {
    let (old_host, old_port) = bind.rsplit_once(':').unwrap_or(("127.0.0.1", "8080"));
    let port = port.map_or_else(|| old_port.to_owned(), |port| port.to_string());
    format!("{}:{port}", host.unwrap_or(old_host))
}

/// Fields of a reference static key with no meaning here.
pub(super) const IGNORED_KEY_FIELDS: [&str; 4] =
    ["name", "description", "permissions", "created_at"];

/// Removes every `key = null` assignment outside strings (and a comma that went with it), and
/// names the keys removed: the reference's file writes `expires_at = null`, which TOML has no
/// word for.
pub(super) fn strip_nulls(text: &str) -> (String, Vec<String>) {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut removed = Vec::new();
    let mut quote: Option<u8> = None;
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(q) if b == b'\\' && q == b'"' => i += 1,
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if b == b'"' || b == b'\'' => quote = Some(b),
            None if b == b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            None if bytes[i..].starts_with(b"null")
                && bytes
                    .get(i + 4)
                    .is_none_or(|c| !c.is_ascii_alphanumeric() && *c != b'_')
                && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric()) =>
            {
                if let Some(cut) = null_assignment(text, copied, i) {
                    removed.push(cut.key);
                    out.push_str(&cut.kept);
                    copied = cut.resume;
                    i = cut.resume;
                    continue;
                }
            }
            None => {}
        }
        i += 1;
    }
    out.push_str(&text[copied..]);
    (out, removed)
}

/// A `key = null` found by [`strip_nulls`].
struct NullAssignment {
    /// The text since the last cut, less the key, its `=` and a comma that went with it.
    kept: String,
    /// The key, as a warning names it.
    key: String,
    /// Where the text resumes after the `null` (and a comma after it).
    resume: usize,
}

/// The assignment whose `null` starts at `at`, if the text between `copied` and it ends in
/// `key =`.
fn null_assignment(text: &str, copied: usize, at: usize) -> Option<NullAssignment> {
    let before = text[copied..at].trim_end();
    let key_text = before.strip_suffix('=')?.trim_end();
    let key_start = key_text
        .rfind(|c: char| {
            !(c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '"' || c == '.')
        })
        .map_or(0, |p| p + 1);
    let name = key_text[key_start..].trim_matches('"');
    let mut kept = key_text[..key_start].to_owned();
    let mut resume = at + "null".len();
    let rest = &text[resume..];
    let trimmed = rest.trim_start_matches([' ', '\t']);
    if trimmed.starts_with(',') {
        resume += rest.len() - trimmed.len() + 1;
    } else if kept.trim_end().ends_with(',') {
        let cut = kept.trim_end().len() - 1;
        kept.truncate(cut);
    }
    Some(NullAssignment {
        kept,
        key: warned_name(text, at, name),
        resume,
    })
}

/// `name` as a warning shows it: a static key (a key of `[static_api_keys]` itself, not a field
/// of its inline table) only by fingerprint, never repeated.
fn warned_name(text: &str, at: usize, name: &str) -> String {
    let in_static_keys = text[..at]
        .rfind("[static_api_keys]")
        .is_some_and(|start| !text[start + 1..at].contains("\n["));
    let in_inline_table = text[..at].rsplit('\n').next().unwrap_or("").contains('{');
    if in_static_keys && !in_inline_table {
        format!(
            "static_api_keys.<key {}>",
            crate::auth::hex(&crate::auth::key_id(name))
        )
    } else {
        name.to_owned()
    }
}
