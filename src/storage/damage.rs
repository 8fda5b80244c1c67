//! What is wrong with bytes that were once acknowledged: the typed fault a
//! [`StorageError::Corrupt`](super::StorageError::Corrupt) carries, so that a caller (repair,
//! above all) acts on its kind instead of guessing it from the offset or the wording.

use super::format::CorruptKind;
use super::repair::SEQ_RECORDED_MAX;
pub use super::scan::Fault;

/// Damage found in a segment, between two segments, or in the record of repairs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Damage {
    /// The header does not decode (`None`: the file is shorter than a header).
    Header(Option<CorruptKind>),
    /// The header names another first seq than the file name.
    HeaderFirstSeq {
        /// The first seq the header holds.
        header: u64,
        /// The first seq the file name says.
        name: u64,
    },
    /// The bytes at the offset are not the next frame or a footer.
    Frame(Fault),
    /// Bad bytes at the end of the last segment, with a later write's frame or footer behind
    /// them: they had been synced, so they are not a torn tail.
    LaterWriteBehind {
        /// What is wrong at the offset.
        fault: Fault,
        /// The later write's frame or footer, described.
        proof: String,
    },
    /// A footer right after the header.
    FooterWithoutFrames,
    /// The footer's last seq is not the last frame's.
    FooterLastSeq {
        /// The last seq the footer names.
        footer: u64,
        /// The last frame's seq.
        frames: u64,
    },
    /// The footer's data end is not where the frames end.
    FooterDataEnd {
        /// The data end the footer names.
        footer: u64,
        /// Where the frames end.
        frames: u64,
    },
    /// The footer's hash is not the hash of the bytes before it.
    HashMismatch,
    /// A segment with a later one behind it carries no footer.
    NotSealed,
    /// A segment's first seq does not follow the segment before it (no record permits the gap).
    SeqGap {
        /// The segment's first seq.
        first_seq: u64,
        /// The previous segment's last seq.
        prev_last_seq: u64,
    },
    /// A segment's header does not name the previous segment's hash (no record permits it).
    ChainBroken,
    /// A file named like a segment is a link, a pipe or a device.
    NotRegularFile,
    /// The bytes hold a frame or footer claiming a seq no log reaches: forged, or not a segment.
    BeyondAnyLog {
        /// The seq claimed.
        claimed: u64,
    },
    /// A line of the record of repairs does not parse.
    RecordUnreadable {
        /// Its number, from 1.
        line: usize,
        /// Why.
        error: String,
    },
    /// A line of the record of repairs names seqs no log reaches.
    RecordBeyondAnyLog {
        /// Its number, from 1.
        line: usize,
        /// The seqs it names.
        after_seq: u64,
        /// The seqs it names.
        first_seq: u64,
    },
    /// The record of repairs is not UTF-8.
    RecordNotUtf8,
    /// Repair took its most steps and the log still does not check out.
    StillDamaged {
        /// The steps taken.
        steps: usize,
    },
}

impl Damage {
    /// Whether the damage is in the link between a segment and the one before it, not in the
    /// segment's own bytes.
    pub fn is_link(&self) -> bool {
        matches!(self, Damage::SeqGap { .. } | Damage::ChainBroken)
    }

    /// Whether the damage is at a segment's start: its header, or its link to the segment before,
    /// which the header carries. Repair then trusts no header field but keeps the frames behind
    /// it that check out on their own.
    pub fn is_at_header(&self) -> bool {
        self.is_link() || matches!(self, Damage::Header(_) | Damage::HeaderFirstSeq { .. })
    }

    /// Whether the damage is in a segment file or between two (what repair can act on), not in
    /// the record of repairs or the run of a repair.
    pub fn is_in_segments(&self) -> bool {
        !matches!(
            self,
            Damage::RecordUnreadable { .. }
                | Damage::RecordBeyondAnyLog { .. }
                | Damage::RecordNotUtf8
                | Damage::StillDamaged { .. }
        )
    }
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Damage::Header(None) => write!(f, "file shorter than a header"),
            Damage::Header(Some(kind)) => write!(f, "header: {kind}"),
            Damage::HeaderFirstSeq { header, name } => write!(
                f,
                "header names first seq {header} but the file name says {name}"
            ),
            Damage::Frame(fault) => write!(f, "{fault}"),
            Damage::LaterWriteBehind { fault, proof } => write!(
                f,
                "{fault}, yet {proof} follows it: the damage is not a torn tail"
            ),
            Damage::FooterWithoutFrames => write!(f, "footer on a segment without frames"),
            Damage::FooterLastSeq { footer, frames } => write!(
                f,
                "footer names last seq {footer} but the frames end at {frames}"
            ),
            Damage::FooterDataEnd { footer, frames } => write!(
                f,
                "footer names data end {footer} but the frames end at {frames}"
            ),
            Damage::HashMismatch => write!(
                f,
                "segment hash in the footer does not match the frames: the segment was altered"
            ),
            Damage::NotSealed => write!(f, "segment is not sealed but a later segment exists"),
            Damage::SeqGap {
                first_seq,
                prev_last_seq,
            } => write!(
                f,
                "seq gap: segment starts at {first_seq}, previous ended at {prev_last_seq}"
            ),
            Damage::ChainBroken => write!(
                f,
                "hash chain broken: header does not name the previous segment's hash"
            ),
            Damage::NotRegularFile => write!(f, "named like a segment but not a regular file"),
            Damage::BeyondAnyLog { claimed } => write!(
                f,
                "its bytes claim seq {claimed}, beyond any log (at most {SEQ_RECORDED_MAX}); the segment was forged or is not a segment: move it aside by hand"
            ),
            Damage::RecordUnreadable { line, error } => {
                write!(f, "line {line} is not a repair record: {error}")
            }
            Damage::RecordBeyondAnyLog {
                line,
                after_seq,
                first_seq,
            } => write!(
                f,
                "line {line} records seqs {after_seq}..{first_seq}, beyond any log (at most {SEQ_RECORDED_MAX}); it was edited"
            ),
            Damage::RecordNotUtf8 => write!(f, "the record of repairs is not UTF-8"),
            Damage::StillDamaged { steps } => write!(
                f,
                "still damaged after {steps} repair steps; run repair again"
            ),
        }
    }
}
