//! The segment log: the only module that touches segment files.
//!
//! - [`format`]: byte layout, pure encode/decode.
//! - [`catalog`]: the read side, every segment mapped with the offset of each frame.
//! - `scan`: the one check of one segment; `link`: the checks between two segments.
//! - `open`: opening a data directory: every segment checked and folded, a torn tail cut.
//! - `inspect`: the read-only scans the offline tool uses (`scan_log`, `verify_log`).
//! - [`repair`]: quarantining damage (`held`: what damaged bytes still hold), backups;
//!   `breaks`: the record of chain breaks; [`damage`]: what a corruption is, typed.
//! - `cut`: start-up's cut of a torn tail; `disk`: the seam every change to the files goes
//!   through.
//! - `dir`: the lock, the segment listing, mappings, private directories.
//! - [`writer`]: the single appender; one write and one fdatasync per group of events.

mod backup;
mod breaks;
pub mod catalog;
pub mod cut;
pub mod damage;
mod dir;
mod disk;
pub mod format;
mod held;
mod inspect;
mod link;
mod open;
#[cfg(test)]
mod power_cut;
pub mod repair;
pub mod retention;
mod scan;
pub mod writer;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use backup::{backup, Backup};
pub use catalog::{gaps, Catalog, CatalogChange, FrameIndex, Gap, GapReason, SegmentView};
pub use cut::Seqs;
pub use damage::Damage;
pub use dir::{create_private_dir, list_segments, lock_dir, map_file, LOCK_FILE_NAME};
pub use disk::Disk;
pub use inspect::{scan_log, scan_log_parallel, verify_log, SegmentInfo};
pub use open::{open, open_with, Opened};
pub use repair::{repair, Break, BreakKind, Breaks, Repaired};
pub use writer::{LogWriter, Written};

/// Where the segment files live, and when to roll to a new one.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// The `segments/` directory.
    pub dir: PathBuf,
    /// Roll to a new segment before a write would take the active one past this size.
    pub segment_max_bytes: u64,
    /// Roll to a new segment once the active one is this old and holds at least one event.
    pub segment_max_age: Duration,
    /// Where the writer writes: the file system (`Disk::real()`), or in tests a simulated disk.
    pub disk: Disk,
}

/// Errors of the storage layer. Messages name the file and offset that matter.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// An operating-system call failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done, such as `write` or `fdatasync`.
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Bytes that were once acknowledged do not check out. Start-up stops here.
    #[error("corrupt segment {path} at offset {offset}: {damage}")]
    Corrupt {
        /// The damaged segment file.
        path: PathBuf,
        /// Byte offset of the first bad structure.
        offset: u64,
        /// What is wrong.
        damage: Damage,
    },
    /// Another process holds the data directory.
    #[error(
        "the data directory is in use by another mcplog process (it holds the lock on {path})"
    )]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// A group that, written at the end of the active segment, would take it past
    /// [`writer::SEGMENT_BYTES_LIMIT`]. Nothing was written and the writer goes on; configuration
    /// keeps groups far smaller, so only a caller that skipped its limits meets this.
    #[error(
        "a group of {bytes} bytes would take {} past {} bytes",
        .segment.display(),
        writer::SEGMENT_BYTES_LIMIT
    )]
    GroupTooLarge {
        /// The group's encoded size.
        bytes: usize,
        /// The active segment.
        segment: PathBuf,
    },
    /// An earlier write or fdatasync failed and could not be undone; the writer refuses to go on
    /// until the process restarts and recovery checks the files.
    #[error("the log writer stopped after an earlier failure: {0}")]
    Poisoned(String),
}

impl StorageError {
    pub(crate) fn corrupt(path: &Path, offset: u64, damage: Damage) -> StorageError {
        StorageError::Corrupt {
            path: path.to_path_buf(),
            offset,
            damage,
        }
    }

    pub(crate) fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StorageError {
        let path = path.to_path_buf();
        move |source| StorageError::Io { op, path, source }
    }

    /// The error as a client may see it: file names without the directories they sit in.
    pub fn public_message(&self) -> String {
        let name = |path: &Path| {
            path.file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
        };
        match self {
            StorageError::Io { op, path, source } => format!("{op} {}: {source}", name(path)),
            StorageError::Corrupt {
                path,
                offset,
                damage,
            } => format!(
                "corrupt segment {} at offset {offset}: {damage}",
                name(path)
            ),
            StorageError::Locked { .. } => "the data directory is in use".to_owned(),
            StorageError::GroupTooLarge { bytes, segment } => format!(
                "a group of {bytes} bytes would take {} past {} bytes",
                name(segment),
                writer::SEGMENT_BYTES_LIMIT
            ),
            StorageError::Poisoned(_) => {
                "the log writer stopped after an earlier failure; restart the server".to_owned()
            }
        }
    }

