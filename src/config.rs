//! Server configuration: embedded defaults (SPEC §9), overridden by `MCPLOG_*` environment
//! variables, overridden by command-line flags.

use std::path::PathBuf;
use std::time::Duration;

/// Everything the server needs to start.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `[storage] data_dir`: where segments and keys live.
    pub data_dir: PathBuf,
    /// `[storage] segment_max_bytes`: roll the active segment before it passes this size.
    pub segment_max_bytes: u64,
    /// `[storage] segment_max_age`: roll the active segment once it is this old.
    pub segment_max_age: Duration,
    /// `[api] bind`: the listening address.
    pub bind: String,
    /// `[api] event_bytes_max`: largest single-event body, after decompression.
    pub event_bytes_max: usize,
    /// `[api] batch_events_max`: most events in one batch request.
    pub batch_events_max: usize,
    /// `[api] batch_bytes_max`: largest batch body, after decompression.
    pub batch_bytes_max: usize,
    /// `[api] queue_events_max`: most events accepted but not yet durable.
    pub queue_events_max: usize,
    /// `[projection] stale_after`: an active interaction first seen longer ago than this is
    /// counted as stale.
    pub stale_after: Duration,
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

impl Default for Config {
    fn default() -> Config {
        Config {
            data_dir: PathBuf::from("./data"),
            segment_max_bytes: 64 * 1024 * 1024,
            segment_max_age: Duration::from_secs(24 * 3600),
            bind: "127.0.0.1:8080".to_owned(),
            event_bytes_max: 1024 * 1024,
            batch_events_max: 1000,
            batch_bytes_max: 16 * 1024 * 1024,
            queue_events_max: 10_000,
            stale_after: Duration::from_secs(3600),
        }
    }
}

impl Config {
    /// Applies `MCPLOG_*` variables found by `lookup` (the process environment in production).
    pub fn apply_env(
        &mut self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        let get = |name: &str| lookup(name).map(|v| (name.to_owned(), v));
        if let Some((_, v)) = get("MCPLOG_DATA_DIR") {
            self.data_dir = PathBuf::from(v);
        }
        if let Some((_, v)) = get("MCPLOG_BIND") {
            self.bind = v;
        }
        if let Some((k, v)) = get("MCPLOG_SEGMENT_MAX_BYTES") {
            self.segment_max_bytes = parse_number(&k, &v)?;
        }
        if let Some((k, v)) = get("MCPLOG_SEGMENT_MAX_AGE") {
            self.segment_max_age =
                parse_duration(&v).map_err(|message| ConfigError { key: k, message })?;
        }
        if let Some((k, v)) = get("MCPLOG_EVENT_BYTES_MAX") {
            self.event_bytes_max = parse_number(&k, &v)?;
        }
        if let Some((k, v)) = get("MCPLOG_BATCH_EVENTS_MAX") {
            self.batch_events_max = parse_number(&k, &v)?;
        }
        if let Some((k, v)) = get("MCPLOG_BATCH_BYTES_MAX") {
            self.batch_bytes_max = parse_number(&k, &v)?;
        }
        if let Some((k, v)) = get("MCPLOG_STALE_AFTER") {
            self.stale_after =
                parse_duration(&v).map_err(|message| ConfigError { key: k, message })?;
        }
        if let Some((k, v)) = get("MCPLOG_QUEUE_EVENTS_MAX") {
            self.queue_events_max = parse_number(&k, &v)?;
        }
        self.check()
    }

    /// Checks the relations between values.
    pub fn check(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, message: String| {
            Err(ConfigError {
                key: key.to_owned(),
                message,
            })
        };
        if self.segment_max_bytes < 4096 || self.segment_max_bytes > u64::from(u32::MAX) {
            return bad(
                "segment_max_bytes",
                format!("{} is outside 4096..=4294967295", self.segment_max_bytes),
            );
        }
        if self.event_bytes_max == 0 || self.event_bytes_max > 16 * 1024 * 1024 {
            return bad(
                "event_bytes_max",
                format!("{} is outside 1..=16777216", self.event_bytes_max),
            );
        }
        if self.batch_events_max == 0 || self.batch_events_max > self.queue_events_max {
            return bad(
                "batch_events_max",
                format!(
                    "{} must be at least 1 and at most queue_events_max ({})",
                    self.batch_events_max, self.queue_events_max
                ),
            );
        }
        if self.batch_bytes_max < self.event_bytes_max || self.batch_bytes_max > 256 * 1024 * 1024 {
            return bad(
                "batch_bytes_max",
                format!(
                    "{} must be between event_bytes_max ({}) and 268435456",
                    self.batch_bytes_max, self.event_bytes_max
                ),
            );
        }
        if self.queue_events_max == 0 || self.queue_events_max > 1_000_000 {
            return bad(
                "queue_events_max",
                format!("{} is outside 1..=1000000", self.queue_events_max),
            );
        }
        Ok(())
    }
}

fn parse_number<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, ConfigError> {
    value.trim().parse().map_err(|_| ConfigError {
        key: key.to_owned(),
        message: format!("{value:?} is not a whole number"),
    })
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
    duration.ok_or_else(|| format!("{text:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }

    #[test]
    fn environment_overrides_defaults_and_names_the_bad_key() {
        let mut config = Config::default();
        config
            .apply_env(|k| (k == "MCPLOG_SEGMENT_MAX_BYTES").then(|| "65536".to_owned()))
            .unwrap();
        assert_eq!(config.segment_max_bytes, 65536);
        let err = Config::default()
            .apply_env(|k| (k == "MCPLOG_QUEUE_EVENTS_MAX").then(|| "lots".to_owned()))
            .unwrap_err();
        assert_eq!(err.key, "MCPLOG_QUEUE_EVENTS_MAX");
    }
}
