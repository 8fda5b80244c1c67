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
use super::dir::{create_private_dir, list_segments, lock_dir, sync_dir};
use super::format::{self, Decoded, Footer, Hash, FOOTER_BYTES, HEADER_BYTES};
use super::inspect::scan_log;
use super::{segment_file_name, Damage, Disk, LogConfig, StorageError};
use crate::hex::encode as hex;

/// The record of repairs, in the segment directory: one JSON object per line.
pub const REPAIRS_FILE: &str = "repairs.jsonl";
/// The highest seq a repair record may name: far past any log (2^62 events), far from overflow.
pub const SEQ_RECORDED_MAX: u64 = 1 << 62;
/// Where repair moves damaged bytes, in the data directory.
pub const QUARANTINE_DIR: &str = "quarantine";
/// Most repair steps one run takes: each removes one fault, so a log with more damaged places
/// than this is repaired over several runs.
const REPAIR_STEPS_MAX: usize = 1000;

/// A link between two segments that a repair broke, and what was moved aside.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Break {
    /// When the repair was made, microseconds since the Unix epoch.
    pub repaired_at_us: u64,
    /// First seq of the segment whose link to the one before it is broken.
    pub first_seq: u64,
    /// Last seq of the segment now before it (0 when none).
    pub after_seq: u64,
    /// The previous segment's hash as that segment's header names it, in hex.
    pub prev_hash: String,
    /// The hash of the segment now before it, in hex.
    pub kept_hash: String,
    /// The quarantined copy of the damaged segment, relative to the data directory.
    pub quarantine: String,
    /// The damage found.
    pub reason: String,
    /// Who made the break: `mcplog-seg repair`, or start-up cutting the end of the last segment.
    /// Lines written before cuts were recorded have no `kind`: they are repairs.
    #[serde(default)]
    pub kind: BreakKind,
    /// For a cut: where the cut bytes were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cut: Option<Cut>,
}

impl Break {
    /// The seqs this break says no event holds: every seq after `after_seq` and before
    /// `first_seq` (empty when they follow).
    pub fn missing(&self) -> std::ops::Range<u64> {
        self.after_seq.saturating_add(1)..self.first_seq.max(self.after_seq.saturating_add(1))
    }
}

/// What made a recorded break.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakKind {
    /// `mcplog-seg repair` quarantined damaged bytes (or found a broken link).
    #[default]
    Repair,
    /// Start-up cut bytes at the end of the last segment that did not check out (a torn write or
    /// damage to the last write; the two cannot be told apart) and numbering continues past
    /// every seq they may have held.
    Cut,
}

impl BreakKind {
    /// The word replay's gap lines and `verify` use.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakKind::Repair => "repair",
            BreakKind::Cut => "cut",
        }
    }
}

/// Where the bytes of a cut were.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cut {
    /// The segment file they were cut from.
    pub segment: String,
    /// Their offset in it.
    pub offset: u64,
    /// How many bytes were cut.
    pub bytes: u64,
}

/// The links the repairs record allows to be broken.
#[derive(Debug, Clone, Default)]
pub struct Breaks {
    records: Vec<Break>,
    /// The length of the file's whole records when its last line is a torn append (a power cut
    /// during the write of a record whose sync never returned).
    torn_after: Option<u64>,
}

