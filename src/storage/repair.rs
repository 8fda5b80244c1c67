//! Repair: the operator's way forward from damage past a torn tail.
//!
//! Recovery truncates a torn tail by itself but stops at damage anywhere else, because those
//! bytes were once acknowledged. [`repair`] is the explicit step past it: it copies each damaged
//! segment whole into `<data>/quarantine/` (nothing is ever deleted), keeps the frames before the
//! damage (re-sealing the segment over them), and records the link it breaks, between the
//! repaired segment and the next, in `segments/repairs.jsonl`. Start-up and `verify` accept a
//! broken link only when a record names it exactly, and `verify` reports every record: the break
//! is visible, never hidden.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::cut::highest_held;
use super::dir::{create_private_dir, lock_dir, sync_dir};
use super::format::{self, Decoded, Footer, Hash, HEADER_BYTES};
use super::held::{chain_hash, last_seq_of, max_seq_in, own_check, Held, Listing, Prefix, Start};
use super::inspect::scan_log;
use super::{segment_file_name, Damage, Disk, StorageError};
use crate::hex::encode as hex;

use super::breaks::append_record;
pub use super::breaks::{
    Break, BreakKind, Breaks, Cut, QUARANTINE_DIR, REPAIRS_FILE, SEQ_RECORDED_MAX,
};

/// Most repair steps one run takes: each removes one fault, so a log with more damaged places
/// than this is repaired over several runs.
const REPAIR_STEPS_MAX: usize = 1000;

/// What one repair step did.
#[derive(Debug, Clone)]
pub struct Repaired {
    /// The damaged segment's file name.
    pub segment: String,
    /// The damage, as the check reported it.
    pub damage: Damage,
    /// Frames kept before the damage.
    pub frames_kept: u64,
    /// The quarantined copy, relative to the data directory (`None`: a broken link between
    /// intact segments, nothing moved).
    pub quarantine: Option<String>,
    /// The link recorded as broken, if the repair broke one.
    pub broke: Option<Break>,
}

/// Repairs the log in `data_dir` until the check that start-up runs passes. Takes the data
/// directory's lock, so it refuses while a server runs. Returns each step, in order.
pub fn repair(data_dir: &Path, now_us: u64) -> Result<Vec<Repaired>, StorageError> {
    let _lock = lock_dir(data_dir)?;
    let segments = data_dir.join("segments");
    // Its records go on a line of their own.
    Breaks::load(&segments)?.drop_torn(&Disk::real(), &segments)?;
    let mut steps = Vec::new();
    for _ in 0..REPAIR_STEPS_MAX {
        match scan_log(&segments, |_| {}, |_| {}) {
            Ok(_) => return Ok(steps),
            Err(StorageError::Corrupt {
                path,
                offset,
                damage,
            }) if damage.is_in_segments() => {
                let step =
                    repair_one(data_dir, &path, offset, damage, now_us + steps.len() as u64)?;
                steps.push(step);
            }
            Err(other) => return Err(other),
        }
    }
    let still = Damage::StillDamaged {
        steps: REPAIR_STEPS_MAX,
    };
    Err(StorageError::corrupt(&segments, 0, still))
}

/// Removes one fault: quarantines the damaged segment, keeps (and re-seals) its frames before
/// the damage, and records the link this breaks. A segment that checks out on its own, whose
/// link to the one before is broken, has a broken link, not broken bytes: the link is recorded
/// and nothing is moved.
fn repair_one(
    data_dir: &Path,
    path: &Path,
    offset: u64,
    damage: Damage,
    now_us: u64,
) -> Result<Repaired, StorageError> {
    let segments = path.parent().expect("a segment is in a directory");
    let listing = Listing::of(segments)?;
    let index = listing
        .position(path)
        .expect("the check named a listed segment");
    let damaged = listing.read(index)?;
    // Checked before anything changes: a forged frame or footer can claim any seq, and a repair
    // refused half-way would leave the log changed with no record.
    if let Some(claimed) = max_seq_in(&damaged.bytes).filter(|s| *s >= SEQ_RECORDED_MAX) {
        return Err(beyond_any_log(&damaged, offset, claimed));
    }
    let step = Step {
        segments,
        now_us,
        reason: damage.to_string(),
    };
    let (frames_kept, quarantine, broke) = match own_check(&damaged) {
        Some((frames, _)) if damage.is_link() => {
            let before = index.checked_sub(1).map(|i| listing.read(i)).transpose()?;
            let broke = broken_link(before, Some(&damaged), &step, None)?;
            (frames, None, broke)
        }
        _ => {
            let start = match damage.is_at_header() {
                true => Start::Header,
                false => Start::At(offset),
            };
            let is_last = index + 1 == listing.0.len();
            let before_hash = index
                .checked_sub(1)
                .map(|i| listing.read(i))
                .transpose()?
                .map(|held| chain_hash(&held));
            let (kept, quarantine, broke) =
                move_damage(data_dir, &step, damaged, start, is_last, before_hash)?;
            (kept, Some(quarantine), broke)
        }
    };
    if let Some(record) = &broke {
        append_record(&Disk::real(), segments, record)?;
    }
    Ok(Repaired {
        segment: segment_file_name(listing.0[index].0),
        damage,
        frames_kept,
        quarantine,
        broke,
    })
}

