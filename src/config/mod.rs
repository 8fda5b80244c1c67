//! Server configuration: embedded defaults, overridden by the `--config` TOML file, overridden by
//! `MCPLOG_*` environment variables, overridden by command-line flags. Every setting is one row
//! of [`SETTINGS`]; the reference design's file loads through `reference.rs`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::auth::{KeyId, Role, StaticKey};
use crate::ratelimit::Quota;
use crate::redact::RedactionConfig;
use static_keys::static_key;

mod check;
mod defaults;
mod reference;
mod settings;
mod static_keys;
mod table;

pub use settings::{help, Setting};
pub use table::SETTINGS;

/// Everything the server needs to start, grouped as the file's sections are.
#[derive(Clone, PartialEq)]
pub struct Config {
    /// `[storage]`: where and how the log is kept.
    pub storage: StorageSettings,
    /// `[api]`: the HTTP listener and its limits.
    pub api: ApiSettings,
    /// `[projection]`.
    pub projection: ProjectionSettings,
    /// `[security]` and `[static_api_keys]`: what signs, verifies and grants keys.
    pub keys: KeySettings,
    /// `[rate_limits]`, and the quotas `[static_api_keys]` entries set.
    pub rate_limits: RateLimits,
    /// `[redaction]`.
    pub redaction: RedactionConfig,
    /// `[cluster]`: NATS, for cluster mode.
    pub cluster: ClusterSettings,
    /// `[logging]`.
    pub logging: LoggingSettings,
}

/// `[storage]`.
#[derive(Clone, PartialEq)]
pub struct StorageSettings {
    /// `[storage] data_dir`: where segments and keys live.
    pub data_dir: PathBuf,
    /// `[storage] segment_max_bytes`: roll the active segment before it passes this size.
    pub segment_max_bytes: u64,
    /// `[storage] segment_max_age`: roll the active segment once it is this old.
    pub segment_max_age: Duration,
    /// `[storage] retention`: sealed segments whose newest event was received longer ago are
    /// deleted.
    pub retention: Duration,
    /// `[storage] retention_override`: accept a `retention` below `RETENTION_FLOOR`.
    pub retention_override: bool,
    /// `[storage] cleanup_interval`: how often retention runs (it also runs at start).
    pub cleanup_interval: Duration,
    /// `[storage] max_records`: drop the oldest sealed segments while more events than this are
    /// retained.
    pub max_records: Option<u64>,
    /// `[storage] max_bytes`: drop the oldest sealed segments while the segments take more bytes.
    pub max_bytes: Option<u64>,
}

/// `[api]`.
#[derive(Clone, PartialEq)]
pub struct ApiSettings {
    /// `[api] bind`: the listening address.
    pub bind: String,
    /// `[api] event_bytes_max`: largest single-event body, after decompression.
    pub event_bytes_max: usize,
    /// `[api] batch_events_max`: most events in one batch request.
    pub batch_events_max: usize,
    /// `[api] interaction_events_max`: most events one interaction may hold.
    pub interaction_events_max: usize,
    /// `[api] batch_bytes_max`: largest batch body, after decompression.
    pub batch_bytes_max: usize,
    /// `[api] queue_events_max`: most events accepted but not yet durable.
    pub queue_events_max: usize,
    /// `[api] metrics_auth`: `/metrics` needs an auditor or admin key.
    pub metrics_auth: bool,
    /// `[api] max_connections`: most open client connections; further ones wait in the kernel's
    /// accept queue.
    pub max_connections: usize,
    /// `[api] header_read_timeout`: how long a connection may take to send a request's headers,
    /// and how long a kept-alive connection may sit idle before its next request.
    pub header_read_timeout: Duration,
    /// `[api] body_read_timeout`: how long an ingest request may take to send its body.
    pub body_read_timeout: Duration,
    /// `[api] request_timeout`: how long a request on any route but the replay stream may take
    /// in all.
    pub request_timeout: Duration,
    /// `[api] shutdown_grace`: how long, after SIGTERM or SIGINT, requests in flight may take to
    /// finish before their connections are closed.
    pub shutdown_grace: Duration,
    /// `[api] write_timeout`: how long a write to a client may make no progress before the
    /// connection is cut.
    pub write_timeout: Duration,
    /// `[api] replay_streams_per_key_max`: most replay streams one key may have open at once.
    pub replay_streams_per_key_max: usize,
    /// `[api] replay_heartbeat`: how often a quiet `follow=true` replay stream sends a heartbeat
    /// line.
    pub replay_heartbeat: Duration,
    /// `[api] clock_skew_max`: how far in the future of the server's clock an event's
    /// `timestamp` may be.
    pub clock_skew_max: Duration,
}