impl Breaks {
    /// The record of a segment directory (none when it has no record file). A torn last line (one a
    /// power cut left half-written) is left out.
    pub fn load(segments: &Path) -> Result<Breaks, StorageError> {
        let path = segments.join(REPAIRS_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Breaks::default()),
            Err(source) => {
                return Err(StorageError::Io {
                    op: "read",
                    path,
                    source,
                })
            }
        };
        let whole = torn_from(&bytes);
        let text = std::str::from_utf8(&bytes[..whole]).map_err(|err| {
            StorageError::corrupt(&path, err.valid_up_to() as u64, Damage::RecordNotUtf8)
        })?;
        let mut breaks = Vec::new();
        for (n, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            breaks.push(parse_record(&path, n, line)?);
        }
        Ok(Breaks {
            records: breaks,
            torn_after: (whole < bytes.len()).then_some(whole as u64),
        })
    }

    /// Cuts a torn last line off the file, so that the next record starts a line of its own. Its
    /// write never returned from its sync, so nothing it recorded was done yet: the start that
    /// wrote it stopped before the change the record precedes, and this start does it again.
    pub(super) fn drop_torn(&mut self, disk: &Disk, segments: &Path) -> Result<(), StorageError> {
        if let Some(len) = self.torn_after.take() {
            let path = segments.join(REPAIRS_FILE);
            tracing::warn!(
                path = %path.display(),
                keep_bytes = len,
                "cutting a torn last line off the record of repairs (a power cut during its write)"
            );
            disk.truncate(&path, len)
                .map_err(StorageError::io("truncate", &path))?;
        }
        Ok(())
    }

    /// Whether a recorded repair broke exactly this link: the segment starting at `first_seq`,
    /// naming `prev_hash`, after a segment ending at `after_seq` whose hash is `kept_hash`.
    pub fn permits(
        &self,
        first_seq: u64,
        after_seq: u64,
        prev_hash: &Hash,
        kept_hash: &Hash,
    ) -> bool {
        self.records.iter().any(|b| {
            b.first_seq == first_seq
                && b.after_seq == after_seq
                && b.prev_hash == hex(prev_hash)
                && b.kept_hash == hex(kept_hash)
        })
    }

    /// Every record, oldest first.
    pub fn all(&self) -> &[Break] {
        &self.records
    }

    /// The lowest seq the log may still give: past every seq a record says was held or given up
    /// (a seq once handed out is never given again, even when the bytes holding it are gone).
    pub fn floor(&self) -> u64 {
        self.records
            .iter()
            .map(|b| b.first_seq)
            .max()
            .unwrap_or(1)
            .max(1)
    }

    /// Appends a record to the segment directory's file (synced) and to this list, unless one
    /// naming the same link and kind is there already (a start-up that stopped half-way through
    /// a cut does it again).
    pub(super) fn record(&mut self, log: &LogConfig, record: Break) -> Result<(), StorageError> {
        let same = |b: &Break| {
            b.kind == record.kind
                && b.first_seq == record.first_seq
                && b.after_seq == record.after_seq
                && b.prev_hash == record.prev_hash
                && b.kept_hash == record.kept_hash
        };
        if self.records.iter().any(same) {
            return Ok(());
        }
        append_record(&log.disk, &log.dir, &record)?;
        self.records.push(record);
        Ok(())
    }
}

/// Where the whole records of the file end: before a last line that a torn append left, which
/// either lacks its newline or holds a NUL byte (a sector of the write that never reached the
/// disk reads as zeros; a record, being JSON, holds none), else the file's end.
fn torn_from(bytes: &[u8]) -> usize {
    let whole = bytes
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |at| at + 1);
    let last_start = bytes[..whole.saturating_sub(1)]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |at| at + 1);
    if bytes[last_start..whole].contains(&0) {
        last_start
    } else {
        whole
    }
}

/// Line `n` (from 0) of the record of repairs.
fn parse_record(path: &Path, n: usize, line: &str) -> Result<Break, StorageError> {
    let unreadable = |err: serde_json::Error| Damage::RecordUnreadable {
        line: n + 1,
        error: err.to_string(),
    };
    let record: Break = serde_json::from_str(line)
        .map_err(|err| StorageError::corrupt(path, n as u64 + 1, unreadable(err)))?;
    // Seqs this high are never reached by writing (2^62 events); such a record was edited, and
    // numbering past it would overflow.
    if record.first_seq > SEQ_RECORDED_MAX || record.after_seq > SEQ_RECORDED_MAX {
        let beyond = Damage::RecordBeyondAnyLog {
            line: n + 1,
            after_seq: record.after_seq,
            first_seq: record.first_seq,
        };
        return Err(StorageError::corrupt(path, n as u64 + 1, beyond));
    }
    Ok(record)
}