/// What every record of one repair step shares.
struct Step<'a> {
    segments: &'a Path,
    now_us: u64,
    reason: String,
}

impl Step<'_> {
    fn record(&self, first_seq: u64, after_seq: u64, quarantine: Option<String>) -> Break {
        Break {
            repaired_at_us: self.now_us,
            first_seq,
            after_seq,
            prev_hash: None,
            kept_hash: None,
            quarantine,
            reason: self.reason.clone(),
            kind: BreakKind::Repair,
            cut: None,
        }
    }
}

/// Copies the damaged segment into quarantine, keeps its frames before the damage, and works
/// out the link this breaks. Returns the frames kept, the copy's path under the data directory
/// and the record of the broken link.
fn move_damage(
    data_dir: &Path,
    step: &Step<'_>,
    damaged: Held,
    start: Start,
    is_last: bool,
    before_hash: Option<Hash>,
) -> Result<(u64, String, Option<Break>), StorageError> {
    let quarantine = format!(
        "{QUARANTINE_DIR}/{}-{}",
        step.now_us,
        segment_file_name(damaged.first_seq)
    );
    // When the damaged segment is the last, the seqs its bytes may have held are recorded before
    // anything changes: a repair stopped half-way then still leaves a record whose first seq
    // start-up numbers past (as after a cut), so no seq a reader was served is given again.
    let resumed_at = match is_last {
        true => Some(record_resume_point(step, &damaged, start, &quarantine)?),
        false => None,
    };
    // The quarantined copy first: nothing below changes the log before it is safe.
    let target = data_dir.join(&quarantine);
    create_private_dir(target.parent().expect("in the quarantine directory"))
        .map_err(StorageError::io("create directory", &target))?;
    write_new(&target, &damaged.bytes)?;
    let kept = cut_damage(&damaged, start, before_hash)?;
    sync_dir(step.segments)?;

    // The link that now breaks: from the segment before the damage (or the repaired one) to the
    // one after it; or, when the damaged one was last, to a new segment past every seq it held.
    let listing = Listing::of(step.segments)?;
    let before_index = listing
        .0
        .iter()
        .rposition(|(first, _)| *first <= damaged.first_seq);
    let before = before_index.map(|i| listing.read(i)).transpose()?;
    let after_index = before_index.map_or(0, |i| i + 1);
    let after = match listing.0.get(after_index) {
        Some(_) => Some(listing.read(after_index)?),
        None => {
            // The damaged segment was the last: continue in a new one, starting past any seq the
            // quarantined bytes held, so that no seq is ever given to two events.
            let first_seq = resumed_at.expect("computed for a last segment");
            let prev_hash = before.as_ref().map_or([0; 32], chain_hash);
            let path = create_empty_segment(step.segments, first_seq, prev_hash, step.now_us)?;
            Some(Held {
                first_seq,
                bytes: std::fs::read(&path).map_err(StorageError::io("read", &path))?,
                path,
            })
        }
    };
    let moved = Some(quarantine.clone());
    let broke = match broken_link(before, after.as_ref(), step, moved.clone())? {
        Some(broke) => Some(broke),
        None => record_moved_bytes(step, &damaged, kept, after, moved)?,
    };
    Ok((kept, quarantine, broke))
}

