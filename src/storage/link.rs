//! The checks between two segments, in one place for start-up, the read-only scan and verify:
//! the one before must be sealed, and the one after must continue its seqs and name its hash,
//! unless a recorded repair broke exactly that link.

use std::path::Path;

use super::format::Hash;
use super::repair::Breaks;
use super::{Damage, StorageError};

/// The end of a segment, as the next one must continue it.
#[derive(Debug, Clone, Copy)]
pub(super) struct End<'a> {
    /// The segment file.
    pub path: &'a Path,
    /// Its length in bytes (where a fault about its end is reported).
    pub bytes: u64,
    /// Whether it carries a valid footer.
    pub sealed: bool,
    /// Its last seq (its first seq minus one when it holds no frame).
    pub last_seq: u64,
    /// Its chain hash.
    pub hash: Hash,
}

/// A later segment file exists, so the one before it must have been sealed: the writer seals a
/// segment before it creates the next.
pub(super) fn check_sealed(prev: &End<'_>) -> Result<(), StorageError> {
    if prev.sealed {
        return Ok(());
    }
    Err(StorageError::corrupt(
        prev.path,
        prev.bytes,
        Damage::NotSealed,
    ))
}

/// The segment at `path`, whose header says `first_seq` and `prev_hash`, continues `prev`.
pub(super) fn check_link(
    prev: &End<'_>,
    path: &Path,
    first_seq: u64,
    prev_hash: &Hash,
    breaks: &Breaks,
) -> Result<(), StorageError> {
    if breaks.permits(first_seq, prev.last_seq, prev_hash, &prev.hash) {
        return Ok(());
    }
    if first_seq != prev.last_seq + 1 {
        let gap = Damage::SeqGap {
            first_seq,
            prev_last_seq: prev.last_seq,
        };
        return Err(StorageError::corrupt(path, 0, gap));
    }
    if *prev_hash != prev.hash {
        return Err(StorageError::corrupt(path, 0, Damage::ChainBroken));
    }
    Ok(())
}