/// What one repair step did.
#[derive(Debug, Clone)]
pub struct Repaired {
    /// The damaged segment's file name.
    pub segment: String,
    /// The damage, as the check reported it.
    pub reason: String,
    /// Frames kept before the damage.
    pub frames_kept: u64,
    /// The quarantined copy, relative to the data directory.
    pub quarantine: String,
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

/// One segment as repair sees it: where it stands and what it holds.
struct Held {
    first_seq: u64,
    path: PathBuf,
    bytes: Vec<u8>,
}

/// Removes one fault: quarantines the damaged segment, keeps (and re-seals) its frames before
/// `offset`, and records the link this breaks.
fn repair_one(
    data_dir: &Path,
    path: &Path,
    offset: u64,
    damage: Damage,
    now_us: u64,
) -> Result<Repaired, StorageError> {
    let reason = damage.to_string();
    let segments = path
        .parent()
        .expect("a segment is in a directory")
        .to_path_buf();
    let names = list_segments(&segments)?;
    let index = names
        .iter()
        .position(|(_, p)| p == path)
        .expect("the check named a listed segment");
    let read = |(first_seq, path): &(u64, PathBuf)| -> Result<Held, StorageError> {
        let bytes = std::fs::read(path).map_err(StorageError::io("read", path))?;
        Ok(Held {
            first_seq: *first_seq,
            path: path.clone(),
            bytes,
        })
    };
    let damaged = read(&names[index])?;
    let name = segment_file_name(damaged.first_seq);
    // Checked before anything changes: a forged frame or footer can claim any seq, and a repair
    // refused half-way would leave the log changed with no record.
    if let Some(claimed) = max_seq_in(&damaged.bytes).filter(|s| *s >= SEQ_RECORDED_MAX) {
        return Err(beyond_any_log(&damaged, offset, claimed));
    }
    // A segment that checks out on its own, whose link to the one before is broken, has a broken
    // link, not broken bytes: the link is recorded and nothing is moved.
    let link_only = damage.is_link() && own_check(&damaged).is_some();

    // The quarantined copy first: nothing below changes the log before it is safe.
    let quarantine = format!("{QUARANTINE_DIR}/{now_us}-{name}");
    // When the damaged segment is the last, the seqs its bytes may have held are recorded before
    // anything changes: a repair stopped half-way then still leaves a record whose first seq
    // start-up numbers past (as after a cut), so no seq a reader was served is given again.
    let resumed_at = if !link_only && index + 1 == names.len() {
        let first_seq = resume_after(&damaged, offset)?;
        let kept_before = match offset {
            0 => frames_from(&damaged.bytes, damaged.first_seq, damaged.bytes.len()).frames,
            _ => valid_prefix(&damaged.bytes, offset as usize).frames,
        };
        let after_seq = damaged.first_seq - 1 + kept_before;
        // Only where seqs are skipped: otherwise nothing a reader was served is at risk.
        if first_seq > after_seq + 1 {
            append_record(
                &Disk::real(),
                &segments,
                &Break {
                    repaired_at_us: now_us,
                    first_seq,
                    after_seq,
                    prev_hash: String::new(),
                    kept_hash: String::new(),
                    quarantine: quarantine.clone(),
                    reason: format!("{reason} (recorded as the repair began)"),
                    kind: BreakKind::Repair,
                    cut: None,
                },
            )?;
        }
        Some(first_seq)
    } else {
        None
    };
    if !link_only {
        let target = data_dir.join(&quarantine);
        create_private_dir(target.parent().expect("in the quarantine directory"))
            .map_err(StorageError::io("create directory", &target))?;
        write_new(&target, &damaged.bytes)?;
    }

    let before_hash = index
        .checked_sub(1)
        .map(|i| read(&names[i]))
        .transpose()?
        .map(|held| chain_hash(&held));
    let kept = if link_only {
        own_check(&damaged).map(|(frames, _)| frames).unwrap_or(0)
    } else {
        cut_damage(&damaged, offset, before_hash)?
    };
    sync_dir(&segments)?;

    // The link that now breaks: from the segment before the damage (or the repaired one) to the
    // one after it; or, when the damaged one was last, to a new segment past every seq it held.
    let names = list_segments(&segments)?;
    let before = if link_only {
        index.checked_sub(1).map(|i| read(&names[i])).transpose()?
    } else {
        names
            .iter()
            .rev()
            .find(|(first, _)| *first <= damaged.first_seq)
            .map(read)
            .transpose()?
    };
    let after_position = if link_only {
        index
    } else {
        index + usize::from(kept > 0)
    };
    let after = match names.get(after_position) {
        Some(next) => Some(read(next)?),
        None if link_only => None,
        None => {
            // The damaged segment was the last: continue in a new one, starting past any seq the
            // quarantined bytes held, so that no seq is ever given to two events.
            let first_seq = resumed_at.expect("computed for a last segment");
            let prev_hash = before.as_ref().map_or([0; 32], chain_hash);
            let created = create_empty_segment(&segments, first_seq, prev_hash, now_us)?;
            Some(read(&(first_seq, created))?)
        }
    };
    let moved = if link_only {
        String::new()
    } else {
        quarantine.clone()
    };
    let mut broke = broken_link(before, after.as_ref(), now_us, moved.clone(), &reason)?;
    if broke.is_none() && !link_only {
        // Bytes were moved aside although no link between two segments broke: a header rebuilt
        // on a last segment, or a first segment cut or removed. The repair is recorded all the
        // same, at the segment that now begins where the damage was, so verify never says a
        // plain "ok" over a repair.
        let names = list_segments(&segments)?;
        let subject = if kept > 0 {
            Some(read(&(damaged.first_seq, damaged.path.clone()))?)
        } else {
            after
        };
        if let Some(subject) = subject {
            let position = names.iter().position(|(_, p)| *p == subject.path);
            let pred = position
                .and_then(|i| i.checked_sub(1))
                .map(|i| read(&names[i]))
                .transpose()?;
            let header = format::decode_header(&subject.bytes)
                .map_err(|kind| StorageError::corrupt(&subject.path, 0, Damage::Header(kind)))?;
            let after_seq = match &pred {
                Some(pred) => last_seq_of(pred).unwrap_or(pred.first_seq - 1),
                None if kept > 0 => subject.first_seq - 1,
                None => damaged.first_seq - 1,
            };
            broke = Some(Break {
                repaired_at_us: now_us,
                first_seq: subject.first_seq,
                after_seq,
                prev_hash: hex(&header.prev_hash),
                kept_hash: hex(&pred.as_ref().map_or([0; 32], chain_hash)),
                quarantine: moved,
                reason: reason.clone(),
                kind: BreakKind::Repair,
                cut: None,
            });
        }
    }
    if let Some(record) = &broke {
        append_record(&Disk::real(), &segments, record)?;
    }
    Ok(Repaired {
        segment: name,
        reason,
        frames_kept: kept,
        quarantine: if link_only { String::new() } else { quarantine },
        broke,
    })
}

/// Where numbering goes on after the damaged last segment: past the highest seq of a valid frame
/// or footer anywhere in its bytes, its kept frames, and, unless a valid footer bounds them, every
/// seq the bytes after the kept frames may have held, by the rule start-up's cuts use
/// (storage-format.md, "Cuts at start-up"): frames behind the damage may be damaged too. Worked
/// out from the bytes alone, before anything changes.
fn resume_after(damaged: &Held, offset: u64) -> Result<u64, StorageError> {
    let prefix = if offset == 0 {
        frames_from(&damaged.bytes, damaged.first_seq, damaged.bytes.len())
    } else {
        valid_prefix(&damaged.bytes, offset as usize)
    };
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
        return Err(beyond_any_log(damaged, offset, highest));
    }
    Ok(highest + 1)
}

