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

/// [`scan_log`] on every core: each worker checks a whole segment and turns its events into bytes
/// with `render` (into one buffer per segment); `write` gets each segment and its buffer in log
/// order, only once the segment is linked to the one before. At most `threads` segments' buffers exist at
/// once, so memory stays within a few segments' worth of output whatever the log's size. The
/// first fault in log order ends the scan, after every segment before it was written.
pub fn scan_log_parallel(
    dir: &Path,
    render: impl Fn(&StoredEvent<'_>, &mut Vec<u8>) + Sync,
    mut write: impl FnMut(&SegmentInfo, &[u8]) -> std::io::Result<()>,
) -> Result<Vec<SegmentInfo>, StorageError> {
    type Rendered = Result<Option<(SegmentInfo, Vec<u8>)>, StorageError>;
    let names = list_segments(dir)?;
    let breaks = Breaks::load(dir)?;
    let count = names.len();
    let threads = scan_threads(count);
    // (the next segment to take, the rendered ones not yet written by index, how many were
    // written): workers wait while `threads` segments are ahead of the writer.
    let state = Mutex::new((
        0usize,
        std::collections::BTreeMap::<usize, Rendered>::new(),
        0usize,
    ));
    let changed = std::sync::Condvar::new();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let mut infos: Vec<SegmentInfo> = Vec::with_capacity(count);
    let outcome: Result<(), StorageError> = std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let index = {
                    let mut guard = state.lock().expect("scan lock");
                    loop {
                        let (next, written) = (guard.0, guard.2);
                        if stop.load(std::sync::atomic::Ordering::Relaxed) || next >= count {
                            return;
                        }
                        // Segments taken but not yet written stay below `threads`: those being
                        // rendered, and those rendered and waiting for the writer.
                        if next < written + threads {
                            guard.0 += 1;
                            break next;
                        }
                        guard = changed.wait(guard).expect("scan lock");
                    }
                };
                let (first_seq, path) = &names[index];
                let rendered = render_one(path, *first_seq, Mode::of(index + 1 == count), &render);
                state.lock().expect("scan lock").1.insert(index, rendered);
                changed.notify_all();
            });
        }
        let result = (|| {
            for index in 0..count {
                let rendered = {
                    let mut guard = state.lock().expect("scan lock");
                    loop {
                        if let Some(rendered) = guard.1.remove(&index) {
                            guard.2 = index + 1;
                            break rendered;
                        }
                        guard = changed.wait(guard).expect("scan lock");
                    }
                };
                changed.notify_all();
                let Some((info, bytes)) = next_in_chain(&infos, rendered, |r| &r.0, &breaks)?
                else {
                    continue;
                };
                write(&info, &bytes)
                    .map_err(StorageError::io("write the output of", &info.path))?;
                infos.push(info);
            }
            Ok(())
        })();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        changed.notify_all();
        result
    });
    outcome.map(|()| infos)
}