/// Records, before anything changes, where numbering goes on after a damaged last segment, when
/// that skips seqs (otherwise nothing a reader was served is at risk). Returns that seq.
fn record_resume_point(
    step: &Step<'_>,
    damaged: &Held,
    start: Start,
    quarantine: &str,
) -> Result<u64, StorageError> {
    let first_seq = resume_after(damaged, start)?;
    let after_seq = damaged.first_seq - 1 + damaged.kept(start).frames;
    if first_seq > after_seq + 1 {
        let record = Break {
            reason: format!("{} (recorded as the repair began)", step.reason),
            ..step.record(first_seq, after_seq, Some(quarantine.to_owned()))
        };
        append_record(&Disk::real(), step.segments, &record)?;
    }
    Ok(first_seq)
}

/// The record of a repair that moved bytes aside although no link between two segments broke
/// (a header rebuilt on a last segment, or a first segment cut or removed): recorded all the
/// same, at the segment that now begins where the damage was, so verify never says a plain "ok"
/// over a repair.
fn record_moved_bytes(
    step: &Step<'_>,
    damaged: &Held,
    kept: u64,
    after: Option<Held>,
    quarantine: Option<String>,
) -> Result<Option<Break>, StorageError> {
    let listing = Listing::of(step.segments)?;
    let subject = if kept > 0 {
        let index = listing.position(&damaged.path).expect("a kept segment");
        Some(listing.read(index)?)
    } else {
        after
    };
    let Some(subject) = subject else {
        return Ok(None);
    };
    let pred = listing
        .position(&subject.path)
        .and_then(|i| i.checked_sub(1))
        .map(|i| listing.read(i))
        .transpose()?;
    let header = format::decode_header(&subject.bytes)
        .map_err(|kind| StorageError::corrupt(&subject.path, 0, Damage::Header(kind)))?;
    let after_seq = match &pred {
        Some(pred) => last_seq_of(pred).unwrap_or(pred.first_seq - 1),
        None if kept > 0 => subject.first_seq - 1,
        None => damaged.first_seq - 1,
    };
    Ok(Some(Break {
        prev_hash: Some(hex(&header.prev_hash)),
        kept_hash: Some(hex(&pred.as_ref().map_or([0; 32], chain_hash))),
        ..step.record(subject.first_seq, after_seq, quarantine)
    }))
}

/// Where numbering goes on after the damaged last segment: past the highest seq of a valid frame
/// or footer anywhere in its bytes, its kept frames, and, unless a valid footer bounds them, every
/// seq the bytes after the kept frames may have held, by the rule start-up's cuts use
/// (storage-format.md, "Cuts at start-up"): frames behind the damage may be damaged too. Worked
/// out from the bytes alone, before anything changes.
fn resume_after(damaged: &Held, start: Start) -> Result<u64, StorageError> {
    let prefix = damaged.kept(start);
    let footer_found = (HEADER_BYTES..damaged.bytes.len())
        .any(|at| matches!(format::decode_at(&damaged.bytes, at), Decoded::Footer(_)));
    let by_length = if footer_found {
        None
    } else {
        highest_held(
            &damaged.bytes,
            prefix.end,
            damaged.first_seq + prefix.frames,
            false,
        )
    };
    let highest = max_seq_in(&damaged.bytes)
        .unwrap_or(0)
        .max(by_length.unwrap_or(0))
        .max(damaged.first_seq - 1 + prefix.frames);
    // A forged frame or footer can claim any seq: past the recordable range it is refused, not
    // numbered past (which would overflow, or leave a gap no log could fill).
    if highest >= SEQ_RECORDED_MAX {
        let offset = match start {
            Start::Header => 0,
            Start::At(offset) => offset,
        };
        return Err(beyond_any_log(damaged, offset, highest));
    }
    Ok(highest + 1)
}

/// The refusal of a segment whose bytes claim a seq no log reaches.
fn beyond_any_log(damaged: &Held, offset: u64, claimed: u64) -> StorageError {
    StorageError::corrupt(&damaged.path, offset, Damage::BeyondAnyLog { claimed })
}

/// Keeps a damaged segment's whole frames before the damage and seals it over them, or removes
/// it when none are kept. Returns the frames kept.
///
/// Damage at the start is in the header (or the header names another first seq than the file
/// name, or another previous segment): the header cannot be trusted, but the frames behind it can be checked on their own.
/// Every frame that checks out from the header's end, with seqs from the file name's first seq
/// on, is kept under a rebuilt header: that first seq, the first frame's receive time as the
/// creation time, and `before_hash` (the hash of the segment before, zeros for the first) as the
/// previous hash; then the segment is sealed.
fn cut_damage(
    damaged: &Held,
    start: Start,
    before_hash: Option<Hash>,
) -> Result<u64, StorageError> {
    let prefix = damaged.kept(start);
    match (prefix.frames, start) {
        (0, _) => std::fs::remove_file(&damaged.path)
            .map_err(StorageError::io("remove", &damaged.path))?,
        (_, Start::Header) => rebuild(damaged, &prefix, before_hash.unwrap_or([0; 32]))?,
        (_, Start::At(_)) => reseal(damaged, &prefix)?,
    }
    Ok(prefix.frames)
}

