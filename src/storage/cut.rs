//! Cutting the end of the last segment at start-up, without ever giving a seq twice.
//!
//! Bytes at the end of the last segment that do not check out are either a torn write (the
//! process died before the write's fdatasync returned, so nothing in it was acknowledged) or
//! damage to the last write after it was acknowledged and served (a flipped bit). Nothing on disk
//! tells the two apart, so start-up treats both the same, the safe way:
//! - the cut bytes are copied into `<data>/quarantine/` before the file is cut;
//! - numbering goes on past every seq they may have held ([`highest_held`], storage-format.md
//!   "Cuts at start-up"), so a seq a reader was once given never names another event;
//! - the cut is recorded in `segments/repairs.jsonl` (kind `cut`) *before* anything changes, so
//!   a start that stops half-way finishes the job next time from the record, and `verify`,
//!   start-up and replay's gap lines report it.
//!
//! A cluster node is the exception ([`Seqs::FromStream`]): its seqs come from the cluster's
//! stream, which delivers the cut groups again byte for byte, so it cuts without skipping.

use std::path::Path;

use sha2::Digest;

use super::dir::create_private_dir;
use super::format::{self, Decoded, Hash, FOOTER_BYTES, FOOTER_MARKER};
use super::repair::{Break, BreakKind, Breaks, Cut, QUARANTINE_DIR};
use super::scan::{Fault, Scan};
use super::{segment_file_name, LogConfig, StorageError};
use crate::hex::encode as hex;

/// The fewest bytes a frame can take: the 8 bytes of length and CRC, then a payload of a one-byte
/// seq, write index and receive time, the 8-byte key id, a one-byte action, the 8-byte
/// timestamp, two ids of one byte each with their one-byte lengths, the one-byte "no event id"
/// and an empty body's one-byte length. A test encodes that smallest frame.
pub const FRAME_BYTES_MIN: usize = 34;

/// Where a log's seqs come from, which decides what a cut does to numbering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seqs {
    /// A single node numbers its own events: after a cut it goes on past every seq the cut bytes
    /// may have held.
    NeverReuse,
    /// A cluster node takes its seqs from the cluster's stream, which delivers the cut groups
    /// again with the same seqs and bytes: a cut skips nothing.
    FromStream,
}

/// The highest seq that the bytes of a segment from `from` to its end may have held, when the
/// frame at `from` would have held `next_seq`; `None` when they can have held none.
///
/// The rule (storage-format.md, "Cuts at start-up"): bytes after a valid footer, or no longer
/// than a footer and starting with its marker, held none (nothing is written after a footer, and
/// no frame length is the marker). Otherwise frames lie back to back from `from`, each at least
/// [`FRAME_BYTES_MIN`] bytes: if no valid frame of seq `next_seq` or above is found anywhere in
/// the bytes, they held at most `len / FRAME_BYTES_MIN` frames from `next_seq` on; if some are,
/// the one that ends last, holding seq `q`, may be followed by `rest / FRAME_BYTES_MIN` more,
/// `rest` being the bytes after it, and no found frame's seq is above the answer either.
pub fn highest_held(bytes: &[u8], from: usize, next_seq: u64, sealed: bool) -> Option<u64> {
    let cut = bytes.get(from..).unwrap_or_default();
    if sealed || cut.is_empty() {
        return None;
    }
    if cut.len() <= FOOTER_BYTES && cut.starts_with(&FOOTER_MARKER.to_le_bytes()) {
        return None;
    }
    let mut highest_found = None;
    let mut ends_last: Option<(u64, usize)> = None;
    for at in from..bytes.len() {
        if let Decoded::Frame { frame, end } = format::decode_at(bytes, at) {
            if frame.seq < next_seq {
                continue;
            }
            highest_found = highest_found.max(Some(frame.seq));
            if ends_last.is_none_or(|(_, last_end)| end > last_end) {
                ends_last = Some((frame.seq, end));
            }
        }
    }
    let (base_seq, base_end) = ends_last.unwrap_or((next_seq - 1, from));
    let room = ((bytes.len() - base_end) / FRAME_BYTES_MIN) as u64;
    let highest = highest_found
        .unwrap_or(0)
        .max(base_seq.saturating_add(room));
    (highest >= next_seq).then_some(highest)
}