/// Checks one segment on its own and renders its events into one buffer.
fn render_one(
    path: &Path,
    first_seq: u64,
    mode: Mode,
    render: &(impl Fn(&StoredEvent<'_>, &mut Vec<u8>) + Sync),
) -> Result<Option<(SegmentInfo, Vec<u8>)>, StorageError> {
    // Lines are about the size of the frames they come from: room for all of them at once, so
    // the buffer is never copied as it grows.
    let file_bytes = std::fs::metadata(path).map_or(0, |m| m.len() as usize);
    let mut out = Vec::with_capacity(file_bytes + file_bytes / 8);
    let info = check_one(path, first_seq, mode, &mut |event| render(event, &mut out))?;
    Ok(info.map(|info| (info, out)))
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
    let threads = scan_threads(count);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<Mutex<Checked>> = (0..count).map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((first_seq, path)) = names.get(index) else {
                    break;
                };
                let checked =
                    check_one(path, *first_seq, Mode::of(index + 1 == count), &mut |_| {});
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
        if let Some(info) = next_in_chain(&infos, checked, |info| info, &breaks)? {
            infos.push(info);
        }
    }
    Ok(infos)
}

/// The checks between a segment checked on its own and the segments before it, in log order:
/// any later file, even one without a whole header, proves the one before it should have been
/// sealed (start-up refuses the same directory); then the segment's own fault, if it had one;
/// then its link to the one before. `Ok(None)` for a file with no whole header.
fn next_in_chain<T>(
    infos: &[SegmentInfo],
    checked: Result<Option<T>, StorageError>,
    info_of: impl Fn(&T) -> &SegmentInfo,
    breaks: &Breaks,
) -> Result<Option<T>, StorageError> {
    if let Some(prev) = infos.last() {
        check_sealed(&prev.end())?;
    }
    let Some(next) = checked? else {
        return Ok(None);
    };
    if let Some(prev) = infos.last() {
        let info = info_of(&next);
        check_link(
            &prev.end(),
            &info.path,
            info.first_seq,
            &info.prev_hash,
            breaks,
        )?;
    }
    Ok(Some(next))
}

/// Checks one segment on its own (its links to its neighbours are checked by the caller),
/// handing every event to `each`.
fn check_one(
    path: &Path,
    first_seq: u64,
    mode: Mode,
    each: &mut impl FnMut(&StoredEvent<'_>),
) -> Result<Option<SegmentInfo>, StorageError> {
    let map = map_file(path)?;
    let scanned = scan_segment(
        path,
        &map,
        first_seq,
        mode,
        Hashing::Inline,
        |_| Ok(()),
        each,
    )?;
    Ok(match scanned {
        Scanned::HeaderTorn => None,
        Scanned::Segment(scan) => Some(SegmentInfo::of(
            path.to_path_buf(),
            first_seq,
            map.len() as u64,
            &scan,
        )),
    })
}

/// Threads for a parallel scan of `segments` segments: one per core, at most one per segment.
fn scan_threads(segments: usize) -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(segments.max(1))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::event::EventLine;
    use crate::storage::{open, Disk, LogConfig};

    /// A log of several 2 KiB segments, with a body holding a line break now and then.
    fn log(dir: &Path) -> LogConfig {
        let config = LogConfig {
            dir: dir.join("segments"),
            segment_max_bytes: 2048,
            segment_max_age: Duration::from_secs(3600),
            disk: Disk::real(),
        };
        let mut opened = open(&config, 1, |_| {}).unwrap();
        for group in 0..30u64 {
            let first = opened.writer.next_seq();
            let ids: Vec<String> = (0..3).map(|i| format!("i-{group}-{i}")).collect();
            let body = if group % 7 == 0 {
                "{\"a\":\n1}"
            } else {
                "{\"pad\":\"xxxxxxxxxxxxxxxxxxxxxxxx\"}"
            };
            let events = super::super::open::test_group(first, &ids, body);
            opened.writer.append(&events, 10 + group).result.unwrap();
        }
        config
    }

    /// The lines of every event, one core, as `scan_log` hands them out.
    fn serial_lines(dir: &Path) -> Vec<u8> {
        let mut out = Vec::new();
        scan_log(
            dir,
            |e| {
                out.extend(serde_json::to_vec(&EventLine::of(e).unwrap()).unwrap());
                out.push(b'\n');
            },
            |_| {},
        )
        .unwrap();
        out
    }

    #[test]
    fn the_parallel_scan_writes_what_the_serial_one_reads_in_log_order() {
        let dir = tempfile::tempdir().unwrap();
        let config = log(dir.path());
        let mut out = Vec::new();
        let mut segments = Vec::new();
        let infos = scan_log_parallel(&config.dir, EventLine::write_checked, |info, bytes| {
            segments.push(info.first_seq);
            out.extend_from_slice(bytes);
            Ok(())
        })
        .unwrap();
        assert!(infos.len() >= 4, "{} segments", infos.len());
        assert!(segments.windows(2).all(|w| w[0] < w[1]), "{segments:?}");
        // Byte for byte what serializing each EventLine gives, line breaks in bodies included.
        assert_eq!(
            String::from_utf8(out).unwrap(),
            String::from_utf8(serial_lines(&config.dir)).unwrap()
        );
    }

    #[test]
    fn a_damaged_segment_stops_the_parallel_scan_after_every_segment_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let config = log(dir.path());
        let names = list_segments(&config.dir).unwrap();
        let (_, third) = &names[2];
        let mut bytes = std::fs::read(third).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 0x10;
        std::fs::write(third, &bytes).unwrap();
        let mut written = Vec::new();
        let err = scan_log_parallel(
            &config.dir,
            |_, _| {},
            |info, _| {
                written.push(info.path.clone());
                Ok(())
            },
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains(&third.file_name().unwrap().to_string_lossy().into_owned()),
            "{err}"
        );
        let before: Vec<_> = names[..2].iter().map(|(_, p)| p.clone()).collect();
        assert_eq!(written, before);
        // And a writer that fails stops it too, naming the segment.
        let err = scan_log_parallel(
            &config.dir,
            |_, _| {},
            |_, _| Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe)),
        )
        .unwrap_err();
        assert!(matches!(err, StorageError::Io { .. }), "{err}");
    }
}
