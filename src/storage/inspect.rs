//! Read-only inspection for the offline tool: no lock, no truncation, safe while a server writes.
//! Built from the same segment check ([`scan_segment`]) and link check ([`check_link`]) as
//! start-up, so `verify` accepts exactly the directories start-up accepts.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::Digest;

use super::dir::{list_segments, map_file};
use super::format::Hash;
use super::link::{check_link, check_sealed, End};
use super::repair::Breaks;
use super::scan::{scan_segment, Hashing, Mode, Scan, Scanned};
use super::StorageError;
use crate::event::StoredEvent;

/// One segment as a read-only scan found it.
#[derive(Debug, Clone)]
pub struct SegmentInfo {
    /// The file.
    pub path: PathBuf,
    /// Seq of its first frame.
    pub first_seq: u64,
    /// Number of valid frames.
    pub events: u64,
    /// File size in bytes.
    pub bytes: u64,
    /// Whether it carries a valid footer.
    pub sealed: bool,
    /// Oldest and newest receive time in it, microseconds (0 when empty).
    pub received_us: (u64, u64),
    /// The chain hash: the footer's for a sealed segment, the running hash of its bytes so far
    /// for the active one.
    pub hash: Hash,
    /// The previous segment's hash, as this segment's header names it.
    pub prev_hash: Hash,
    /// Bytes at its end that are not (yet) a whole valid frame: a write in progress, or a torn
    /// tail that the next start truncates. Only ever non-zero for the last segment.
    pub tail_bytes: u64,
}

impl SegmentInfo {
    fn of(path: PathBuf, first_seq: u64, bytes: u64, scan: &Scan) -> SegmentInfo {
        SegmentInfo {
            path,
            first_seq,
            events: scan.frames.len(),
            bytes,
            sealed: scan.footer.is_some(),
            received_us: (scan.received_min_us, scan.received_max_us),
            hash: scan
                .footer
                .map_or_else(|| scan.hasher.clone().finalize().into(), |f| f.segment_hash),
            prev_hash: scan.header.prev_hash,
            tail_bytes: bytes - scan.end(),
        }
    }

    /// Its end, as the next segment must continue it.
    fn end(&self) -> End<'_> {
        End {
            path: &self.path,
            bytes: self.bytes,
            sealed: self.sealed,
            last_seq: self.first_seq + self.events - 1,
            hash: self.hash,
        }
    }
}

/// Reads a log without changing it and hands every event to `each`, in seq order. `progress` is
/// told the bytes of each segment once it is read. The first fault ends the scan with the file,
/// offset and reason.
pub fn scan_log(
    dir: &Path,
    mut each: impl FnMut(&StoredEvent<'_>),
    mut progress: impl FnMut(u64),
) -> Result<Vec<SegmentInfo>, StorageError> {
    let names = list_segments(dir)?;
    let breaks = Breaks::load(dir)?;
    let mut infos: Vec<SegmentInfo> = Vec::with_capacity(names.len());
    let count = names.len();
    for (index, (first_seq, path)) in names.into_iter().enumerate() {
        if let Some(prev) = infos.last() {
            check_sealed(&prev.end())?;
        }
        let map = map_file(&path)?;
        let bytes = map.len() as u64;
        let link = |header: &super::format::Header| match infos.last() {
            Some(prev) => check_link(&prev.end(), &path, first_seq, &header.prev_hash, &breaks),
            None => Ok(()),
        };
        let scanned = scan_segment(
            &path,
            &map,
            first_seq,
            Mode::of(index + 1 == count),
            Hashing::Inline,
            link,
            &mut each,
        )?;
        progress(bytes);
        if let Scanned::Segment(scan) = scanned {
            infos.push(SegmentInfo::of(path, first_seq, bytes, &scan));
        }
    }
    Ok(infos)
}

/// What [`scan_log`] checks, without handing out events: segments are checked on every core at
/// once, then their links in order. Reports the first fault in log order.
pub fn verify_log(
    dir: &Path,
    progress: impl Fn(u64) + Sync,
) -> Result<Vec<SegmentInfo>, StorageError> {
    type Checked = Option<Result<Option<SegmentInfo>, StorageError>>;
    let names = list_segments(dir)?;
    let breaks = Breaks::load(dir)?;
    let count = names.len();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(count.max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<Mutex<Checked>> = (0..count).map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((first_seq, path)) = names.get(index) else {
                    break;
                };
                let checked = check_one(path, *first_seq, Mode::of(index + 1 == count));
                if let Ok(Some(info)) = &checked {
                    progress(info.bytes);
                }
                *results[index].lock().expect("result lock") = Some(checked);
            });
        }
    });
    let mut infos: Vec<SegmentInfo> = Vec::with_capacity(count);
    for result in results {
        let checked = result
            .into_inner()
            .expect("result lock")
            .expect("every segment was checked");
        // Any later file, even one without a whole header, proves the one before it should
        // have been sealed: start-up refuses the same directory.
        if let Some(prev) = infos.last() {
            check_sealed(&prev.end())?;
        }
        let Some(info) = checked? else { continue };
        if let Some(prev) = infos.last() {
            check_link(
                &prev.end(),
                &info.path,
                info.first_seq,
                &info.prev_hash,
                &breaks,
            )?;
        }
        infos.push(info);
    }
    Ok(infos)
}

/// Checks one segment on its own (its links to its neighbours are checked by the caller).
fn check_one(path: &Path, first_seq: u64, mode: Mode) -> Result<Option<SegmentInfo>, StorageError> {
    let map = map_file(path)?;
    let bytes = map.len() as u64;
    let scanned = scan_segment(
        path,
        &map,
        first_seq,
        mode,
        Hashing::Inline,
        |_| Ok(()),
        &mut |_| {},
    )?;
    Ok(match scanned {
        Scanned::HeaderTorn => None,
        Scanned::Segment(scan) => {
            Some(SegmentInfo::of(path.to_path_buf(), first_seq, bytes, &scan))
        }
    })
}