/// `[projection]`.
#[derive(Clone, PartialEq)]
pub struct ProjectionSettings {
    /// `[projection] stale_after`: an active interaction first seen longer ago than this is
    /// counted as stale.
    pub stale_after: Duration,
}

/// `[security]` and `[static_api_keys]`. No `Debug`: it holds secrets (`Config`'s own `Debug`
/// shows them only as set or not).
#[derive(Clone, PartialEq)]
pub struct KeySettings {
    /// `[security] master_secret`: signs and verifies keys; generated into the data directory when
    /// not set.
    pub master_secret: Option<String>,
    /// `[security] previous_master_secrets`: former master secrets, still accepted for
    /// verification (never for signing) while a rotation runs.
    pub previous_master_secrets: Vec<String>,
    /// `[security] api_key_cache_ttl`: how long a verified signed key is remembered.
    pub api_key_cache_ttl: Duration,
    /// `[security] key_lifetime_max`: the longest lifetime `mcplog keygen` grants.
    pub key_lifetime_max: Duration,
    /// `[static_api_keys]`.
    pub static_keys: Vec<StaticKey>,
}

/// `[rate_limits]`, and the quotas of `[static_api_keys]` entries.
#[derive(Clone, PartialEq)]
pub struct RateLimits {
    /// `[rate_limits]`: the default quota of each role (none: not limited).
    pub role_quotas: HashMap<Role, Quota>,
    /// `events_per_second`/`burst` of `[static_api_keys]` entries, by key fingerprint.
    pub key_quotas: HashMap<KeyId, Quota>,
}

/// `[cluster]`. No `Debug`: the URL, token and credentials are secrets.
#[derive(Clone, PartialEq)]
pub struct ClusterSettings {
    /// `[cluster] nats_url`: NATS server URLs, comma-separated; set means cluster mode.
    pub nats_url: Option<String>,
    /// `[cluster] stream`: the JetStream stream holding the log.
    pub stream: String,
    /// `[cluster] replicas`: the stream's replicas when mcplog creates it.
    pub replicas: u64,
    /// `[cluster] token`: the NATS authentication token.
    pub token: Option<String>,
    /// `[cluster] credentials`: a NATS credentials file.
    pub credentials: Option<String>,
    /// `[cluster] ingest_deadline`: how long ingest waits for the stream before a 503.
    pub ingest_deadline: Duration,
    /// `[cluster] ready_lag_groups`: how many groups behind the stream's end a node may be and
    /// still answer `/readyz` 200. The default, 256, is four times the groups the follower's feed
    /// holds, so a node keeping up under load stays ready, while one with thousands of groups
    /// to apply is not; 256 groups apply in about a second (one fdatasync each).
    pub ready_lag_groups: u64,
    /// `[cluster] adopt_rules`: publish under this node's rules even where the cluster's last
    /// group carries others, moving the cluster to them.
    pub adopt_rules: bool,
}

/// `[logging]`.
#[derive(Clone, PartialEq)]
pub struct LoggingSettings {
    /// `[logging] level`: `trace`, `debug`, `info`, `warn` or `error`.
    pub level: String,
    /// `[logging] format`: human-readable text, or one JSON object per line.
    pub format: LogFormat,
}

/// The shortest `retention` accepted without `retention_override`: a shorter one deletes nearly
/// everything at each start, which is almost always a typo (`"0s"`, `"30"` meant as days).
pub const RETENTION_FLOOR: Duration = Duration::from_secs(3600);

/// How the server writes its log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A bad configuration value, naming the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration key {key}: {message}")]
pub struct ConfigError {
    /// The key, as `MCPLOG_NAME` or `section.name`.
    pub key: String,
    /// What is wrong with its value.
    pub message: String,
}

/// The setting at `section.name`.
fn setting(section: &str, name: &str) -> Option<&'static Setting> {
    SETTINGS
        .iter()
        .find(|s| s.section == section && s.name == name)
}

impl Config {
    /// Applies `MCPLOG_*` variables found by `lookup` (the process environment in production).
    /// Each value's own range is checked here; the relations between settings are not, since a
    /// later layer (flags) may still change one: [`Config::check`] runs on the final whole.
    pub fn apply_env(
        &mut self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        for s in SETTINGS {
            if let Some(value) = lookup(s.env) {
                // A secret's messages are made in `settings.rs` and never quote its value.
                s.set(self, &value).map_err(|message| ConfigError {
                    key: s.env.to_owned(),
                    message,
                })?;
            }
        }
        Ok(())
    }
}