/// Cuts the bytes of the last segment from `scan.end()` on: copies them into quarantine, records
/// the cut (and the seq numbering goes on at), then truncates the file. Returns the bytes cut.
/// The new segment past the skipped seqs is made by the caller, from the record
/// ([`Breaks::floor`]), so that a start that stops half-way finishes the job the next time.
#[allow(clippy::too_many_arguments)]
pub(super) fn cut_tail(
    config: &LogConfig,
    path: &Path,
    bytes: &[u8],
    scan: &Scan,
    fault: Fault,
    before: Option<(u64, Hash)>,
    seqs: Seqs,
    now_us: u64,
    breaks: &mut Breaks,
) -> Result<u64, StorageError> {
    let offset = scan.end();
    let cut = &bytes[offset as usize..];
    let next_seq = scan.header.first_seq + scan.frames.len();
    let highest = highest_held(bytes, offset as usize, next_seq, scan.footer.is_some());
    let first_free = match (seqs, highest) {
        (Seqs::NeverReuse, Some(highest)) => highest + 1,
        _ => next_seq,
    };
    let name = segment_file_name(scan.header.first_seq);
    // The copy first: nothing below changes the log before the bytes are safe.
    let quarantine = copy_to_quarantine(config, &name, offset, now_us, cut)?;
    let (prev_hash, kept_hash, after_seq) = link_after_cut(scan, next_seq, before);
    let skipped = first_free - next_seq;
    let reason = format!(
        "{fault} at offset {offset} of {name}: {} bytes cut at start-up (a torn write or damage \
         to the last write); {}",
        cut.len(),
        match skipped {
            0 => "they can have held no whole frame, so no seq is skipped".to_owned(),
            _ => format!(
                "seqs {next_seq} to {} may have been in them and are never given again",
                first_free - 1
            ),
        }
    );
    let record = Break {
        repaired_at_us: now_us,
        first_seq: first_free,
        after_seq,
        prev_hash: Some(hex(&prev_hash)),
        kept_hash: Some(hex(&kept_hash)),
        quarantine: Some(quarantine.clone()),
        reason,
        kind: BreakKind::Cut,
        cut: Some(Cut {
            segment: name,
            offset,
            bytes: cut.len() as u64,
        }),
    };
    breaks.record(config, record)?;
    config
        .disk
        .truncate(path, offset)
        .map_err(StorageError::io("truncate", path))?;
    tracing::warn!(
        path = %path.display(),
        offset,
        bytes = cut.len(),
        %fault,
        skipped_seqs = skipped,
        next_seq = first_free,
        %quarantine,
        "truncated a torn tail (or damage to the last write: the two cannot be told apart); the cut \
         bytes are in quarantine, the cut is recorded in segments/repairs.jsonl, and numbering goes \
         on past every seq they may have held"
    );
    Ok(cut.len() as u64)
}

/// Copies the cut bytes of segment `name` from `offset` into `<data>/quarantine/`, durably;
/// returns the copy's path under the data directory.
fn copy_to_quarantine(
    config: &LogConfig,
    name: &str,
    offset: u64,
    now_us: u64,
    cut: &[u8],
) -> Result<String, StorageError> {
    let segments = &config.dir;
    let data_dir = segments.parent().unwrap_or(segments);
    let quarantine = format!("{QUARANTINE_DIR}/{now_us}-{name}.cut-{offset}");
    let target = data_dir.join(&quarantine);
    let folder = data_dir.join(QUARANTINE_DIR);
    create_private_dir(&folder).map_err(StorageError::io("create directory", &folder))?;
    // (A copy already there is this same cut, made by a start within the same microsecond.)
    if !target.exists() {
        let disk = &config.disk;
        disk.write_new(&target, cut)
            .map_err(StorageError::io("write", &target))?;
        disk.sync_dir(&folder)
            .map_err(StorageError::io("fsync directory", &folder))?;
    }
    Ok(quarantine)
}

