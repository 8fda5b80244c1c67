//! The embedded defaults: every field of [`Config`] set once, from its row of the table, read
//! by the same rules (and checked against the same range) as a value from the file or the
//! environment.

use std::collections::HashMap;
use std::path::PathBuf;

use super::settings::{flag, level, log_format, Setting};
use super::{
    ApiSettings, ClusterSettings, Config, KeySettings, LoggingSettings, ProjectionSettings,
    RateLimits, StorageSettings,
};
use crate::redact::RedactionConfig;

/// The row of `section.name`; panics if there is none: the table and these defaults disagree
/// (a test builds them).
fn row(section: &str, name: &str) -> &'static Setting {
    super::setting(section, name).unwrap_or_else(|| panic!("no setting {section}.{name}"))
}

impl Default for Config {
    /// Every setting at its default: no rate limits, the default redaction, no static keys.
    fn default() -> Config {
        Config {
            storage: storage(),
            api: api(),
            projection: ProjectionSettings {
                stale_after: row("projection", "stale_after").default_duration(),
            },
            keys: keys(),
            rate_limits: RateLimits {
                role_quotas: HashMap::new(),
                key_quotas: HashMap::new(),
            },
            redaction: RedactionConfig::default(),
            cluster: cluster(),
            logging: LoggingSettings {
                level: row("logging", "level").default_as(level),
                format: row("logging", "format").default_as(log_format),
            },
        }
    }
}

impl Setting {
    fn default_count(&self) -> u64 {
        self.default_as(|t| self.count(t))
    }

    fn default_size(&self) -> usize {
        self.default_as(|t| self.size(t))
    }

    fn default_duration(&self) -> std::time::Duration {
        self.default_as(|t| self.duration(t))
    }
}

fn storage() -> StorageSettings {
    let row = |name| row("storage", name);
    StorageSettings {
        data_dir: row("data_dir").default_as(|t| Ok(PathBuf::from(t))),
        segment_max_bytes: row("segment_max_bytes").default_count(),
        segment_max_age: row("segment_max_age").default_duration(),
        retention: row("retention").default_duration(),
        retention_override: row("retention_override").default_as(flag),
        cleanup_interval: row("cleanup_interval").default_duration(),
        // Unset in the table: no cap.
        max_records: None,
        max_bytes: None,
    }
}

fn api() -> ApiSettings {
    let row = |name| row("api", name);
    ApiSettings {
        bind: row("bind").default_as(|t| Ok(t.to_owned())),
        event_bytes_max: row("event_bytes_max").default_size(),
        batch_events_max: row("batch_events_max").default_size(),
        interaction_events_max: row("interaction_events_max").default_size(),
        batch_bytes_max: row("batch_bytes_max").default_size(),
        queue_events_max: row("queue_events_max").default_size(),
        metrics_auth: row("metrics_auth").default_as(flag),
        max_connections: row("max_connections").default_size(),
        header_read_timeout: row("header_read_timeout").default_duration(),
        body_read_timeout: row("body_read_timeout").default_duration(),
        request_timeout: row("request_timeout").default_duration(),
        shutdown_grace: row("shutdown_grace").default_duration(),
        write_timeout: row("write_timeout").default_duration(),
        replay_streams_per_key_max: row("replay_streams_per_key_max").default_size(),
        replay_heartbeat: row("replay_heartbeat").default_duration(),
        clock_skew_max: row("clock_skew_max").default_duration(),
    }
}

fn keys() -> KeySettings {
    let row = |name| row("security", name);
    KeySettings {
        // Unset in the table: `<data>/master.secret`, and no previous ones.
        master_secret: None,
        previous_master_secrets: Vec::new(),
        api_key_cache_ttl: row("api_key_cache_ttl").default_duration(),
        key_lifetime_max: row("key_lifetime_max").default_duration(),
        static_keys: Vec::new(),
    }
}

fn cluster() -> ClusterSettings {
    let row = |name| row("cluster", name);
    ClusterSettings {
        // Unset in the table: a single node, and no NATS credentials.
        nats_url: None,
        stream: row("stream").default_as(|t| Ok(t.to_owned())),
        replicas: row("replicas").default_count(),
        token: None,
        credentials: None,
        ingest_deadline: row("ingest_deadline").default_duration(),
        ready_lag_groups: row("ready_lag_groups").default_count(),
        adopt_rules: row("adopt_rules").default_as(flag),
    }
}
