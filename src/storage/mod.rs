//! The segment log: the only module that touches segment files.
//!
//! - [`format`]: byte layout, pure encode/decode.
//! - [`catalog`]: the read side, every segment mapped with the offset of each frame.
//! - [`recovery`]: opening a data directory, checking every frame, truncating a torn tail.
//! - [`writer`]: the single appender; one write and one fdatasync per group of events.

pub mod catalog;
pub mod format;
pub mod recovery;
pub mod writer;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use catalog::{Catalog, CatalogChange, SegmentView};
pub use recovery::{lock_dir, open, Opened};
pub use writer::LogWriter;

/// Where the segment files live, and when to roll to a new one.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// The `segments/` directory.
    pub dir: PathBuf,
    /// Roll to a new segment before a write would take the active one past this size.
    pub segment_max_bytes: u64,
    /// Roll to a new segment once the active one is this old and holds at least one event.
    pub segment_max_age: Duration,
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
    #[error("corrupt segment {path} at offset {offset}: {reason}")]
    Corrupt {
        /// The damaged segment file.
        path: PathBuf,
        /// Byte offset of the first bad structure.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// Another process holds the data directory.
    #[error("data directory {path} is in use by another mcplog process")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// An earlier write or fdatasync failed and could not be undone; the writer refuses to go on
    /// until the process restarts and recovery checks the files.
    #[error("the log writer stopped after an earlier failure: {0}")]
    Poisoned(String),
}

impl StorageError {
    pub(crate) fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StorageError {
        let path = path.to_path_buf();
        move |source| StorageError::Io { op, path, source }
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

/// Flushes a directory entry change (a created, renamed or removed file) to disk.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StorageError::io("fsync directory", dir))
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