/// The refusal of a segment whose bytes claim a seq no log reaches.
fn beyond_any_log(damaged: &Held, offset: u64, claimed: u64) -> StorageError {
    StorageError::corrupt(&damaged.path, offset, Damage::BeyondAnyLog { claimed })
}

/// Keeps a damaged segment's whole frames before `offset` and seals it over them, or removes it
/// when none are kept. Returns the frames kept.
///
/// A fault at offset 0 is in the header (or the header names another first seq than the file
/// name): the header cannot be trusted, but the frames behind it can be checked on their own.
/// Every frame that checks out from the header's end, with seqs from the file name's first seq
/// on, is kept under a rebuilt header: that first seq, the first frame's receive time as the
/// creation time, and `before_hash` (the hash of the segment before, zeros for the first) as the
/// previous hash; then the segment is sealed.
fn cut_damage(damaged: &Held, offset: u64, before_hash: Option<Hash>) -> Result<u64, StorageError> {
    if offset == 0 {
        let prefix = frames_from(&damaged.bytes, damaged.first_seq, damaged.bytes.len());
        if prefix.frames == 0 {
            std::fs::remove_file(&damaged.path)
                .map_err(StorageError::io("remove", &damaged.path))?;
        } else {
            rebuild(damaged, &prefix, before_hash.unwrap_or([0; 32]))?;
        }
        return Ok(prefix.frames);
    }
    let prefix = valid_prefix(&damaged.bytes, offset as usize);
    if prefix.frames == 0 {
        std::fs::remove_file(&damaged.path).map_err(StorageError::io("remove", &damaged.path))?;
    } else {
        reseal(damaged, &prefix)?;
    }
    Ok(prefix.frames)
}