/// The record of the link between `before` and `after`, if a repair broke it.
fn broken_link(
    before: Option<Held>,
    after: Option<&Held>,
    step: &Step<'_>,
    quarantine: Option<String>,
) -> Result<Option<Break>, StorageError> {
    let (Some(before), Some(after)) = (before, after) else {
        return Ok(None);
    };
    let header = format::decode_header(&after.bytes)
        .map_err(|kind| StorageError::corrupt(&after.path, 0, Damage::Header(kind)))?;
    let after_seq = last_seq_of(&before).unwrap_or(before.first_seq - 1);
    let kept_hash = chain_hash(&before);
    let intact = header.first_seq == after_seq + 1 && header.prev_hash == kept_hash;
    Ok((!intact).then(|| Break {
        prev_hash: Some(hex(&header.prev_hash)),
        kept_hash: Some(hex(&kept_hash)),
        ..step.record(after.first_seq, after_seq, quarantine)
    }))
}

/// Cuts a segment to its valid prefix and seals it over that prefix.
fn reseal(held: &Held, prefix: &Prefix) -> Result<(), StorageError> {
    let footer = Footer {
        last_seq: prefix.last_seq,
        data_end: prefix.end as u64,
        received_min_us: prefix.received_min_us,
        received_max_us: prefix.received_max_us,
        segment_hash: Sha256::digest(&held.bytes[..prefix.end]).into(),
    };
    let path = &held.path;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(StorageError::io("open", path))?;
    file.set_len(prefix.end as u64)
        .map_err(StorageError::io("truncate", path))?;
    file.write_all_at(&format::encode_footer(&footer), prefix.end as u64)
        .map_err(StorageError::io("write footer", path))?;
    file.sync_all().map_err(StorageError::io("fsync", path))
}

/// Replaces a segment whose header is damaged by its kept frames under a rebuilt header, sealed:
/// written beside it and renamed over it, so a crash leaves one or the other whole.
fn rebuild(held: &Held, prefix: &Prefix, prev_hash: Hash) -> Result<(), StorageError> {
    let created_at_us = match format::decode_at(&held.bytes, HEADER_BYTES) {
        Decoded::Frame { frame, .. } => frame.received_at_us,
        _ => prefix.received_min_us,
    };
    let header = format::Header {
        first_seq: held.first_seq,
        created_at_us,
        prev_hash,
    };
    let mut bytes = format::encode_header(&header).to_vec();
    bytes.extend_from_slice(&held.bytes[HEADER_BYTES..prefix.end]);
    let footer = Footer {
        last_seq: prefix.last_seq,
        data_end: prefix.end as u64,
        received_min_us: prefix.received_min_us,
        received_max_us: prefix.received_max_us,
        segment_hash: Sha256::digest(&bytes).into(),
    };
    bytes.extend_from_slice(&format::encode_footer(&footer));
    // Not named like a segment, so no listing takes it for one.
    let temporary = held.path.with_extension("seg.rebuilt");
    let _ = std::fs::remove_file(&temporary);
    write_new(&temporary, &bytes)?;
    std::fs::rename(&temporary, &held.path).map_err(StorageError::io("rename", &held.path))
}

fn create_empty_segment(
    segments: &Path,
    first_seq: u64,
    prev_hash: Hash,
    now_us: u64,
) -> Result<PathBuf, StorageError> {
    let path = segments.join(segment_file_name(first_seq));
    let header = format::Header {
        first_seq,
        created_at_us: now_us,
        prev_hash,
    };
    write_new(&path, &format::encode_header(&header))?;
    sync_dir(segments)?;
    Ok(path)
}

/// Writes a new file (0600) and syncs it.
pub(super) fn write_new(path: &Path, bytes: &[u8]) -> Result<(), StorageError> {
    Disk::real()
        .write_new(path, bytes)
        .map_err(StorageError::io("write", path))
}
