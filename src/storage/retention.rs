//! Retention: which whole sealed segments to delete, and deleting them.
//!
//! The rule (storage-format.md, "Retention"): a sealed segment whose newest event was received
//! longer ago than `retention` is deleted; then, while more than `max_records` events or
//! `max_bytes` bytes are retained, the oldest sealed segment is deleted. Receive times are the
//! server's and never go backwards, so the segments to delete are always the oldest ones, and the
//! active segment is never among them.

use std::path::PathBuf;
use std::time::Duration;

use super::catalog::Catalog;
use super::{Disk, StorageError};

/// What retention keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Delete sealed segments whose newest event is older than this.
    pub retention: Duration,
    /// Keep at most this many events (whole segments are dropped, so it may keep fewer).
    pub max_records: Option<u64>,
    /// Keep at most this many bytes of segment files.
    pub max_bytes: Option<u64>,
}

/// How many of the oldest segments the policy deletes at `now_us`.
pub fn select(catalog: &Catalog, now_us: u64, policy: &Policy) -> usize {
    let segments = catalog.segments();
    // The last segment is the active one and is never deleted.
    let sealed = segments.len().saturating_sub(1);
    let cutoff =
        now_us.saturating_sub(u64::try_from(policy.retention.as_micros()).unwrap_or(u64::MAX));
    let mut drop = segments[..sealed]
        .iter()
        .take_while(|s| s.footer.is_some() && s.received_max_us < cutoff)
        .count();
    let mut events: u64 = segments[drop..].iter().map(|s| s.frames.len()).sum();
    let mut bytes: u64 = segments[drop..].iter().map(|s| s.file_bytes()).sum();
    while drop < sealed
        && (policy.max_records.is_some_and(|m| events > m)
            || policy.max_bytes.is_some_and(|m| bytes > m))
    {
        events -= segments[drop].frames.len();
        bytes -= segments[drop].file_bytes();
        drop += 1;
    }
    drop
}

/// Deletes segment files, oldest first, and makes the removals durable. A crash part-way leaves a
/// log that starts at a later segment, which recovery accepts.
pub fn delete(paths: &[PathBuf], dir: &std::path::Path, disk: &Disk) -> Result<(), StorageError> {
    for path in paths {
        disk.remove(path)
            .map_err(StorageError::io("remove", path))?;
    }
    if !paths.is_empty() {
        disk.sync_dir(dir)
            .map_err(StorageError::io("fsync directory", dir))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::storage::catalog::{FrameIndex, SegmentView};
    use crate::storage::format::Footer;

    fn catalog(segments: &[(u64, usize, bool)]) -> Catalog {
        // (newest receive time in seconds, events, sealed)
        let map = Arc::new(
            memmap2::MmapMut::map_anon(1)
                .unwrap()
                .make_read_only()
                .unwrap(),
        );
        let mut first = 1;
        let views = segments
            .iter()
            .map(|&(received_s, events, sealed)| {
                let view = SegmentView {
                    first_seq: first,
                    path: PathBuf::from(format!("{first}.seg")),
                    map: Arc::clone(&map),
                    frames: {
                        let mut frames = FrameIndex::default();
                        (0..events).for_each(|_| frames.push(0));
                        frames
                    },
                    data_len: 100 * events as u64,
                    footer: sealed.then_some(Footer {
                        last_seq: first + events as u64 - 1,
                        data_end: 0,
                        received_min_us: 0,
                        received_max_us: received_s * 1_000_000,
                        segment_hash: [0; 32],
                    }),
                    received_max_us: received_s * 1_000_000,
                    received_min_us: 0,
                };
                first += events as u64;
                view
            })
            .collect();
        Catalog::new(views)
    }

    #[test]
    fn old_sealed_segments_go_and_the_active_one_stays() {
        let policy = Policy {
            retention: Duration::from_secs(100),
            max_records: None,
            max_bytes: None,
        };
        let c = catalog(&[(10, 5, true), (50, 5, true), (150, 5, true), (20, 5, false)]);
        assert_eq!(select(&c, 200_000_000, &policy), 2, "received before 100 s");
        assert_eq!(
            select(&c, 1_000_000_000, &policy),
            3,
            "never the active segment, however old"
        );
        assert_eq!(select(&c, 100_000_000, &policy), 0);
    }

    #[test]
    fn caps_drop_the_oldest_whole_segments() {
        let by_records = Policy {
            retention: Duration::from_secs(1_000_000),
            max_records: Some(12),
            max_bytes: None,
        };
        let c = catalog(&[(10, 5, true), (50, 5, true), (150, 5, true), (20, 5, false)]);
        assert_eq!(select(&c, 200_000_000, &by_records), 2, "20 events → 10");
        let by_bytes = Policy {
            retention: Duration::from_secs(1_000_000),
            max_records: None,
            max_bytes: Some(1000),
        };
        assert_eq!(
            select(&c, 200_000_000, &by_bytes),
            3,
            "580 + 580 + 580 + 500 bytes, footers counted: 1080 after two is still over"
        );
        let tiny = Policy {
            retention: Duration::from_secs(1_000_000),
            max_records: Some(0),
            max_bytes: None,
        };
        assert_eq!(
            select(&c, 200_000_000, &tiny),
            3,
            "the active segment stays even over the cap"
        );
    }
}
