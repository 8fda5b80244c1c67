//! The record of chain breaks, `segments/repairs.jsonl`: one JSON line per link that a repair or
//! a start-up's cut broke, which start-up and `verify` accept only when a line names it exactly,
//! and past whose seqs numbering goes on (storage-format.md, "Repair" and "Cuts at start-up").

use std::path::Path;

use super::format::Hash;
use super::{Damage, Disk, LogConfig, StorageError};
use crate::hex::encode as hex;

/// The record of repairs, in the segment directory: one JSON object per line.
pub const REPAIRS_FILE: &str = "repairs.jsonl";
/// The highest seq a repair record may name: far past any log (2^62 events), far from overflow.
pub const SEQ_RECORDED_MAX: u64 = 1 << 62;
/// Where repair moves damaged bytes, in the data directory.
pub const QUARANTINE_DIR: &str = "quarantine";

/// A link between two segments that a repair broke, and what was moved aside.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Break {
    /// When the repair was made, microseconds since the Unix epoch.
    pub repaired_at_us: u64,
    /// First seq of the segment whose link to the one before it is broken.
    pub first_seq: u64,
    /// Last seq of the segment now before it (0 when none).
    pub after_seq: u64,
    /// The previous segment's hash as that segment's header names it, in hex (`None` in a line a
    /// repair writes as it begins, which names no link: written `""`).
    #[serde(with = "empty_is_none")]
    pub prev_hash: Option<String>,
    /// The hash of the segment now before it, in hex (`None` as for `prev_hash`).
    #[serde(with = "empty_is_none")]
    pub kept_hash: Option<String>,
    /// The quarantined copy of the damaged segment, relative to the data directory (`None` when
    /// nothing was moved: a broken link between intact segments; written `""`).
    #[serde(with = "empty_is_none")]
    pub quarantine: Option<String>,
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
                && b.prev_hash.as_deref() == Some(hex(prev_hash).as_str())
                && b.kept_hash.as_deref() == Some(hex(kept_hash).as_str())
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

/// Appends a record to the segment directory's file of repairs, durably.
/// An optional text field that the record of repairs has always written as `""` when absent: the
/// file's format stays as it was.
mod empty_is_none {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<String>, to: S) -> Result<S::Ok, S::Error> {
        to.serialize_str(value.as_deref().unwrap_or(""))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(from: D) -> Result<Option<String>, D::Error> {
        let text = String::deserialize(from)?;
        Ok((!text.is_empty()).then_some(text))
    }
}

pub(super) fn append_record(
    disk: &Disk,
    segments: &Path,
    record: &Break,
) -> Result<(), StorageError> {
    let path = segments.join(REPAIRS_FILE);
    let line = serde_json::to_string(record).expect("a record serializes") + "\n";
    disk.append(&path, line.as_bytes())
        .map_err(StorageError::io("write", &path))?;
    disk.sync_dir(segments)
        .map_err(StorageError::io("fsync directory", segments))
}

#[cfg(test)]
mod tests {
    use super::{torn_from, Break, BreakKind};

    /// A line as the record has always held it: empty strings for what is absent, and back.
    #[test]
    fn absent_fields_are_written_and_read_as_empty_strings() {
        let line = r#"{"repaired_at_us":5,"first_seq":9,"after_seq":3,"prev_hash":"","kept_hash":"","quarantine":"","reason":"r","kind":"repair"}"#;
        let record: Break = serde_json::from_str(line).unwrap();
        assert_eq!(
            (&record.prev_hash, &record.kept_hash, &record.quarantine),
            (&None, &None, &None)
        );
        assert_eq!(record.kind, BreakKind::Repair);
        assert_eq!(serde_json::to_string(&record).unwrap(), line);
        let moved = Break {
            quarantine: Some("quarantine/1-x.seg".into()),
            ..record
        };
        let text = serde_json::to_string(&moved).unwrap();
        assert!(
            text.contains(r#""quarantine":"quarantine/1-x.seg""#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<Break>(&text).unwrap(), moved);
    }

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
