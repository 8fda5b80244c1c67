//! The server's clock: the one place that reads the wall time, so that every other module takes
//! `now` as a value (and tests can pass any).

use std::time::{SystemTime, UNIX_EPOCH};

/// The server clock in microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
}
