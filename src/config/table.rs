//! The rows of the settings table, and the ceilings that the storage format's limits bound.

use std::time::Duration;

use super::settings::{Durations, Field, Numbers, Setting};
use super::DURATION_CEILING;
use crate::engine::replica::FRAME_FIXED_BYTES_MAX;
use crate::engine::GROUP_BYTES_MAX;
use crate::storage::format::{
    FOOTER_BYTES, FRAME_HEADER_BYTES, FRAME_PAYLOAD_BYTES_MAX, HEADER_BYTES,
};
use crate::storage::writer::SEGMENT_BYTES_LIMIT;

/// The smallest `segment_max_bytes`, in bytes.
const SEGMENT_BYTES_MIN: u64 = 4096;
/// The largest `segment_max_bytes`, in bytes.
const SEGMENT_BYTES_CEILING: u64 = 1 << 30;
/// The largest `event_bytes_max`, in bytes.
const EVENT_BYTES_CEILING: u64 = 16 * 1024 * 1024;
/// The largest `batch_bytes_max`, in bytes.
const BATCH_BYTES_CEILING: u64 = 256 * 1024 * 1024;
/// The largest `queue_events_max`, and so `batch_events_max`, in events.
const QUEUE_EVENTS_CEILING: u64 = 1_000_000;
/// The largest `max_connections`.
const CONNECTIONS_CEILING: u64 = 1_000_000;
/// The shortest read, write or heartbeat interval: below it a connection could not answer at all.
const TIMEOUT_MIN: Duration = Duration::from_millis(10);
/// A day: the ceiling of every timeout and interval a connection or cache waits on; longer is
/// never meant and would hold resources for good.
const DAY: Duration = Duration::from_secs(86_400);
/// A year: the ceiling of the intervals the log's upkeep runs at.
const YEAR: Duration = Duration::from_secs(365 * 86_400);
/// A request, connection or cache timeout: 10ms to a day.
const TIMEOUTS: Option<Durations> = durations(TIMEOUT_MIN, DAY);
/// `storage.segment_max_age`: a segment at least a second old (0 would roll one per write), at
/// most a year.
const SEGMENT_AGES: Option<Durations> = durations(Duration::from_secs(1), YEAR);
/// `cluster.ingest_deadline`: within JetStream's 2-minute deduplication window, so a retry is
/// always recognized.
const INGEST_DEADLINES: Option<Durations> = Some(Durations {
    min: Duration::from_millis(100),
    max: Some(Duration::from_secs(60)),
});

/// The largest `cluster.ready_lag_groups`: a node that far behind is never ready in any sense.
const READY_LAG_CEILING: u64 = 1_000_000;

// An event is one frame: its body, the ids it spells (no longer than the body) and the fixed
// fields must fit a frame's payload, or the writer would refuse what the API accepted.
const _: () = assert!(
    2 * EVENT_BYTES_CEILING + FRAME_FIXED_BYTES_MAX as u64
        <= FRAME_HEADER_BYTES as u64 + FRAME_PAYLOAD_BYTES_MAX as u64
);
// A segment rolls before a group that would take it past `segment_max_bytes`, so it holds at most
// that much and then one group (a group larger than the setting goes alone into a fresh segment).
// A group is at most `GROUP_BYTES_MAX` of submissions and one more, a batch at most; its frames
// are at most twice its bodies and the fixed fields of each event. All of it must stay within
// what a segment's u32 offsets address.
const _: () = assert!(
    HEADER_BYTES as u64
        + SEGMENT_BYTES_CEILING
        + 2 * (GROUP_BYTES_MAX as u64 + BATCH_BYTES_CEILING)
        + QUEUE_EVENTS_CEILING * FRAME_FIXED_BYTES_MAX as u64
        + FOOTER_BYTES as u64
        <= SEGMENT_BYTES_LIMIT
);

/// Whole numbers from `min` to `max` of `unit`.
const fn numbers(min: u64, max: u64, unit: &'static str) -> Option<Numbers> {
    Some(Numbers {
        min,
        max: Some(max),
        unit,
    })
}

/// One or more of `unit`.
const fn at_least_one(unit: &'static str) -> Option<Numbers> {
    Some(Numbers {
        min: 1,
        max: None,
        unit,
    })
}

/// Durations from `min` to `max`.
const fn durations(min: Duration, max: Duration) -> Option<Durations> {
    Some(Durations {
        min,
        max: Some(max),
    })
}

/// Durations up to `max`.
const fn at_most(max: Duration) -> Option<Durations> {
    durations(Duration::ZERO, max)
}