impl std::fmt::Debug for Config {
    /// Every setting (a secret only as set or not) and the static keys by fingerprint.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = f.debug_struct("Config");
        for s in SETTINGS {
            out.field(s.name, &format_args!("{}", s.shown(self)));
        }
        out.field("static_keys", &self.keys.static_keys)
            .field("role_quotas", &self.rate_limits.role_quotas)
            .field("key_quotas", &self.rate_limits.key_quotas.len())
            .field("redaction", &self.redaction)
            .finish()
    }
}

impl Config {
    /// Applies a TOML configuration file. Returns warnings for the reference design's keys that
    /// have no meaning here; any other key that is not a setting is an error.
    pub fn apply_file(&mut self, path: &Path) -> Result<Vec<String>, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|err| ConfigError {
            key: "--config".into(),
            message: format!("{}: {err}", path.display()),
        })?;
        self.apply_toml(&text)
    }

    /// Applies configuration text in TOML; the relations between settings are checked later, on
    /// the final configuration ([`Config::check`]). Returns warnings for the reference design's keys that
    /// have no meaning here; any other key that is not a setting is an error.
    pub fn apply_toml(&mut self, text: &str) -> Result<Vec<String>, ConfigError> {
        let (text, nulls) = reference::strip_nulls(text);
        let table: toml::Table = text.parse().map_err(|err: toml::de::Error| {
            // Only the line and the reason: the error's own text quotes the line, which may hold
            // a static key.
            let line = err.span().map_or(0, |span| {
                text[..span.start.min(text.len())].matches('\n').count() + 1
            });
            ConfigError {
                key: "--config".into(),
                message: format!("line {line}: {}", err.message()),
            }
        })?;
        let mut warnings: Vec<String> = nulls
            .into_iter()
            .map(|key| format!("{key} = null is read as absent"))
            .collect();
        for (section, value) in &table {
            let Some(entries) = value.as_table() else {
                return Err(ConfigError {
                    key: section.clone(),
                    message:
                        "is not a section; every setting sits in one (see `mcplog serve --help`)"
                            .into(),
                });
            };
            for (name, value) in entries {
                match self.apply_entry(section, name, value)? {
                    Applied::Yes => {}
                    Applied::NotHere(why) => {
                        warnings.push(format!("{section}.{name}: {why}; ignored"))
                    }
                }
            }
        }
        // No `check()` here: a variable or flag applied later may still fix a relation.
        Ok(warnings)
    }

    fn apply_entry(
        &mut self,
        section: &str,
        name: &str,
        value: &toml::Value,
    ) -> Result<Applied, ConfigError> {
        if section == "static_api_keys" {
            // A static key's name is the key itself: errors name it by its fingerprint.
            let shown = format!(
                "static_api_keys.<key {}>",
                crate::auth::hex(&crate::auth::key_id(name))
            );
            let entry = value.as_table().ok_or_else(|| ConfigError {
                key: shown.clone(),
                message: "must be a table {mcp_id, role, expires_at, disabled}".into(),
            })?;
            let (key, quota) = static_key(name, entry, &shown)?;
            if let Some(quota) = quota {
                self.rate_limits
                    .key_quotas
                    .insert(crate::auth::key_id(name), quota);
            }
            self.keys.static_keys.push(key);
            return Ok(Applied::Yes);
        }
        if section == "rate_limits" {
            let role = Role::from_name(name).ok_or_else(|| ConfigError {
                key: format!("rate_limits.{name}"),
                message: "not a role; expected writer, auditor or admin".into(),
            })?;
            self.rate_limits
                .role_quotas
                .insert(role, rate_limit(name, value)?);
            return Ok(Applied::Yes);
        }
        if section == "redaction" {
            redaction(&mut self.redaction, name, value)?;
            return Ok(Applied::Yes);
        }
        let key = format!("{section}.{name}");
        if let Some(applied) = reference::apply(self, section, name, value, &key) {
            return applied;
        }
        // A misspelt key or section would otherwise leave its setting at the default (no rate
        // limits, default redaction) while the operator believes it set: refused, named.
        let Some(setting) = setting(section, name) else {
            return Err(ConfigError {
                key,
                message: "is not a setting of mcplog (see `mcplog serve --help` for every setting and its section)".into(),
            });
        };
        setting
            .set_toml(self, value)
            .map(|()| Applied::Yes)
            .map_err(|message| ConfigError { key, message })
    }
}