/// The record of the link between `before` and `after`, if a repair broke it.
fn broken_link(
    before: Option<Held>,
    after: Option<&Held>,
    now_us: u64,
    quarantine: String,
    reason: &str,
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
        repaired_at_us: now_us,
        first_seq: after.first_seq,
        after_seq,
        prev_hash: hex(&header.prev_hash),
        kept_hash: hex(&kept_hash),
        quarantine,
        reason: reason.to_owned(),
        kind: BreakKind::Repair,
        cut: None,
    }))
}

/// The frames of a segment that check out on their own, with its footer if sealed and its hash
/// matches: `(frames, sealed)`, or `None` if the segment does not check out.
fn own_check(held: &Held) -> Option<(u64, bool)> {
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
    last_seq: u64,
    received_min_us: u64,
    received_max_us: u64,
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
fn frames_from(bytes: &[u8], first_seq: u64, limit: usize) -> Prefix {
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

/// The chain hash of a segment as repair leaves it: its footer's, or the hash of its bytes.
fn chain_hash(held: &Held) -> Hash {
    let prefix = valid_prefix(&held.bytes, held.bytes.len());
    match format::decode_at(&held.bytes, prefix.end) {
        Decoded::Footer(footer) => footer.segment_hash,
        _ => Sha256::digest(&held.bytes[..prefix.end]).into(),
    }
}

fn last_seq_of(held: &Held) -> Option<u64> {
    let prefix = valid_prefix(&held.bytes, held.bytes.len());
    (prefix.frames > 0).then_some(prefix.last_seq)
}

/// The highest seq of any valid frame anywhere in damaged bytes (a byte-by-byte search: repair
/// is offline and rare).
fn max_seq_in(bytes: &[u8]) -> Option<u64> {
    (HEADER_BYTES..bytes.len())
        .filter_map(|at| match format::decode_at(bytes, at) {
            Decoded::Frame { frame, .. } => Some(frame.seq),
            Decoded::Footer(footer) => Some(footer.last_seq),
            _ => None,
        })
        .max()
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

/// Appends a record to the segment directory's file of repairs, durably.
fn append_record(disk: &Disk, segments: &Path, record: &Break) -> Result<(), StorageError> {
    let path = segments.join(REPAIRS_FILE);
    let line = serde_json::to_string(record).expect("a record serializes") + "\n";
    disk.append(&path, line.as_bytes())
        .map_err(StorageError::io("write", &path))?;
    disk.sync_dir(segments)
        .map_err(StorageError::io("fsync directory", segments))
}

#[cfg(test)]
mod tests {
    use super::torn_from;

    #[test]
    fn a_torn_last_record_is_told_from_whole_ones() {
        let whole = b"{\"first_seq\":1}\n{\"first_seq\":2}\n";
        assert_eq!(torn_from(whole), whole.len());
        assert_eq!(torn_from(b""), 0);
        // Cut short: no newline.
        assert_eq!(torn_from(b"{\"first_seq\":1}\n{\"first_s"), 16);
        // A sector of it never written: zeros, newline and all there.
        assert_eq!(torn_from(b"{\"first_seq\":1}\n\0\0\0\0_seq\":2}\n"), 16);
        assert_eq!(torn_from(b"\0\0\0\0\0\0\0\0"), 0);
    }
}
