//! What a damaged segment's bytes still hold, as repair reads them: the whole valid frames before
//! the damage, its own check, its chain hash, the highest seq anything in it claims.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::dir::list_segments;
use super::format::{self, Decoded, Hash, FOOTER_BYTES, HEADER_BYTES};
use super::StorageError;

/// One segment as repair sees it: where it stands and what it holds.
pub(super) struct Held {
    pub(super) first_seq: u64,
    pub(super) path: PathBuf,
    pub(super) bytes: Vec<u8>,
}

/// Where the damage in a segment begins.
#[derive(Debug, Clone, Copy)]
pub(super) enum Start {
    /// In its header or its link to the segment before: no header field is trusted, but the
    /// frames behind it can be checked on their own.
    Header,
    /// At this offset, after the header.
    At(u64),
}

impl Held {
    /// The whole frames before the damage that check out, with seqs from the file name's.
    pub(super) fn kept(&self, start: Start) -> Prefix {
        match start {
            Start::Header => frames_from(&self.bytes, self.first_seq, self.bytes.len()),
            Start::At(offset) => valid_prefix(&self.bytes, offset as usize),
        }
    }
}

/// The segment files of a log, listed.
pub(super) struct Listing(pub(super) Vec<(u64, PathBuf)>);

impl Listing {
    pub(super) fn of(segments: &Path) -> Result<Listing, StorageError> {
        Ok(Listing(list_segments(segments)?))
    }

    pub(super) fn position(&self, path: &Path) -> Option<usize> {
        self.0.iter().position(|(_, p)| p == path)
    }

    pub(super) fn read(&self, index: usize) -> Result<Held, StorageError> {
        let (first_seq, path) = &self.0[index];
        let bytes = std::fs::read(path).map_err(StorageError::io("read", path))?;
        Ok(Held {
            first_seq: *first_seq,
            path: path.clone(),
            bytes,
        })
    }
}

/// The frames of a segment that check out on their own, with its footer if sealed and its hash
/// matches: `(frames, sealed)`, or `None` if the segment does not check out.
pub(super) fn own_check(held: &Held) -> Option<(u64, bool)> {
    let header = format::decode_header(&held.bytes).ok()?;
    if header.first_seq != held.first_seq {
        return None;
    }
    let prefix = valid_prefix(&held.bytes, held.bytes.len());
    match format::decode_at(&held.bytes, prefix.end) {
        Decoded::Footer(footer)
            if footer.data_end == prefix.end as u64
                && prefix.end + FOOTER_BYTES == held.bytes.len()
                && footer.segment_hash
                    == <Hash>::from(Sha256::digest(&held.bytes[..prefix.end])) =>
        {
            Some((prefix.frames, true))
        }
        Decoded::Incomplete if prefix.end == held.bytes.len() => Some((prefix.frames, false)),
        _ => None,
    }
}

/// The whole valid frames of a segment that end at or before `limit`.
pub(super) struct Prefix {
    /// Where the last of them ends (the header's end when none).
    pub(super) end: usize,
    pub(super) frames: u64,
    pub(super) last_seq: u64,
    pub(super) received_min_us: u64,
    pub(super) received_max_us: u64,
}

pub(super) fn valid_prefix(bytes: &[u8], limit: usize) -> Prefix {
    match format::decode_header(bytes) {
        Ok(header) => frames_from(bytes, header.first_seq, limit),
        Err(_) => Prefix {
            end: 0,
            frames: 0,
            last_seq: 0,
            received_min_us: u64::MAX,
            received_max_us: 0,
        },
    }
}

/// The whole valid frames from the header's end, with seqs from `first_seq` on, that end at or
/// before `limit`, whatever the header holds.
pub(super) fn frames_from(bytes: &[u8], first_seq: u64, limit: usize) -> Prefix {
    let mut prefix = Prefix {
        end: HEADER_BYTES,
        frames: 0,
        last_seq: 0,
        received_min_us: u64::MAX,
        received_max_us: 0,
    };
    let mut seq = first_seq;
    while let Decoded::Frame { frame, end } = format::decode_at(bytes, prefix.end) {
        if end > limit || frame.seq != seq {
            break;
        }
        prefix.end = end;
        prefix.frames += 1;
        prefix.last_seq = frame.seq;
        prefix.received_min_us = prefix.received_min_us.min(frame.received_at_us);
        prefix.received_max_us = prefix.received_max_us.max(frame.received_at_us);
        seq += 1;
    }
    prefix
}

/// The chain hash of a segment as repair leaves it: its footer's, or the hash of its bytes.
pub(super) fn chain_hash(held: &Held) -> Hash {
    let prefix = valid_prefix(&held.bytes, held.bytes.len());
    match format::decode_at(&held.bytes, prefix.end) {
        Decoded::Footer(footer) => footer.segment_hash,
        _ => Sha256::digest(&held.bytes[..prefix.end]).into(),
    }
}

pub(super) fn last_seq_of(held: &Held) -> Option<u64> {
    let prefix = valid_prefix(&held.bytes, held.bytes.len());
    (prefix.frames > 0).then_some(prefix.last_seq)
}

/// The highest seq of any valid frame anywhere in damaged bytes (a byte-by-byte search: repair
/// is offline and rare).
pub(super) fn max_seq_in(bytes: &[u8]) -> Option<u64> {
    (HEADER_BYTES..bytes.len())
        .filter_map(|at| match format::decode_at(bytes, at) {
            Decoded::Frame { frame, .. } => Some(frame.seq),
            Decoded::Footer(footer) => Some(footer.last_seq),
            _ => None,
        })
        .max()
}
