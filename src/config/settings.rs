//! The one table of settings: each one's TOML key, environment variable, default, help and how
//! its value is read. Defaults, the file, the environment, `Debug` and `mcplog serve --help` are
//! all derived from it, so a setting cannot be added to one of them and forgotten in another.
//!
//! Hand-written rather than clap's `env` attribute or a layering crate: the reference design's
//! file needs shims (`reference.rs`) that neither models, and static keys must never reach an
//! error message, which is simplest to guarantee where every message is made here.

use std::path::PathBuf;
use std::time::Duration;

use super::{parse_duration, Config, LogFormat};

/// Where a setting's value lives in [`Config`], and what kind of value it is.
pub(super) enum Field {
    Path(fn(&mut Config) -> &mut PathBuf),
    Text(fn(&mut Config) -> &mut String),
    /// Never shown: `Debug` and errors say only whether it is set.
    Secret(fn(&mut Config) -> &mut Option<String>),
    /// Secrets, never shown (`Debug` says how many): a TOML list of strings, or text with the
    /// entries separated by commas (the environment's form).
    SecretList(fn(&mut Config) -> &mut Vec<String>),
    Count(fn(&mut Config) -> &mut u64),
    Size(fn(&mut Config) -> &mut usize),
    /// A count that may be absent (no limit).
    Limit(fn(&mut Config) -> &mut Option<u64>),
    Duration(fn(&mut Config) -> &mut Duration),
    Flag(fn(&mut Config) -> &mut bool),
    Level,
    Format,
    /// `always`, the only mode: accepted so that a file may say it.
    Fsync,
}

/// One setting.
pub struct Setting {
    /// Its section in the TOML file.
    pub section: &'static str,
    /// Its key in that section.
    pub name: &'static str,
    /// Its environment variable.
    pub env: &'static str,
    /// The embedded default, as text (`None`: unset).
    pub default: Option<&'static str>,
    /// What it does.
    pub help: &'static str,
    pub(super) field: Field,
    /// Its current value as `Debug` shows it.
    pub(super) show: fn(&Config) -> String,
}

macro_rules! setting {
    ($section:literal, $group:ident . $name:ident, $env:literal, $default:expr, $kind:ident, $help:literal) => {
        Setting {
            section: $section,
            name: stringify!($name),
            env: $env,
            default: $default,
            help: $help,
            field: Field::$kind(|c| &mut c.$group.$name),
            show: |c| format!("{:?}", c.$group.$name),
        }
    };
}