/// The link the segment numbering goes on in will have, as `(prev_hash, kept_hash, after_seq)`:
/// after the kept frames (the segment sealed over them), or, when none are kept, after the
/// segment before (this one removed), which may end below `next_seq - 1` when this one began
/// past an earlier cut.
fn link_after_cut(scan: &Scan, next_seq: u64, before: Option<(u64, Hash)>) -> (Hash, Hash, u64) {
    match (scan.footer, scan.frames.is_empty(), before) {
        (Some(footer), _, _) => (footer.segment_hash, footer.segment_hash, next_seq - 1),
        (None, false, _) => {
            let hash: Hash = scan.hasher.clone().finalize().into();
            (hash, hash, next_seq - 1)
        }
        (None, true, Some((last_seq, hash))) => (scan.header.prev_hash, hash, last_seq),
        (None, true, None) => (scan.header.prev_hash, [0; 32], next_seq - 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Action, StoredEvent};

    fn frame<'a>(seq: u64, write_index: u32, body: &'a str) -> StoredEvent<'a> {
        StoredEvent {
            seq,
            write_index,
            received_at_us: 1_790_000_000_000_000,
            key_id: [1; 8],
            action: Action::Progress,
            timestamp: 1.0e9,
            interaction_id: "interaction",
            mcp_id: "m",
            event_id: None,
            body,
        }
    }

    #[test]
    fn the_smallest_frame_takes_frame_bytes_min() {
        let smallest = StoredEvent {
            seq: 1,
            write_index: 0,
            received_at_us: 0,
            key_id: [0; 8],
            action: Action::Start,
            timestamp: 0.0,
            interaction_id: "i",
            mcp_id: "m",
            event_id: None,
            body: "",
        };
        let mut bytes = Vec::new();
        format::encode_frame(&smallest, &mut bytes);
        assert_eq!(bytes.len(), FRAME_BYTES_MIN);
        assert!(matches!(
            format::decode_at(&bytes, 0),
            Decoded::Frame { .. }
        ));
    }

    /// A write of `count` frames from seq 10, after 100 bytes of earlier frames.
    fn last_write(count: u32) -> (Vec<u8>, Vec<usize>) {
        let mut bytes = vec![0u8; 100];
        let mut starts = Vec::new();
        for i in 0..count {
            starts.push(bytes.len());
            format::encode_frame(
                &frame(10 + u64::from(i), i, r#"{"k":"vvvvvvvv"}"#),
                &mut bytes,
            );
        }
        (bytes, starts)
    }

    #[test]
    fn a_flip_in_a_write_bounds_by_the_frames_behind_it() {
        let (mut bytes, starts) = last_write(6);
        bytes[starts[2] + 12] ^= 0x01;
        // Frames 13..=15 check out behind the damage and end the file: exactly seqs 12..=15.
        assert_eq!(highest_held(&bytes, starts[2], 12, false), Some(15));
    }

    #[test]
    fn a_flip_in_the_last_frame_or_its_length_bounds_by_length() {
        for at in [0, 1, 20] {
            let (mut bytes, starts) = last_write(3);
            bytes[starts[2] + at] ^= 0x10;
            let len = bytes.len() - starts[2];
            let held = highest_held(&bytes, starts[2], 12, false).unwrap();
            assert_eq!(held, 11 + (len / FRAME_BYTES_MIN) as u64, "flip at {at}");
            assert!(held >= 12);
        }
    }

    #[test]
    fn an_unreadable_first_frame_header_still_bounds_every_frame_behind_it() {
        let (mut bytes, starts) = last_write(5);
        // Length and CRC of seq 10 gone: its own header says nothing.
        bytes[starts[0]..starts[0] + 8].fill(0xEE);
        assert_eq!(highest_held(&bytes, starts[0], 10, false), Some(14));
    }

    #[test]
    fn bytes_that_cannot_hold_a_frame_hold_no_seq() {
        let (bytes, starts) = last_write(2);
        // A frame torn after fewer bytes than any frame takes.
        let torn = &bytes[..starts[1] + FRAME_BYTES_MIN - 1];
        assert_eq!(highest_held(torn, starts[1], 11, false), None);
        // A torn footer.
        let mut footer = bytes[..starts[1]].to_vec();
        footer.extend_from_slice(&FOOTER_MARKER.to_le_bytes());
        footer.extend_from_slice(&[7; 40]);
        assert_eq!(highest_held(&footer, starts[1], 11, false), None);
        // Anything after a valid footer.
        assert_eq!(highest_held(&bytes, starts[0], 10, true), None);
    }
}