/// `[rate_limits] <role> = { events_per_second, burst }`.
fn rate_limit(role: &str, value: &toml::Value) -> Result<Quota, ConfigError> {
    let bad = |field: &str, message: String| ConfigError {
        key: format!("rate_limits.{role}.{field}"),
        message,
    };
    let table = value
        .as_table()
        .ok_or_else(|| bad("", "must be a table {events_per_second, burst}".into()))?;
    let (mut rate, mut burst) = (None, None);
    for (field, value) in table {
        let n = static_keys::count(value).map_err(|m| bad(field, m))?;
        match field.as_str() {
            "events_per_second" => rate = Some(n),
            "burst" => burst = Some(n),
            _ => {
                return Err(bad(
                    field,
                    "unknown field; expected events_per_second, burst".into(),
                ))
            }
        }
    }
    let rate = rate.ok_or_else(|| bad("events_per_second", "is required".into()))?;
    Quota::new(rate, burst).map_err(|m| bad("events_per_second", m))
}

/// One `[redaction]` key: `enabled`, `builtin`, `keys`, `patterns` or `emails`.
fn redaction(
    config: &mut RedactionConfig,
    name: &str,
    value: &toml::Value,
) -> Result<(), ConfigError> {
    let bad = |message: &str| ConfigError {
        key: format!("redaction.{name}"),
        message: message.to_owned(),
    };
    let strings = |value: &toml::Value| -> Result<Vec<String>, ConfigError> {
        value
            .as_array()
            .and_then(|items| {
                items
                    .iter()
                    .map(|v| v.as_str().map(str::to_owned))
                    .collect::<Option<Vec<_>>>()
            })
            .ok_or_else(|| bad("must be a list of strings"))
    };
    match name {
        "enabled" => {
            config.enabled = value
                .as_bool()
                .ok_or_else(|| bad("must be true or false"))?
        }
        "emails" => {
            config.emails = value
                .as_bool()
                .ok_or_else(|| bad("must be true or false"))?
        }
        "keys" => config.keys = strings(value)?,
        "builtin" => {
            config.builtin = value
                .as_bool()
                .ok_or_else(|| bad("must be true or false"))?
        }
        "patterns" => config.patterns = strings(value)?,
        _ => {
            return Err(bad(
                "unknown key; expected enabled, builtin, keys, patterns, emails",
            ))
        }
    }
    // Compiled here too, so a bad pattern is refused when the file is read.
    crate::redact::Redactor::new(config).map_err(|m| bad(&m))?;
    Ok(())
}

/// Whether a file's key was used.
enum Applied {
    Yes,
    NotHere(&'static str),
}

/// Parses `500ms`, `30s`, `15m`, `1h`, `30d`, or a plain number of seconds (the reference's form).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 500ms, 30s, 15m, 1h or 30d"))?;
    let seconds = |mult: u64| n.checked_mul(mult).map(Duration::from_secs);
    let duration = match unit {
        "ms" => Some(Duration::from_millis(n)),
        "" | "s" => seconds(1),
        "m" => seconds(60),
        "h" => seconds(3600),
        "d" => seconds(86_400),
        _ => {
            return Err(format!(
                "{text:?} has unknown unit {unit:?}; use ms, s, m, h or d"
            ))
        }
    };
    // Past this, adding the duration to a clock reading could overflow (and panic) somewhere.
    duration.filter(|d| *d <= DURATION_CEILING).ok_or_else(|| {
        format!(
            "{text:?} is too long: at most {}",
            settings::show_duration(DURATION_CEILING)
        )
    })
}