/// Every setting, in the order `--help` and `Debug` list them.
pub static SETTINGS: &[Setting] = &[
    setting!(
        "storage",
        storage.data_dir,
        "MCPLOG_DATA_DIR",
        Some("./data"),
        Path,
        "segments and keys"
    ),
    setting!(
        "storage",
        storage.segment_max_bytes,
        "MCPLOG_SEGMENT_MAX_BYTES",
        Some("67108864"),
        Count,
        "roll the active segment before it passes this many bytes (4096 to 1 GiB)"
    ),
    setting!(
        "storage",
        storage.segment_max_age,
        "MCPLOG_SEGMENT_MAX_AGE",
        Some("1d"),
        Duration,
        "roll the active segment once it is this old"
    ),
    setting!(
        "storage",
        storage.retention,
        "MCPLOG_RETENTION",
        Some("30d"),
        Duration,
        "delete sealed segments whose newest event was received longer ago (at least 1h)"
    ),
    setting!(
        "storage",
        storage.retention_override,
        "MCPLOG_RETENTION_OVERRIDE",
        Some("false"),
        Flag,
        "accept a retention below 1h"
    ),
    setting!(
        "storage",
        storage.cleanup_interval,
        "MCPLOG_CLEANUP_INTERVAL",
        Some("1h"),
        Duration,
        "how often retention runs (also at start)"
    ),
    setting!(
        "storage",
        storage.max_records,
        "MCPLOG_MAX_RECORDS",
        None,
        Limit,
        "also delete the oldest sealed segments while more events than this are kept"
    ),
    setting!(
        "storage",
        storage.max_bytes,
        "MCPLOG_MAX_BYTES",
        None,
        Limit,
        "also delete the oldest sealed segments while they take more bytes than this"
    ),
    Setting {
        section: "storage",
        name: "fsync",
        env: "MCPLOG_FSYNC",
        default: Some("always"),
        help: "always: an event is acknowledged after its fdatasync (the only mode)",
        field: Field::Fsync,
        show: |_| "\"always\"".to_owned(),
    },
    setting!(
        "api",
        api.bind,
        "MCPLOG_BIND",
        Some("127.0.0.1:8080"),
        Text,
        "listening address (port 0 picks one; the log says which)"
    ),
    setting!(
        "api",
        api.event_bytes_max,
        "MCPLOG_EVENT_BYTES_MAX",
        Some("1048576"),
        Size,
        "largest single event body, after decompression"
    ),
    setting!(
        "api",
        api.interaction_events_max,
        "MCPLOG_INTERACTION_EVENTS_MAX",
        Some("10000"),
        Size,
        "most events one interaction may hold; an event past it is refused (409 interaction_full)"
    ),
    setting!(
        "api",
        api.batch_events_max,
        "MCPLOG_BATCH_EVENTS_MAX",
        Some("1000"),
        Size,
        "most events in a batch"
    ),
    setting!(
        "api",
        api.batch_bytes_max,
        "MCPLOG_BATCH_BYTES_MAX",
        Some("16777216"),
        Size,
        "largest batch body, after decompression"
    ),
    setting!(
        "api",
        api.queue_events_max,
        "MCPLOG_QUEUE_EVENTS_MAX",
        Some("10000"),
        Size,
        "events accepted but not yet durable; beyond it, 503"
    ),
    setting!(
        "api",
        api.max_connections,
        "MCPLOG_MAX_CONNECTIONS",
        Some("1024"),
        Size,
        "most open client connections; more wait in the kernel's accept queue"
    ),
    setting!(
        "api",
        api.header_read_timeout,
        "MCPLOG_HEADER_READ_TIMEOUT",
        Some("10s"),
        Duration,
        "time to send a request's headers, and a kept-alive connection's idle time"
    ),
    setting!(
        "api",
        api.body_read_timeout,
        "MCPLOG_BODY_READ_TIMEOUT",
        Some("30s"),
        Duration,
        "time to send an ingest request's body (408 after)"
    ),
    setting!(
        "api",
        api.request_timeout,
        "MCPLOG_REQUEST_TIMEOUT",
        Some("30s"),
        Duration,
        "time for a whole request on every route but the replay stream (503 after)"
    ),
    setting!(
        "api",
        api.shutdown_grace,
        "MCPLOG_SHUTDOWN_GRACE",
        Some("10s"),
        Duration,
        "time requests in flight at SIGTERM or SIGINT get to finish"
    ),
    setting!(
        "api",
        api.write_timeout,
        "MCPLOG_WRITE_TIMEOUT",
        Some("30s"),
        Duration,
        "how long a write to a client may make no progress before the connection is cut"
    ),
    setting!(
        "api",
        api.replay_streams_per_key_max,
        "MCPLOG_REPLAY_STREAMS_PER_KEY_MAX",
        Some("8"),
        Size,
        "most replay streams one key may have open at once (429 beyond)"
    ),
    setting!(
        "api",
        api.replay_heartbeat,
        "MCPLOG_REPLAY_HEARTBEAT",
        Some("15s"),
        Duration,
        "how often a quiet follow stream sends a heartbeat line"
    ),
    setting!(
        "api",
        api.metrics_auth,
        "MCPLOG_METRICS_AUTH",
        Some("false"),
        Flag,
        "true: /metrics needs an auditor or admin key (401 without, 403 for a writer)"
    ),
    setting!(
        "api",
        api.clock_skew_max,
        "MCPLOG_CLOCK_SKEW_MAX",
        Some("1h"),
        Duration,
        "how far ahead of the server's clock an event's timestamp may be"
    ),
    setting!(
        "projection",
        projection.stale_after,
        "MCPLOG_STALE_AFTER",
        Some("1h"),
        Duration,
        "an active interaction that started longer ago is counted stale"
    ),
    setting!(
        "security",
        keys.master_secret,
        "MCPLOG_MASTER_SECRET",
        None,
        Secret,
        "signs and verifies keys (16 bytes or more); else <data>/master.secret"
    ),
    setting!(
        "security",
        keys.previous_master_secrets,
        "MCPLOG_PREVIOUS_MASTER_SECRETS",
        None,
        SecretList,
        "former master secrets still accepted for verification while a rotation runs (comma-separated)"
    ),
    setting!(
        "security",
        keys.api_key_cache_ttl,
        "MCPLOG_API_KEY_CACHE_TTL",
        Some("5m"),
        Duration,
        "how long a verified signed key is remembered (revocation still applies at once)"
    ),
    setting!(
        "security",
        keys.key_lifetime_max,
        "MCPLOG_KEY_LIFETIME_MAX",
        Some("30d"),
        Duration,
        "the longest lifetime keygen grants"
    ),
    // A URL may carry a user and password, so it is shown only as set or not.
    setting!(
        "cluster",
        cluster.nats_url,
        "MCPLOG_NATS_URL",
        None,
        Secret,
        "cluster mode: NATS server URLs, comma-separated (unset: a single node)"
    ),
    setting!(
        "cluster",
        cluster.stream,
        "MCPLOG_NATS_STREAM",
        Some("mcplog"),
        Text,
        "cluster mode: the JetStream stream holding the log (letters, digits, - and _)"
    ),
    setting!(
        "cluster",
        cluster.replicas,
        "MCPLOG_NATS_REPLICAS",
        Some("3"),
        Count,
        "cluster mode: copies JetStream keeps of the stream when it creates it (1 to 5)"
    ),
    setting!(
        "cluster",
        cluster.token,
        "MCPLOG_NATS_TOKEN",
        None,
        Secret,
        "cluster mode: the NATS authentication token, if the servers require one"
    ),
    setting!(
        "cluster",
        cluster.credentials,
        "MCPLOG_NATS_CREDENTIALS",
        None,
        Secret,
        "cluster mode: a NATS credentials file (.creds: user JWT and NKey seed), if the servers require one"
    ),
    setting!(
        "cluster",
        cluster.ingest_deadline,
        "MCPLOG_NATS_INGEST_DEADLINE",
        Some("5s"),
        Duration,
        "cluster mode: how long an event may wait for the stream, from its arrival, before a 503 (100ms to 60s)"
    ),
    Setting {
        section: "logging",
        name: "level",
        env: "MCPLOG_LEVEL",
        default: Some("info"),
        help: "trace, debug, info, warn or error",
        field: Field::Level,
        show: |c| format!("{:?}", c.logging.level),
    },
    Setting {
        section: "logging",
        name: "format",
        env: "MCPLOG_FORMAT",
        default: Some("text"),
        help: "text, or json (one object per line)",
        field: Field::Format,
        show: |c| format!("{:?}", c.logging.format),
    },
];

