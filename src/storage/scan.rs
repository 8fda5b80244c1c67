//! The one check of one segment, used by start-up, the read-only scan and verify: header, every
//! frame, the footer and its hash. Its outcome is data: a clean segment, a torn tail at an offset
//! (only where the mode allows one), or corruption at an offset with a typed fault.
//!
//! A torn write can leave a hole (a page never written) before later pages of the same write,
//! so a valid frame after a bad one does not by itself prove corruption. Each frame records its
//! index in its write; a valid frame or footer from a *later* write behind the bad bytes proves the
//! bad bytes had been synced, and that is corruption.

use std::path::Path;

use sha2::{Digest, Sha256};

use super::catalog::FrameIndex;
use super::dir::map_file;
use super::format::{self, CorruptKind, Decoded, Footer, Hash, Header, FOOTER_BYTES, HEADER_BYTES};
use super::{Damage, StorageError};
use crate::event::StoredEvent;

/// How much damage at the end of a segment is tolerated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// A segment with a later one behind it: every byte must check out.
    Whole,
    /// The newest segment: bytes after its last valid frame that no later write stands behind
    /// are a torn tail (a write that never finished), and a header that never reached the disk
    /// leaves an empty segment.
    TornTailAllowed,
}

impl Mode {
    /// The mode of a segment, by whether it is the newest.
    pub(super) fn of(is_last: bool) -> Mode {
        if is_last {
            Mode::TornTailAllowed
        } else {
            Mode::Whole
        }
    }
}

/// Who checks a segment's hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Hashing {
    /// The scan hashes the segment and checks the footer's hash.
    Inline,
    /// The caller hashes the segment apart (on another thread) and checks the footer's hash; the
    /// scan's hasher stays empty.
    Deferred,
}

/// Why the bytes at an offset are not the next frame or a footer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The bytes end inside a frame or footer.
    Incomplete,
    /// A structure that does not check: a length, a CRC, a payload.
    Corrupt(CorruptKind),
    /// A valid frame that holds another seq than the next.
    WrongSeq {
        /// The seq the frame holds.
        found: u64,
        /// The seq that should come next.
        expected: u64,
    },
    /// Bytes after a valid footer.
    AfterFooter,
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::Incomplete => write!(f, "incomplete frame"),
            Fault::Corrupt(kind) => write!(f, "{kind}"),
            Fault::WrongSeq { found, expected } => {
                write!(f, "frame holds seq {found} where {expected} was expected")
            }
            Fault::AfterFooter => write!(f, "bytes after the footer"),
        }
    }
}

/// How a segment's bytes end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tail {
    /// At the end of its last frame, or of its footer.
    Clean,
    /// In a torn tail from `offset` to the end of the file; recovery cuts it off.
    Torn {
        /// Where the torn bytes begin.
        offset: u64,
        /// What is wrong with the bytes there.
        fault: Fault,
    },
}

/// What one segment holds, as found by a scan.
pub(super) struct Scan {
    pub header: Header,
    pub frames: FrameIndex,
    /// End of the last valid frame: where the footer starts, or the next frame would.
    pub data_len: u64,
    pub footer: Option<Footer>,
    /// SHA-256 of the header and frames (empty with [`Hashing::Deferred`]).
    pub hasher: Sha256,
    pub received_min_us: u64,
    pub received_max_us: u64,
    pub tail: Tail,
}

impl Scan {
    /// Where the segment's valid bytes end: after its footer if sealed, else after its frames.
    pub(super) fn end(&self) -> u64 {
        self.data_len + self.footer.map_or(0, |_| FOOTER_BYTES as u64)
    }
}

/// What a scan of one segment found.
// One short-lived value per segment scanned: boxing the scan would buy nothing.
#[allow(clippy::large_enum_variant)]
pub(super) enum Scanned {
    /// A newest segment whose header never reached the disk: it holds no event.
    HeaderTorn,
    /// The segment, checked.
    Segment(Scan),
}