/// The longest duration any setting takes, 100 years: far from where adding it to an `Instant`,
/// a `SystemTime` or a microsecond count could overflow.
pub const DURATION_CEILING: Duration = Duration::from_secs(36_500 * 86_400);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;

    #[test]
    fn durations_in_every_unit() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(2_592_000)));
        assert_eq!(parse_duration("3600"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("").is_err());
        // Past the ceiling (here, past what a clock's arithmetic takes), refused, not wrapped.
        assert_eq!(parse_duration("36500d"), Ok(DURATION_CEILING));
        for long in ["36501d", "9223372036854775807", "9223372036854775807ms"] {
            let err = parse_duration(long).unwrap_err();
            assert!(err.contains("too long"), "{err}");
        }
    }

    #[test]
    fn rate_limits_and_redaction_are_read_and_bad_values_named() {
        let mut config = Config::default();
        config
            .apply_toml(
                "[rate_limits]\nwriter = { events_per_second = 50 }\nadmin = { events_per_second = 5, burst = 9 }\n\
                 [static_api_keys]\n\"a-limited-key\" = { mcp_id = \"m\", events_per_second = 3, burst = 4 }\n\
                 [redaction]\nkeys = [\"pin\"]\npatterns = [\"x+\"]\nemails = true\n",
            )
            .unwrap();
        assert_eq!(
            config.rate_limits.role_quotas[&Role::Writer],
            Quota::new(50, None).unwrap()
        );
        assert_eq!(config.rate_limits.role_quotas[&Role::Admin].burst.get(), 9);
        let key_id = crate::auth::key_id("a-limited-key");
        assert_eq!(
            config.rate_limits.key_quotas[&key_id],
            Quota::new(3, Some(4)).unwrap()
        );
        assert_eq!(config.redaction.keys, ["pin"]);
        assert_eq!(config.redaction.patterns, ["x+"]);
        assert!(config.redaction.emails && config.redaction.enabled);
        assert_eq!(Config::default().redaction, RedactionConfig::default());
        for (text, key) in [
            (
                "[rate_limits]\nboss = { events_per_second = 1 }",
                "rate_limits.boss",
            ),
            (
                "[rate_limits]\nwriter = { burst = 3 }",
                "rate_limits.writer.events_per_second",
            ),
            (
                "[rate_limits]\nwriter = { events_per_second = 0 }",
                "rate_limits.writer.events_per_second",
            ),
            (
                "[static_api_keys]\n\"k\" = { mcp_id = \"m\", burst = 3 }",
                "burst",
            ),
            ("[redaction]\npatterns = [\"(\"]", "redaction.patterns"),
            ("[redaction]\nenabled = \"yes\"", "redaction.enabled"),
            ("[redaction]\nkeyz = []", "redaction.keyz"),
        ] {
            let err = Config::default().apply_toml(text).unwrap_err();
            assert!(err.key.ends_with(key), "{text:?}: {err}");
        }
    }

    #[test]
    fn a_config_file_sets_keys_and_warns_about_the_rest() {
        let mut config = Config::default();
        let warnings = config
            .apply_toml(
                r#"
                [storage]
                segment_max_bytes = 65536
                retention = "30d"
                [api]
                bind = "127.0.0.1:9000"
                [security]
                key_lifetime_max = "7d"
                [extensions]
                ocr = true
                [static_api_keys]
                "k-writer" = { mcp_id = "m1" }
                "k-audit" = { role = "auditor", expires_at = "2030-01-01T00:00:00Z" }
                "k-off" = { role = "admin", disabled = true, expires_at = 1900000000 }
                "#,
            )
            .unwrap();
        assert_eq!(config.storage.segment_max_bytes, 65536);
        assert_eq!(config.api.bind, "127.0.0.1:9000");
        assert_eq!(
            config.keys.key_lifetime_max,
            Duration::from_secs(7 * 86_400)
        );
        assert_eq!(warnings, ["extensions.ocr: has no meaning here; ignored"]);
        assert_eq!(config.storage.retention, Duration::from_secs(30 * 86_400));
        assert_eq!(config.keys.static_keys.len(), 3);
        let audit = config
            .keys
            .static_keys
            .iter()
            .find(|k| k.key == "k-audit")
            .unwrap();
        assert_eq!(audit.expires_at, Some(1_893_456_000.0));
        assert_eq!(audit.role, Role::Auditor);
        let err = Config::default()
            .apply_toml("[static_api_keys]\n\"secret-k\" = { role = \"writer\" }")
            .unwrap_err();
        assert!(
            err.key.ends_with(".mcp_id") && !err.to_string().contains("secret-k"),
            "{err}"
        );
        let err = Config::default()
            .apply_toml("[api]\nqueue_events_max = \"lots\"")
            .unwrap_err();
        assert_eq!(err.key, "api.queue_events_max");
    }

    /// The reference design's example file, verbatim.
    pub(crate) const REFERENCE_FILE: &str =
        include_str!("../../tests/fixtures/reference-config.toml");

    #[test]
    fn the_reference_file_loads_mapping_what_maps() {
        let mut config = Config::default();
        let warnings = config.apply_toml(REFERENCE_FILE).unwrap();
        assert_eq!(config.storage.max_records, Some(1_000_000));
        assert_eq!(config.storage.cleanup_interval, Duration::from_secs(3600));
        assert_eq!(config.keys.api_key_cache_ttl, Duration::from_secs(300));
        assert_eq!(config.api.bind, "0.0.0.0:8080");
        assert_eq!(config.logging.level, "info");
        assert_eq!(
            config.keys.master_secret.as_deref(),
            Some("your-very-secure-master-secret-key")
        );
        assert_eq!(config.keys.static_keys.len(), 2);
        assert!(config
            .keys
            .static_keys
            .iter()
            .all(|k| k.expires_at.is_none() && !k.disabled));
        let text = warnings.join("\n");
        for expected in [
            "expires_at = null",
            "extensions.interaction_logging",
            "database_path",
            "workers",
            "logging.format",
        ] {
            assert!(
                text.contains(expected),
                "no warning about {expected}: {text}"
            );
        }
        assert!(!text.contains("sk-mcp"), "a warning shows a key: {text}");
    }

    #[test]
    fn config_errors_never_show_a_static_key() {
        for text in [
            "[static_api_keys]\n\"sk-live-abc\" = \"m1\"\n",
            "[static_api_keys]\n\"sk-live-abc\" = { mcp_id = \"m\", role = \"boss\" }\n",
            "[static_api_keys]\n\"sk-live-abc\" = { mcp_id = \"m\" \n",
        ] {
            let err = Config::default().apply_toml(text).unwrap_err();
            assert!(!err.to_string().contains("sk-live-abc"), "{err}");
        }
        let warnings = Config::default().apply_toml("[static_api_keys]\n\"sk-live-abc\" = null\n\"k2\" = { mcp_id = \"m\", expires_at = null }\n").unwrap();
        assert!(!warnings.join(" ").contains("sk-live-abc"), "{warnings:?}");
        // A multi-line string the null scanner reads as partly unquoted, with a multi-byte
        // character there: it once sliced inside the character and panicked.
        let warnings = Config::default()
            .apply_toml("[extensions]\nd = \"\"\"say \"héllo\" \"\"\"\n")
            .unwrap();
        assert_eq!(warnings, ["extensions.d: has no meaning here; ignored"]);
    }

    #[test]
    fn nulls_are_dropped_only_outside_strings() {
        let (text, removed) = reference::strip_nulls(
            "a = null\nb = \"null\"\nc = { x = 1, y = null }\nd = { y = null, x = 2 } # null\n",
        );
        assert_eq!(removed, ["a", "y", "y"]);
        let table: toml::Table = text.parse().unwrap();
        assert_eq!(table["b"].as_str(), Some("null"));
        assert_eq!(table["c"]["x"].as_integer(), Some(1));
        assert_eq!(table["d"]["x"].as_integer(), Some(2));
        assert!(table.get("a").is_none());
    }

    #[test]
    fn previous_master_secrets_come_as_a_list_or_comma_separated_and_are_never_shown() {
        let mut config = Config::default();
        config
            .apply_toml(
                "[security]\nprevious_master_secrets = [\"old-secret-number-one\", \"old-secret-number-two\"]\n[api]\nmetrics_auth = true\n",
            )
            .unwrap();
        assert_eq!(
            config.keys.previous_master_secrets,
            ["old-secret-number-one", "old-secret-number-two"]
        );
        assert!(config.api.metrics_auth);
        let shown = format!("{config:?}");
        assert!(
            shown.contains("previous_master_secrets: <2 set>") && !shown.contains("old-secret"),
            "{shown}"
        );
        let mut from_env = Config::default();
        from_env
            .apply_env(|k| {
                (k == "MCPLOG_PREVIOUS_MASTER_SECRETS")
                    .then(|| " old-secret-number-one , old-secret-number-two ".to_owned())
            })
            .unwrap();
        assert_eq!(
            from_env.keys.previous_master_secrets,
            config.keys.previous_master_secrets
        );
        for bad in [
            "[security]\nprevious_master_secrets = [1]",
            "[security]\nprevious_master_secrets = 7",
        ] {
            let err = Config::default().apply_toml(bad).unwrap_err();
            assert_eq!(err.key, "security.previous_master_secrets", "{err}");
        }
    }

    #[test]
    fn environment_overrides_defaults_and_names_the_bad_key() {
        let mut config = Config::default();
        config
            .apply_env(|k| (k == "MCPLOG_SEGMENT_MAX_BYTES").then(|| "65536".to_owned()))
            .unwrap();
        assert_eq!(config.storage.segment_max_bytes, 65536);
        let err = Config::default()
            .apply_env(|k| (k == "MCPLOG_QUEUE_EVENTS_MAX").then(|| "lots".to_owned()))
            .unwrap_err();
        assert_eq!(err.key, "MCPLOG_QUEUE_EVENTS_MAX");
    }

    #[test]
    fn every_setting_has_a_working_default_a_variable_and_a_place_in_debug() {
        let config = Config::default();
        config.check().unwrap();
        let shown = format!("{config:?}");
        let help = help();
        for s in SETTINGS {
            assert!(s.env.starts_with("MCPLOG_"), "{}", s.key());
            assert!(help.contains(s.env), "--help lacks {}", s.env);
            if let Some(range) = s.range() {
                let line = help.lines().find(|l| l.contains(s.env)).unwrap();
                assert!(line.ends_with(&format!("({range})")), "{line}");
            }
            assert!(
                shown.contains(&format!("{}: ", s.name)),
                "Debug lacks {}",
                s.name
            );
            // The file and the environment reach the same field.
            if let Some(default) = s.default {
                let mut from_env = Config::default();
                s.set(&mut from_env, default).unwrap();
                assert_eq!(from_env, config, "{}", s.key());
            }
        }
        let names: std::collections::HashSet<_> = SETTINGS.iter().map(|s| s.key()).collect();
        assert_eq!(names.len(), SETTINGS.len(), "a key twice");
        let mut with_secret = Config::default();
        with_secret
            .apply_env(|k| (k == "MCPLOG_MASTER_SECRET").then(|| "a-secret-of-some-length".into()))
            .unwrap();
        assert!(!format!("{with_secret:?}").contains("a-secret-of-some-length"));
        assert!(format!("{with_secret:?}").contains("master_secret: <set>"));
    }

    #[test]
    fn each_range_is_checked_from_its_row_as_the_value_is_read() {
        use settings::Field;
        let mut ranged = 0;
        for s in SETTINGS {
            let (inside, outside) = match &s.field {
                Field::Count(_, Some(n)) | Field::Size(_, Some(n)) => (
                    [Some(n.min), n.max].map(|v| v.map(|v| v.to_string())),
                    [n.min.checked_sub(1), n.max.map(|m| m + 1)].map(|v| v.map(|v| v.to_string())),
                ),
                Field::Duration(_, Some(d)) => {
                    let ms = |d: Duration| format!("{}ms", d.as_millis());
                    (
                        [Some(ms(d.min)), d.max.map(ms)],
                        [
                            d.min.checked_sub(Duration::from_millis(1)).map(ms),
                            d.max.map(|m| ms(m + Duration::from_millis(1))),
                        ],
                    )
                }
                _ => continue,
            };
            ranged += 1;
            let range = s.range().unwrap();
            for text in inside.into_iter().flatten() {
                s.set(&mut Config::default(), &text)
                    .unwrap_or_else(|err| panic!("{} = {text}: {err}", s.key()));
            }
            for text in outside.into_iter().flatten() {
                let err = Config::default()
                    .apply_env(|k| (k == s.env).then(|| text.clone()))
                    .unwrap_err();
                assert_eq!(err.key, s.env);
                assert!(err.message.contains(&range), "{err}");
            }
        }
        assert_eq!(ranged, 24, "a range was added or lost");
        // Every duration has a ceiling, so none can overflow a clock's arithmetic.
        for s in SETTINGS {
            if let Field::Duration(_, range) = &s.field {
                assert!(range.is_some_and(|r| r.max.is_some()), "{}", s.key());
            }
        }
        let err = Config::default()
            .apply_toml("[cluster]\nreplicas = 6\n")
            .unwrap_err();
        assert_eq!(err.key, "cluster.replicas");
        assert_eq!(err.message, "must be 1 to 5 replicas, not 6");
    }

    #[test]
    fn relations_between_settings_are_checked_naming_the_key() {
        for (text, key) in [
            (
                "[api]\nbatch_events_max = 2000\nqueue_events_max = 1000",
                "api.batch_events_max",
            ),
            (
                "[api]\nevent_bytes_max = 2048\nbatch_bytes_max = 1024",
                "api.batch_bytes_max",
            ),
            ("[storage]\nretention = \"59m\"", "storage.retention"),
            ("[storage]\nmax_records = 0", "storage.max_records"),
            ("[storage]\nmax_bytes = 0", "storage.max_bytes"),
            (
                "[security]\nmaster_secret = \"short-secret\"",
                "security.master_secret",
            ),
            (
                "[security]\nprevious_master_secrets = [\"short-secret\"]",
                "security.previous_master_secrets",
            ),
            ("[cluster]\nstream = \"a.b\"", "cluster.stream"),
            ("[cluster]\nstream = \"\"", "cluster.stream"),
            ("[cluster]\nnats_url = \" \"", "cluster.nats_url"),
        ] {
            let err = layered(text, &[]).unwrap_err();
            assert_eq!(err.key, key, "{text}");
            assert!(!err.to_string().contains("short-secret"), "{err}");
        }
        // The help of the floor's settings says it as it is.
        let floor = settings::show_duration(RETENTION_FLOOR);
        for name in ["retention", "retention_override"] {
            let help = setting("storage", name).unwrap().help;
            assert!(
                help.contains(&format!("below {floor}"))
                    || help.contains(&format!("least {floor}")),
                "{help}"
            );
        }
        layered(
            "[storage]\nretention = \"1m\"\nmax_records = 0\nretention_override = true",
            &[],
        )
        .unwrap();
        layered(
            "[api]\nbatch_events_max = 1000\nqueue_events_max = 1000\nbatch_bytes_max = 1048576",
            &[],
        )
        .unwrap();
    }

    /// The file, then the variables in `env`, then the relations checked, as `mcplog serve` does.
    fn layered(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        config.apply_toml(text)?;
        config.apply_env(|k| {
            env.iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| (*v).to_owned())
        })?;
        config.check()?;
        Ok(config)
    }

    #[test]
    fn relations_are_checked_on_the_final_layers_so_a_variable_can_fix_the_file() {
        for (text, env, key) in [
            (
                "[api]\nevent_bytes_max = 100\nbatch_bytes_max = 50",
                ("MCPLOG_BATCH_BYTES_MAX", "1000"),
                "api.batch_bytes_max",
            ),
            (
                "[storage]\nretention = \"30m\"",
                ("MCPLOG_RETENTION_OVERRIDE", "true"),
                "storage.retention",
            ),
            (
                "[security]\nmaster_secret = \"short\"",
                ("MCPLOG_MASTER_SECRET", "a-secret-of-some-length"),
                "security.master_secret",
            ),
            (
                "[api]\nbatch_events_max = 20000",
                ("MCPLOG_QUEUE_EVENTS_MAX", "50000"),
                "api.batch_events_max",
            ),
        ] {
            assert_eq!(layered(text, &[]).unwrap_err().key, key, "{text}");
            layered(text, &[env]).unwrap_or_else(|err| panic!("{text} with {env:?}: {err}"));
        }
    }

    #[test]
    fn empty_places_and_secrets_and_a_bind_without_a_port_are_refused() {
        for (env, key) in [
            (("MCPLOG_DATA_DIR", ""), "storage.data_dir"),
            (("MCPLOG_BIND", "nonsense"), "api.bind"),
            (("MCPLOG_BIND", ""), "api.bind"),
            (("MCPLOG_BIND", "127.0.0.1:99999"), "api.bind"),
            (("MCPLOG_BIND", ":8080"), "api.bind"),
            (("MCPLOG_NATS_TOKEN", ""), "MCPLOG_NATS_TOKEN"),
            (("MCPLOG_NATS_CREDENTIALS", " "), "MCPLOG_NATS_CREDENTIALS"),
        ] {
            assert_eq!(layered("", &[env]).unwrap_err().key, key, "{env:?}");
        }
        let err = layered("[cluster]\ntoken = \"\"", &[]).unwrap_err();
        assert_eq!(err.key, "cluster.token");
        for bind in ["localhost:8080", "[::1]:0", "0.0.0.0:80"] {
            layered("", &[("MCPLOG_BIND", bind)]).unwrap();
        }
    }

    #[test]
    fn help_aligns_its_columns_to_the_longest_entry() {
        let text = help();
        let starts: std::collections::HashSet<_> = text
            .lines()
            .filter(|l| l.starts_with("  MCPLOG_"))
            .map(|l| {
                let default = l.trim_start().find(' ').unwrap();
                let after =
                    l.trim_start()[default..].len() - l.trim_start()[default..].trim_start().len();
                default + after
            })
            .collect();
        assert_eq!(starts.len(), 1, "{text}");
    }

    #[test]
    fn the_readme_settings_table_shows_each_rows_range() {
        let rows: Vec<Vec<&str>> = include_str!("../../README.md")
            .lines()
            .filter(|line| line.starts_with("| `MCPLOG_"))
            .map(|line| line.trim_matches('|').split('|').map(str::trim).collect())
            .collect();
        for row in &rows {
            assert_eq!(row.len(), 4, "{row:?}");
        }
        for s in SETTINGS {
            let named = format!("`{}`", s.env);
            let found: Vec<_> = rows.iter().filter(|row| row[0].contains(&named)).collect();
            assert_eq!(found.len(), 1, "README rows naming {}", s.env);
            assert_eq!(found[0][2], s.range().unwrap_or_default(), "{}", s.env);
        }
    }
}