/// Log levels, as the settings take them.
const LEVELS: [&str; 5] = ["trace", "debug", "info", "warn", "error"];

impl Setting {
    /// `section.name`.
    pub fn key(&self) -> String {
        format!("{}.{}", self.section, self.name)
    }

    /// Sets the value from text (an environment variable, a default, or a TOML string).
    pub(super) fn set(&self, config: &mut Config, text: &str) -> Result<(), String> {
        let number = |text: &str| {
            text.trim()
                .parse::<u64>()
                .map_err(|_| format!("{text:?} is not a whole number"))
        };
        match &self.field {
            Field::Path(f) => *f(config) = PathBuf::from(text),
            Field::Text(f) => *f(config) = text.to_owned(),
            Field::Secret(f) => *f(config) = Some(text.to_owned()),
            Field::SecretList(f) => {
                *f(config) = text
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            }
            Field::Count(f) => *f(config) = number(text)?,
            Field::Size(f) => {
                *f(config) = usize::try_from(number(text)?).map_err(|_| "too large".to_owned())?
            }
            Field::Limit(f) => *f(config) = Some(number(text)?),
            Field::Duration(f) => *f(config) = parse_duration(text)?,
            Field::Flag(f) => {
                *f(config) = match text.trim().to_ascii_lowercase().as_str() {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => return Err(format!("{text:?} is not true or false")),
                }
            }
            Field::Level => {
                let level = text.trim().to_ascii_lowercase();
                if !LEVELS.contains(&level.as_str()) {
                    return Err(format!("{level:?} is not {}", LEVELS.join(", ")));
                }
                config.logging.level = level;
            }
            Field::Format => {
                config.logging.format = match text.trim() {
                    "text" => LogFormat::Text,
                    "json" => LogFormat::Json,
                    other => return Err(format!("{other:?} is not text or json")),
                }
            }
            Field::Fsync => {
                if text.trim() != "always" {
                    return Err(format!(
                        "{text:?} is not supported: only \"always\" (acknowledge after fdatasync)"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Sets the value from a TOML value: text fields take strings, numbers and durations take
    /// numbers too (a duration as seconds), flags take booleans.
    pub(super) fn set_toml(&self, config: &mut Config, value: &toml::Value) -> Result<(), String> {
        if let (Field::SecretList(f), toml::Value::Array(items)) = (&self.field, value) {
            // The value is never quoted back: it is a secret.
            *f(config) = items
                .iter()
                .map(|item| item.as_str().map(str::to_owned))
                .collect::<Option<Vec<String>>>()
                .ok_or_else(|| "must be a list of strings".to_owned())?;
            return Ok(());
        }
        let textual = matches!(
            self.field,
            Field::Path(_)
                | Field::Text(_)
                | Field::Secret(_)
                | Field::SecretList(_)
                | Field::Level
                | Field::Format
                | Field::Fsync
        );
        let text = match value {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(n) if !textual && *n >= 0 => n.to_string(),
            toml::Value::Boolean(b) if matches!(self.field, Field::Flag(_)) => b.to_string(),
            _ if matches!(self.field, Field::SecretList(_)) => {
                return Err("must be a list of strings".to_owned())
            }
            // A secret's value is never quoted back, whatever its type.
            _ if matches!(self.field, Field::Secret(_)) => {
                return Err("must be a string (its value is not shown: it is a secret)".to_owned())
            }
            other if textual => return Err(format!("{other} is not a string")),
            other => return Err(format!("{other} is not a value of this setting")),
        };
        self.set(config, &text)
    }

    /// The current value as `Debug` shows it; a secret only as set or not.
    pub(super) fn shown(&self, config: &Config) -> String {
        match self.field {
            Field::Secret(field) if field(&mut config.clone()).is_some() => "<set>".to_owned(),
            Field::Secret(_) => "None".to_owned(),
            Field::SecretList(field) => format!("<{} set>", field(&mut config.clone()).len()),
            _ => (self.show)(config),
        }
    }
}

/// The settings as `mcplog serve --help` lists them: variable, default, meaning.
pub fn help() -> String {
    let mut out = String::from(
        "Settings: embedded defaults, then the --config file ([section] key), then these \
         environment variables, then flags.\n\n",
    );
    for s in SETTINGS {
        out.push_str(&format!(
            "  {:<28} {:<20} {}\n",
            s.env,
            s.default.unwrap_or("(unset)"),
            s.help
        ));
    }
    out
}