    /// Whether the failure is a full disk or quota, which operators fix by freeing space.
    pub fn is_no_space(&self) -> bool {
        match self {
            StorageError::Io { source, .. } => {
                matches!(
                    source.kind(),
                    std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
                )
            }
            _ => false,
        }
    }
}

/// The file name of the segment whose first seq is `first_seq`: 20 zero-padded digits, so that
/// names sort as numbers do.
pub fn segment_file_name(first_seq: u64) -> String {
    format!("{first_seq:020}.seg")
}

/// The first seq named by a segment file name, or `None` if the name is not a segment's.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip_and_sort() {
        assert_eq!(segment_file_name(42), "00000000000000000042.seg");
        assert_eq!(
            parse_segment_file_name(&segment_file_name(u64::MAX)),
            Some(u64::MAX)
        );
        assert_eq!(parse_segment_file_name("42.seg"), None);
        assert_eq!(parse_segment_file_name("0000000000000000004x.seg"), None);
        assert!(segment_file_name(9) < segment_file_name(10));
    }
}

/// The committed example segment of `storage-format.md`: built here, kept as a fixture, and
/// shown in the document as a hex dump, so code, fixture and document cannot drift apart.
#[cfg(test)]
mod fixture {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::format::{decode_at, Decoded, HEADER_BYTES};
    use super::*;
    use crate::event::{Action, StoredEvent};

    const T0_US: u64 = 1_763_900_000_000_000;

    fn fixture_path() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/segment-v1.seg")
    }

    /// A sealed segment of two events, built deterministically.
    fn build() -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            dir: dir.path().to_path_buf(),
            segment_max_bytes: 1 << 20,
            segment_max_age: Duration::from_secs(60),
            disk: Disk::real(),
        };
        let mut opened = open(&config, T0_US, |_| {}).unwrap();
        let event = |seq: u64, write_index: u32, action, timestamp, body| StoredEvent {
            seq,
            write_index,
            received_at_us: T0_US + 500_000,
            key_id: [0x9f, 0xe6, 0xb3, 0x7c, 0x0a, 0x29, 0x06, 0x02],
            action,
            timestamp,
            interaction_id: "abc",
            mcp_id: "ocr",
            event_id: None,
            body,
        };
        let first = [
            event(
                1,
                0,
                Action::Start,
                1763900000.25,
                r#"{"action":"interaction_start","interaction_id":"abc","mcp_id":"ocr","timestamp":1763900000.25}"#,
            ),
            event(
                2,
                1,
                Action::Complete,
                1763900002.5,
                r#"{"action":"interaction_complete","interaction_id":"abc","mcp_id":"ocr","timestamp":1763900002.5}"#,
            ),
        ];
        opened
            .writer
            .append(&first, T0_US + 500_000)
            .result
            .unwrap();
        // A write past segment_max_age seals the first segment before it lands in the second.
        let later = [event(3, 0, Action::Progress, 1763900001.0, "{}")];
        opened
            .writer
            .append(&later, T0_US + 120_000_000)
            .result
            .unwrap();
        std::fs::read(dir.path().join(segment_file_name(1))).unwrap()
    }

    #[test]
    fn the_fixture_is_what_this_build_writes_and_reads() {
        let built = build();
        if std::env::var_os("MCPLOG_UPDATE_FIXTURES").is_some() {
            std::fs::write(fixture_path(), &built).unwrap();
            println!("{}", crate::hex::dump(&built));
        }
        let committed = std::fs::read(fixture_path()).expect("tests/fixtures/segment-v1.seg");
        assert_eq!(
            built, committed,
            "the writer no longer writes the committed v1 bytes"
        );
        let mut offset = HEADER_BYTES;
        let mut seqs = Vec::new();
        loop {
            match decode_at(&committed, offset) {
                Decoded::Frame { frame, end } => {
                    seqs.push(frame.seq);
                    offset = end;
                }
                Decoded::Footer(footer) => {
                    assert_eq!(footer.last_seq, 2);
                    break;
                }
                other => panic!("unexpected {other:?} at {offset}"),
            }
        }
        assert_eq!(seqs, vec![1, 2]);
    }

    #[test]
    fn storage_format_md_shows_the_fixture_byte_for_byte() {
        let committed = std::fs::read(fixture_path()).unwrap();
        let doc = std::fs::read_to_string(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("storage-format.md"),
        )
        .unwrap();
        assert!(
            doc.contains(&crate::hex::dump(&committed)),
            "storage-format.md does not hold the fixture's hex dump"
        );
    }
}