/// A row: `group.name` is its field in [`super::Config`] and its key in the section; a number's
/// or duration's kind takes its range (`None`: any of its kind).
macro_rules! setting {
    ($section:literal, $group:ident . $name:ident, $env:literal, $default:expr,
     $kind:ident $(($range:expr))?, $help:literal) => {
        Setting {
            section: $section,
            name: stringify!($name),
            env: $env,
            default: $default,
            help: $help,
            field: Field::$kind(|c| &mut c.$group.$name $(, $range)?),
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
        Count(numbers(SEGMENT_BYTES_MIN, SEGMENT_BYTES_CEILING, "bytes")),
        "roll the active segment before it passes this many bytes"
    ),
    setting!(
        "storage",
        storage.segment_max_age,
        "MCPLOG_SEGMENT_MAX_AGE",
        Some("1d"),
        Duration(SEGMENT_AGES),
        "roll the active segment once it is this old"
    ),
    setting!(
        "storage",
        storage.retention,
        "MCPLOG_RETENTION",
        Some("30d"),
        Duration(at_most(DURATION_CEILING)),
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
        Duration(durations(TIMEOUT_MIN, YEAR)),
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
        Size(numbers(1, EVENT_BYTES_CEILING, "bytes")),
        "largest single event body, after decompression"
    ),
    setting!(
        "api",
        api.interaction_events_max,
        "MCPLOG_INTERACTION_EVENTS_MAX",
        Some("10000"),
        Size(numbers(1, u32::MAX as u64, "events")),
        "most events one interaction may hold; an event past it is refused (409 interaction_full)"
    ),
    setting!(
        "api",
        api.batch_events_max,
        "MCPLOG_BATCH_EVENTS_MAX",
        Some("1000"),
        Size(numbers(1, QUEUE_EVENTS_CEILING, "events")),
        "most events in a batch, at most queue_events_max"
    ),
    setting!(
        "api",
        api.batch_bytes_max,
        "MCPLOG_BATCH_BYTES_MAX",
        Some("16777216"),
        Size(numbers(1, BATCH_BYTES_CEILING, "bytes")),
        "largest batch body, after decompression, at least event_bytes_max"
    ),
    setting!(
        "api",
        api.queue_events_max,
        "MCPLOG_QUEUE_EVENTS_MAX",
        Some("10000"),
        Size(numbers(1, QUEUE_EVENTS_CEILING, "events")),
        "events accepted but not yet durable; beyond it, 503"
    ),
    setting!(
        "api",
        api.max_connections,
        "MCPLOG_MAX_CONNECTIONS",
        Some("1024"),
        Size(numbers(1, CONNECTIONS_CEILING, "connections")),
        "most open client connections; more wait in the kernel's accept queue"
    ),
    setting!(
        "api",
        api.header_read_timeout,
        "MCPLOG_HEADER_READ_TIMEOUT",
        Some("10s"),
        Duration(TIMEOUTS),
        "time to send a request's headers, and a kept-alive connection's idle time"
    ),
    setting!(
        "api",
        api.body_read_timeout,
        "MCPLOG_BODY_READ_TIMEOUT",
        Some("30s"),
        Duration(TIMEOUTS),
        "time to send an ingest request's body (408 after)"
    ),
    setting!(
        "api",
        api.request_timeout,
        "MCPLOG_REQUEST_TIMEOUT",
        Some("30s"),
        Duration(TIMEOUTS),
        "time for a whole request on every route but the replay stream (503 after)"
    ),
    setting!(
        "api",
        api.shutdown_grace,
        "MCPLOG_SHUTDOWN_GRACE",
        Some("10s"),
        Duration(at_most(DAY)),
        "time requests in flight at SIGTERM or SIGINT get to finish"
    ),
    setting!(
        "api",
        api.write_timeout,
        "MCPLOG_WRITE_TIMEOUT",
        Some("30s"),
        Duration(TIMEOUTS),
        "how long a write to a client may make no progress before the connection is cut"
    ),
    setting!(
        "api",
        api.replay_streams_per_key_max,
        "MCPLOG_REPLAY_STREAMS_PER_KEY_MAX",
        Some("8"),
        Size(at_least_one("streams")),
        "most replay streams one key may have open at once (429 beyond)"
    ),
    setting!(
        "api",
        api.replay_heartbeat,
        "MCPLOG_REPLAY_HEARTBEAT",
        Some("15s"),
        Duration(TIMEOUTS),
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
        Duration(at_most(YEAR)),
        "how far ahead of the server's clock an event's timestamp may be"
    ),
    setting!(
        "projection",
        projection.stale_after,
        "MCPLOG_STALE_AFTER",
        Some("1h"),
        Duration(at_most(YEAR)),
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
        Duration(at_most(DAY)),
        "how long a verified signed key is remembered (revocation still applies at once)"
    ),
    setting!(
        "security",
        keys.key_lifetime_max,
        "MCPLOG_KEY_LIFETIME_MAX",
        Some("30d"),
        Duration(at_most(DURATION_CEILING)),
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
        Count(numbers(1, 5, "replicas")),
        "cluster mode: copies JetStream keeps of the stream when it creates it"
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
        Duration(INGEST_DEADLINES),
        "cluster mode: how long an event may wait for the stream, from its arrival, before a 503"
    ),
    setting!(
        "cluster",
        cluster.ready_lag_groups,
        "MCPLOG_NATS_READY_LAG_GROUPS",
        Some("256"),
        Count(numbers(0, READY_LAG_CEILING, "groups")),
        "cluster mode: /readyz answers 503 while this node has applied more than this many groups fewer than the stream holds"
    ),
    setting!(
        "cluster",
        cluster.adopt_rules,
        "MCPLOG_NATS_ADOPT_RULES",
        Some("false"),
        Flag,
        "cluster mode: true: write under this node's redaction rules and limits though the cluster's last group carries others, moving the cluster to them"
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