/// Checks one segment and hands each of its events to `each`, in order. `link` checks the header
/// against the segment before it, before any frame is read.
pub(super) fn scan_segment(
    path: &Path,
    bytes: &[u8],
    first_seq: u64,
    mode: Mode,
    hashing: Hashing,
    link: impl FnOnce(&Header) -> Result<(), StorageError>,
    each: &mut impl FnMut(&StoredEvent<'_>),
) -> Result<Scanned, StorageError> {
    let header = match format::decode_header(bytes) {
        Ok(header) => header,
        Err(_) if mode == Mode::TornTailAllowed && bytes.len() <= HEADER_BYTES => {
            return Ok(Scanned::HeaderTorn)
        }
        Err(kind) => return Err(corrupt(path, 0, Damage::Header(kind))),
    };
    if header.first_seq != first_seq {
        return Err(corrupt(
            path,
            0,
            Damage::HeaderFirstSeq {
                header: header.first_seq,
                name: first_seq,
            },
        ));
    }
    link(&header)?;
    let mut scan = Scan {
        header,
        frames: FrameIndex::default(),
        data_len: HEADER_BYTES as u64,
        footer: None,
        hasher: Sha256::new(),
        received_min_us: u64::MAX,
        received_max_us: 0,
        tail: Tail::Clean,
    };
    let fault = read_frames(path, bytes, &mut scan, each)?;
    let offset = scan.data_len as usize;
    if hashing == Hashing::Inline {
        // One update over the whole range: the same hash as frame by frame, and faster.
        scan.hasher.update(&bytes[..offset]);
        if let Some(footer) = &scan.footer {
            check_hash(path, offset, footer, scan.hasher.clone().finalize().into())?;
        }
    }
    if scan.frames.is_empty() {
        scan.received_min_us = 0;
    }
    if scan.end() == bytes.len() as u64 {
        return Ok(Scanned::Segment(scan));
    }
    let fault = fault.unwrap_or(Fault::AfterFooter);
    if mode == Mode::Whole {
        return Err(corrupt(path, offset as u64, Damage::Frame(fault)));
    }
    let next_seq = scan.header.first_seq + scan.frames.len();
    if let Some(proof) = later_write_behind(bytes, scan.end() as usize, next_seq) {
        return Err(corrupt(
            path,
            offset as u64,
            Damage::LaterWriteBehind { fault, proof },
        ));
    }
    scan.tail = Tail::Torn {
        offset: scan.end(),
        fault,
    };
    Ok(Scanned::Segment(scan))
}

/// Reads frames from the header's end until the footer, the end of the bytes, or a fault, which
/// is returned.
fn read_frames(
    path: &Path,
    bytes: &[u8],
    scan: &mut Scan,
    each: &mut impl FnMut(&StoredEvent<'_>),
) -> Result<Option<Fault>, StorageError> {
    let mut offset = HEADER_BYTES;
    let mut seq = scan.header.first_seq;
    let fault = loop {
        match format::decode_at(bytes, offset) {
            Decoded::Frame { frame, end } => {
                if frame.seq != seq {
                    break Some(Fault::WrongSeq {
                        found: frame.seq,
                        expected: seq,
                    });
                }
                each(&frame);
                scan.frames
                    .push(u32::try_from(offset).expect("segments stay below 4 GiB"));
                scan.received_min_us = scan.received_min_us.min(frame.received_at_us);
                scan.received_max_us = scan.received_max_us.max(frame.received_at_us);
                offset = end;
                seq += 1;
            }
            Decoded::Footer(footer) => {
                check_footer(path, offset, &footer, scan, seq)?;
                scan.footer = Some(footer);
                break None;
            }
            Decoded::Incomplete if offset == bytes.len() => break None,
            Decoded::Incomplete => break Some(Fault::Incomplete),
            Decoded::Corrupt(kind) => break Some(Fault::Corrupt(kind)),
        }
    };
    scan.data_len = offset as u64;
    Ok(fault)
}

fn check_footer(
    path: &Path,
    offset: usize,
    footer: &Footer,
    scan: &Scan,
    next_seq: u64,
) -> Result<(), StorageError> {
    let at = offset as u64;
    if scan.frames.is_empty() {
        return Err(corrupt(path, at, Damage::FooterWithoutFrames));
    }
    if footer.last_seq + 1 != next_seq {
        return Err(corrupt(
            path,
            at,
            Damage::FooterLastSeq {
                footer: footer.last_seq,
                frames: next_seq - 1,
            },
        ));
    }
    if footer.data_end != at {
        return Err(corrupt(
            path,
            at,
            Damage::FooterDataEnd {
                footer: footer.data_end,
                frames: at,
            },
        ));
    }
    Ok(())
}

/// Compares the footer's segment hash with the hash of the bytes before it, at `offset`.
pub(super) fn check_hash(
    path: &Path,
    offset: usize,
    footer: &Footer,
    hash: Hash,
) -> Result<(), StorageError> {
    if footer.segment_hash != hash {
        return Err(corrupt(path, offset as u64, Damage::HashMismatch));
    }
    Ok(())
}

/// SHA-256 of everything before the footer of a sealed segment: what its footer's hash covers.
/// A file too short for a header and a footer gets the hash of nothing; its scan fails anyway.
pub(super) fn sealed_hash(path: &Path) -> Result<Hash, StorageError> {
    let map = map_file(path)?;
    let end = map.len().saturating_sub(FOOTER_BYTES);
    Ok(Sha256::digest(&map[..end]).into())
}

/// Looks behind damaged bytes at `from` for a frame or footer written by a later write than the
/// one that should have held `seq`; returns a description of the first one found.
fn later_write_behind(bytes: &[u8], from: usize, seq: u64) -> Option<String> {
    (from + 1..bytes.len()).find_map(|at| match format::decode_at(bytes, at) {
        Decoded::Frame { frame, .. } => {
            let write_start = frame.seq.checked_sub(u64::from(frame.write_index))?;
            (write_start > seq).then(|| {
                format!(
                    "a valid frame of a later write (seq {}) at offset {at}",
                    frame.seq
                )
            })
        }
        Decoded::Footer(footer) if footer.last_seq >= seq => {
            Some(format!("a valid footer at offset {at}"))
        }
        _ => None,
    })
}

fn corrupt(path: &Path, offset: u64, damage: Damage) -> StorageError {
    StorageError::corrupt(path, offset, damage)
}
