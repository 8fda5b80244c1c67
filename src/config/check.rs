//! The relations between settings, which no one row's range can state. Each value's own range
//! is checked as it is read, from its row of the table (`table.rs`).

use crate::auth::SECRET_BYTES_MIN;

use super::{Config, ConfigError, RETENTION_FLOOR};

/// The error for `key`.
fn bad(key: &str, message: String) -> Result<(), ConfigError> {
    Err(ConfigError {
        key: key.to_owned(),
        message,
    })
}

impl Config {
    /// Checks the relations between values, and what only the final value can say (a flag may
    /// set the data directory or the address): run once on the configuration as layered, before
    /// anything starts.
    pub fn check(&self) -> Result<(), ConfigError> {
        self.places_given()?;
        self.batch_within_queue_and_above_an_event()?;
        self.secrets_long_enough()?;
        self.retention_keeps_something()?;
        self.cluster_named()
    }

    /// The data directory is named (empty would put the keys, the secret and the segments in the
    /// current directory), and the address is `HOST:PORT`, so that a bad one is a configuration
    /// error rather than a failure to listen.
    fn places_given(&self) -> Result<(), ConfigError> {
        if self.storage.data_dir.as_os_str().is_empty() {
            return bad(
                "storage.data_dir",
                "is empty; name a directory (\"./data\" by default)".to_owned(),
            );
        }
        let bind = &self.api.bind;
        let port_ok = bind
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.trim().is_empty() && port.parse::<u16>().is_ok());
        if !port_ok {
            return bad(
                "api.bind",
                format!("{bind:?} is not HOST:PORT, such as 127.0.0.1:8080 or localhost:0"),
            );
        }
        Ok(())
    }

    /// A batch fits the queue, and holds at least one event of the largest size.
    fn batch_within_queue_and_above_an_event(&self) -> Result<(), ConfigError> {
        let api = &self.api;
        if api.batch_events_max > api.queue_events_max {
            return bad(
                "api.batch_events_max",
                format!(
                    "{} must be at most queue_events_max ({})",
                    api.batch_events_max, api.queue_events_max
                ),
            );
        }
        if api.batch_bytes_max < api.event_bytes_max {
            return bad(
                "api.batch_bytes_max",
                format!(
                    "{} must be at least event_bytes_max ({})",
                    api.batch_bytes_max, api.event_bytes_max
                ),
            );
        }
        Ok(())
    }

    /// Checked here too, so that a short secret stops start-up as a configuration error (exit 2)
    /// naming the key; the value is never shown.
    fn secrets_long_enough(&self) -> Result<(), ConfigError> {
        let keys = &self.keys;
        if keys
            .master_secret
            .as_ref()
            .is_some_and(|s| s.len() < SECRET_BYTES_MIN)
        {
            return bad(
                "security.master_secret",
                format!("must be at least {SECRET_BYTES_MIN} bytes (its value is not shown)"),
            );
        }
        if keys
            .previous_master_secrets
            .iter()
            .any(|s| s.len() < SECRET_BYTES_MIN)
        {
            return bad(
                "security.previous_master_secrets",
                format!(
                    "every entry must be at least {SECRET_BYTES_MIN} bytes, as a master secret is"
                ),
            );
        }
        Ok(())
    }

    /// A retention or cap that would delete nearly everything at each start is almost always a
    /// typo: refused unless `retention_override` says it is meant.
    fn retention_keeps_something(&self) -> Result<(), ConfigError> {
        let storage = &self.storage;
        if storage.retention_override {
            return Ok(());
        }
        if storage.retention < RETENTION_FLOOR {
            return bad(
                "storage.retention",
                format!(
                    "{:?} is below {:?}: every start would delete nearly all sealed segments; \
                     set storage.retention_override = true (MCPLOG_RETENTION_OVERRIDE=true) if that is meant",
                    storage.retention, RETENTION_FLOOR
                ),
            );
        }
        for (key, cap) in [
            ("storage.max_records", storage.max_records),
            ("storage.max_bytes", storage.max_bytes),
        ] {
            if cap == Some(0) {
                return bad(
                    key,
                    "0 would delete every sealed segment at each start; leave it unset for no \
                     cap, or set storage.retention_override = true if that is meant"
                        .to_owned(),
                );
            }
        }
        Ok(())
    }

    /// A cluster's URL, if set, says something, and its stream name is one JetStream takes.
    fn cluster_named(&self) -> Result<(), ConfigError> {
        let cluster = &self.cluster;
        if cluster
            .nats_url
            .as_deref()
            .is_some_and(|url| url.trim().is_empty())
        {
            return bad(
                "cluster.nats_url",
                "is empty; leave it unset for a single node".to_owned(),
            );
        }
        let stream_ok = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        if cluster.stream.is_empty()
            || cluster.stream.len() > STREAM_NAME_BYTES_MAX
            || !cluster.stream.chars().all(stream_ok)
        {
            return bad(
                "cluster.stream",
                format!(
                    "{:?} must be 1 to {STREAM_NAME_BYTES_MAX} letters, digits, - or _",
                    cluster.stream
                ),
            );
        }
        Ok(())
    }
}

/// The longest stream name accepted, in bytes.
const STREAM_NAME_BYTES_MAX: usize = 64;
