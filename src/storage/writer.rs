//! The single appender of the log.
//!
//! One [`LogWriter`] owns the active segment. Each call to [`LogWriter::append`] is one group
//! commit: every frame of the group goes into one `pwrite` and one `fdatasync`, and the group never
//! straddles two segments (a roll happens before the write, never inside it). A group is
//! acknowledged only once it is entirely on disk; after a crash in the middle of its write,
//! recovery keeps the valid frames before the damage (storage-format.md, crash case 2).
//!
//! A failed write or fdatasync is undone by truncating back to the last durable length; if even
//! that fails the writer is poisoned and refuses every later append, because what is in the page
//! cache can no longer be trusted to match the disk (the "fsyncgate" lesson).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::Arc;

use memmap2::{Mmap, MmapOptions};
use sha2::{Digest, Sha256};

use super::catalog::{CatalogChange, FrameIndex, SegmentView};
use super::dir::FILE_MODE;
use super::format::{self, Footer, Hash, Header, FOOTER_BYTES, HEADER_BYTES};
use super::{segment_file_name, LogConfig, StorageError};
use crate::event::StoredEvent;

/// The state of the active segment, and the means to append to it.
pub struct LogWriter {
    config: LogConfig,
    file: File,
    path: PathBuf,
    header: Header,
    next_seq: u64,
    /// Bytes of header and frames known to be on disk.
    data_len: u64,
    /// Length of the current read mapping of the active segment.
    map_len: usize,
    /// SHA-256 over the header and every durable frame: the segment's chain hash once sealed.
    hasher: Sha256,
    received_min_us: u64,
    received_max_us: u64,
    frames: u64,
    buf: Vec<u8>,
    poisoned: Option<String>,
    /// Changes the catalog has not been told of yet. A roll records its changes here before the
    /// group's write, so that they reach the catalog even when that write then fails.
    changes: Vec<CatalogChange>,
}

/// What a write did to the files, which the catalog must mirror whatever its outcome: a roll
/// before a failed write still sealed one segment and created the next.
#[must_use = "the catalog must mirror every change a write made, whether it succeeded or not"]
#[derive(Debug)]
pub struct Written {
    /// Whether the write (and its fdatasync) succeeded.
    pub result: Result<(), StorageError>,
    /// The changes, in order, for [`super::Catalog::apply`].
    pub changes: Vec<CatalogChange>,
}

/// Where an unsealed segment's writer goes on, as the scan of its bytes found it.
pub(super) struct Resume {
    pub header: Header,
    /// End of its last valid frame.
    pub data_len: u64,
    /// SHA-256 of its header and frames.
    pub hasher: Sha256,
    pub frames: u64,
    pub received_min_us: u64,
    pub received_max_us: u64,
}

/// A segment file just created, holding only its header.
pub(super) struct NewSegment {
    file: File,
    path: PathBuf,
    header: Header,
    header_bytes: [u8; HEADER_BYTES],
}

/// Bytes the writability probe writes and syncs: room for a small group.
const PROBE_BYTES: usize = 64 * 1024;
/// The probe's file in the segment directory; never a segment name, removed after each probe.
const PROBE_FILE: &str = "probe.tmp";

impl LogWriter {
    /// The writer of an unsealed segment, going on after its last valid frame.
    pub(super) fn resume(
        config: &LogConfig,
        path: PathBuf,
        at: Resume,
    ) -> Result<LogWriter, StorageError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(StorageError::io("open", &path))?;
        Ok(LogWriter::over(config, file, path, at))
    }

    /// The writer of a new, empty segment starting at `first_seq`, after a segment whose chain
    /// hash is `prev_hash` (zeros for the first of a log).
    pub(super) fn create(
        config: &LogConfig,
        first_seq: u64,
        prev_hash: Hash,
        now_us: u64,
    ) -> Result<LogWriter, StorageError> {
        let segment = create_segment(config, first_seq, prev_hash, now_us)?;
        let mut hasher = Sha256::new();
        hasher.update(segment.header_bytes);
        let at = Resume {
            header: segment.header,
            data_len: HEADER_BYTES as u64,
            hasher,
            frames: 0,
            received_min_us: 0,
            received_max_us: 0,
        };
        Ok(LogWriter::over(config, segment.file, segment.path, at))
    }

    /// The writer of the open segment file at `path`, going on where `at` says.
    fn over(config: &LogConfig, file: File, path: PathBuf, at: Resume) -> LogWriter {
        LogWriter {
            config: config.clone(),
            file,
            path,
            header: at.header,
            next_seq: at.header.first_seq + at.frames,
            data_len: at.data_len,
            map_len: 0,
            hasher: at.hasher,
            received_min_us: at.received_min_us,
            received_max_us: at.received_max_us,
            frames: at.frames,
            buf: Vec::new(),
            poisoned: None,
            changes: Vec::new(),
        }
    }

    /// The catalog's view of the active segment while it holds no frame, mapped.
    pub(super) fn empty_view(&mut self) -> Result<SegmentView, StorageError> {
        let map = self.map_active(HEADER_BYTES)?;
        Ok(SegmentView {
            first_seq: self.header.first_seq,
            path: self.path.clone(),
            map,
            frames: FrameIndex::default(),
            data_len: self.data_len,
            footer: None,
            received_max_us: 0,
            received_min_us: 0,
        })
    }

    /// Writes, syncs and removes a small file beside the segments: whether a group could be
    /// written now. After a failed write (a full disk, say) nothing else tells that space is back
    /// while no event arrives, and a load balancer that drains on `/readyz` sends none.
    pub fn probe(&self) -> Result<(), StorageError> {
        let path = self.config.dir.join(PROBE_FILE);
        let io = |op| StorageError::io(op, &path);
        let written = (|| {
            let file = OpenOptions::new()
                .mode(FILE_MODE)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .map_err(io("create"))?;
            file.write_all_at(&[0u8; PROBE_BYTES], 0)
                .map_err(io("write"))?;
            file.sync_data().map_err(io("fdatasync"))
        })();
        let _ = std::fs::remove_file(&path);
        written
    }

    /// What the writer changed that the catalog has not mirrored yet.
    pub(super) fn take_changes(&mut self) -> Vec<CatalogChange> {
        std::mem::take(&mut self.changes)
    }

    /// The seq the next appended event must carry.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Where the writer's files are written, for the other changes to the log's files (retention's
    /// deletions).
    pub fn disk(&self) -> &super::Disk {
        &self.config.disk
    }

    /// Whether an earlier failure stopped the writer.
    pub fn poisoned(&self) -> Option<&str> {
        self.poisoned.as_deref()
    }

    /// Appends a group of events with one write and one fdatasync, rolling to a new segment first
    /// if the active one is full or old. Returns what the catalog must mirror.
    ///
    /// `events` must carry seqs `next_seq()..` in order, with `write_index` counting from 0.
    pub fn append(&mut self, events: &[StoredEvent<'_>], now_us: u64) -> Written {
        let result = self.append_group(events, now_us);
        Written {
            result,
            changes: std::mem::take(&mut self.changes),
        }
    }

    fn append_group(
        &mut self,
        events: &[StoredEvent<'_>],
        now_us: u64,
    ) -> Result<(), StorageError> {
        if let Some(reason) = &self.poisoned {
            return Err(StorageError::Poisoned(reason.clone()));
        }
        assert!(!events.is_empty(), "an empty group");
        self.buf.clear();
        let mut relative = Vec::with_capacity(events.len());
        for (i, event) in events.iter().enumerate() {
            assert_eq!(
                event.seq,
                self.next_seq + i as u64,
                "seqs must continue the log"
            );
            assert_eq!(
                event.write_index as usize, i,
                "write_index counts within the group"
            );
            relative.push(self.buf.len());
            format::encode_frame(event, &mut self.buf);
        }
        self.write_buffered(relative, now_us, true)
    }

    /// Appends frames encoded elsewhere (by the node of a cluster that planned them), written as
    /// [`LogWriter::append`] writes a group: a roll first if one is due, one write, one
    /// fdatasync. `frames` must hold whole frames that decode, with seqs `next_seq()..` and
    /// `write_index` counting from where their group began; the caller checks them. The rest of
    /// a group whose beginning is already written (`may_roll` false) never rolls: the group stays
    /// in one segment, as on every other node.
    /// `received_at_us` is the frames' receive time, which also decides an age-based roll, so
    /// every node rolls at the same frame.
    pub fn append_encoded(
        &mut self,
        frames: &[u8],
        received_at_us: u64,
        may_roll: bool,
    ) -> Written {
        let result = self.append_encoded_group(frames, received_at_us, may_roll);
        Written {
            result,
            changes: std::mem::take(&mut self.changes),
        }
    }

    fn append_encoded_group(
        &mut self,
        frames: &[u8],
        now_us: u64,
        may_roll: bool,
    ) -> Result<(), StorageError> {
        if let Some(reason) = &self.poisoned {
            return Err(StorageError::Poisoned(reason.clone()));
        }
        assert!(!frames.is_empty(), "an empty group");
        let mut relative = Vec::new();
        let mut at = 0;
        while at < frames.len() {
            relative.push(at);
            at = format::frame_end(frames, at).expect("the caller checked every frame");
        }
        assert_eq!(at, frames.len(), "frames end with a whole frame");
        self.buf.clear();
        self.buf.extend_from_slice(frames);
        self.write_buffered(relative, now_us, may_roll)
    }

    /// Rewrites the header of an empty active segment with `created_at_us` and syncs it, so
    /// that the nodes of a cluster begin each segment with the same bytes (the receive time of
    /// its first frames, not each node's clock) and their hash chains agree. Nothing to do if
    /// the segment holds frames or has that time already. A failure poisons the writer: the
    /// header on disk is then unknown.
    pub fn restamp_empty(&mut self, created_at_us: u64) -> Result<(), StorageError> {
        if let Some(reason) = &self.poisoned {
            return Err(StorageError::Poisoned(reason.clone()));
        }
        if self.frames > 0 || self.header.created_at_us == created_at_us {
            return Ok(());
        }
        let header = Header {
            created_at_us,
            ..self.header
        };
        let bytes = format::encode_header(&header);
        let disk = &self.config.disk;
        let written = disk
            .write_at(&self.file, &self.path, &bytes, 0)
            .map_err(StorageError::io("write header", &self.path))
            .and_then(|()| {
                disk.sync_data(&self.file, &self.path)
                    .map_err(StorageError::io("fdatasync", &self.path))
            });
        if let Err(err) = written {
            self.poisoned = Some(format!("{err}; the segment's header is unknown now"));
            return Err(err);
        }
        self.header = header;
        self.hasher = Sha256::new();
        self.hasher.update(bytes);
        Ok(())
    }

    /// Writes the frames in `buf` (starting at the offsets in `relative`) as one group, after a
    /// roll if one is due and `may_roll`.
    fn write_buffered(
        &mut self,
        relative: Vec<usize>,
        now_us: u64,
        may_roll: bool,
    ) -> Result<(), StorageError> {
        let count = relative.len() as u64;
        if may_roll && self.should_roll(self.buf.len() as u64, now_us) {
            self.roll(now_us)?;
        }
        let write_at = self.data_len;
        let end = write_at + self.buf.len() as u64 + FOOTER_BYTES as u64;
        if end > SEGMENT_BYTES_LIMIT {
            return Err(StorageError::GroupTooLarge {
                bytes: self.buf.len(),
                segment: self.path.clone(),
            });
        }
        // Everything that can fail happens before the write or is undone after it: once the
        // fdatasync returns, the group is durable and this function must succeed.
        let remapped = if end as usize > self.map_len {
            Some(self.map_active(end as usize)?)
        } else {
            None
        };
        let written = self.write_group(write_at);
        if let Err(err) = written {
            self.undo_to(write_at, &err);
            return Err(err);
        }
        self.hasher.update(&self.buf);
        self.data_len += self.buf.len() as u64;
        self.next_seq += count;
        if self.frames == 0 {
            self.received_min_us = now_us;
        }
        self.frames += count;
        self.received_max_us = self.received_max_us.max(now_us);
        if let Some(map) = remapped {
            self.changes.push(CatalogChange::Remapped(map));
        }
        // Below SEGMENT_BYTES_LIMIT (checked above), so every offset fits in a u32.
        let offsets = relative
            .into_iter()
            .map(|r| (write_at + r as u64) as u32)
            .collect();
        self.changes.push(CatalogChange::Appended {
            offsets,
            data_len: self.data_len,
            received_at_us: now_us,
        });
        Ok(())
    }

    /// One `pwrite` and one `fdatasync` of the encoded group at `at`.
    fn write_group(&mut self, at: u64) -> Result<(), StorageError> {
        let disk = &self.config.disk;
        disk.write_at(&self.file, &self.path, &self.buf, at)
            .map_err(StorageError::io("write", &self.path))?;
        disk.sync_data(&self.file, &self.path)
            .map_err(StorageError::io("fdatasync", &self.path))
    }

    /// Seals the active segment if it holds events and is older than `segment_max_age`, so that an
    /// idle log still becomes eligible for retention.
    pub fn roll_if_old(&mut self, now_us: u64) -> Written {
        let result = match &self.poisoned {
            Some(reason) => Err(StorageError::Poisoned(reason.clone())),
            None if self.frames > 0 && self.should_roll(0, now_us) => self.roll(now_us),
            None => Ok(()),
        };
        Written {
            result,
            changes: std::mem::take(&mut self.changes),
        }
    }

    fn should_roll(&self, incoming_bytes: u64, now_us: u64) -> bool {
        if self.frames == 0 {
            return false;
        }
        let too_big = self.data_len + incoming_bytes > self.config.segment_max_bytes;
        let age_us = now_us.saturating_sub(self.header.created_at_us);
        let too_old = u128::from(age_us) >= self.config.segment_max_age.as_micros();
        too_big || too_old
    }

    /// Seals the active segment and opens the next one, recording both in `changes`.
    fn roll(&mut self, now_us: u64) -> Result<(), StorageError> {
        self.roll_to(self.next_seq, now_us)
    }

    /// Seals the active segment (which holds frames) and opens the next one at `first_seq`, past
    /// the seqs a recorded cut may have held when above [`LogWriter::next_seq`].
    pub(super) fn roll_to(&mut self, first_seq: u64, now_us: u64) -> Result<(), StorageError> {
        debug_assert!(first_seq >= self.next_seq && self.frames > 0);
        let footer = Footer {
            last_seq: self.next_seq - 1,
            data_end: self.data_len,
            received_min_us: self.received_min_us,
            received_max_us: self.received_max_us,
            segment_hash: self.hasher.clone().finalize().into(),
        };
        let disk = &self.config.disk;
        let sealed = disk
            .write_at(
                &self.file,
                &self.path,
                &format::encode_footer(&footer),
                self.data_len,
            )
            .map_err(StorageError::io("write footer", &self.path))
            .and_then(|()| {
                disk.sync_data(&self.file, &self.path)
                    .map_err(StorageError::io("fdatasync", &self.path))
            });
        if let Err(err) = sealed {
            self.undo_to(self.data_len, &err);
            return Err(err);
        }
        // The next segment's writer, built as at start-up; it takes over this one's buffers.
        let opened = LogWriter::create(&self.config, first_seq, footer.segment_hash, now_us)
            .and_then(|mut next| Ok((next.empty_view()?, next)));
        let (view, mut next) = match opened {
            Ok(opened) => opened,
            Err(err) => {
                // The footer must go again, or the next append would land after it. (A created
                // file left behind is removed by `create_segment`, or holds only a header.)
                let _ = self
                    .config
                    .disk
                    .remove(&self.config.dir.join(segment_file_name(first_seq)));
                self.undo_to(self.data_len, &err);
                return Err(err);
            }
        };
        next.buf = std::mem::take(&mut self.buf);
        next.changes = std::mem::take(&mut self.changes);
        *self = next;
        self.changes.push(CatalogChange::Sealed(footer));
        self.changes.push(CatalogChange::Opened(view));
        Ok(())
    }

    fn capacity(&self, needed: usize) -> usize {
        (self.config.segment_max_bytes as usize).max(needed) + FOOTER_BYTES
    }

    /// Maps the active segment with room to grow, so readers rarely need a new mapping.
    pub(super) fn map_active(&mut self, needed: usize) -> Result<Arc<Mmap>, StorageError> {
        let map = map_segment(&self.file, &self.path, self.capacity(needed))?;
        self.map_len = map.len();
        Ok(map)
    }

    /// Truncates the active segment back to `len` after a failed write; poisons the writer if even
    /// that fails.
    fn undo_to(&mut self, len: u64, cause: &StorageError) {
        let disk = &self.config.disk;
        let undone = disk
            .set_len(&self.file, &self.path, len)
            .and_then(|()| disk.sync_data(&self.file, &self.path));
        if let Err(undo) = undone {
            self.poisoned = Some(format!(
                "{cause}; truncating {} back to {len} bytes also failed: {undo}",
                self.path.display()
            ));
        }
    }
}

/// The largest a segment may grow: offsets are u32. Configuration keeps `segment_max_bytes` at
/// 1 GiB and groups at `GROUP_BYTES_MAX`, far below it.
pub const SEGMENT_BYTES_LIMIT: u64 = u32::MAX as u64;

/// Maps a segment file read-only with `len` bytes of address space.
// One of the two mappings in the crate, each with its SAFETY argument; unsafe_code is denied elsewhere.
#[allow(unsafe_code)]
fn map_segment(file: &File, path: &std::path::Path, len: usize) -> Result<Arc<Mmap>, StorageError> {
    // SAFETY: the file is only ever appended to, or truncated back to a durable length, by the one
    // writer; readers never touch bytes past the durable `data_len`, so no access lands on a page
    // beyond the end of the file.
    let map =
        unsafe { MmapOptions::new().len(len).map(file) }.map_err(StorageError::io("mmap", path))?;
    Ok(Arc::new(map))
}

/// Creates a segment file holding only its header, durably (file and directory entry).
fn create_segment(
    config: &LogConfig,
    first_seq: u64,
    prev_hash: Hash,
    now_us: u64,
) -> Result<NewSegment, StorageError> {
    let path = config.dir.join(segment_file_name(first_seq));
    let header = Header {
        first_seq,
        created_at_us: now_us,
        prev_hash,
    };
    let bytes = format::encode_header(&header);
    let disk = &config.disk;
    let file = disk
        .create_new(&path)
        .map_err(StorageError::io("create", &path))?;
    let written = disk
        .write_at(&file, &path, &bytes, 0)
        .map_err(StorageError::io("write header", &path))
        .and_then(|()| {
            disk.sync_data(&file, &path)
                .map_err(StorageError::io("fdatasync", &path))
        })
        .and_then(|()| {
            disk.sync_dir(&config.dir)
                .map_err(StorageError::io("fsync directory", &config.dir))
        });
    match written {
        Ok(()) => Ok(NewSegment {
            file,
            path,
            header,
            header_bytes: bytes,
        }),
        Err(err) => {
            // The half-made segment is ours and holds no event; leaving it would only make the
            // next roll fail on `create_new`.
            let _ = disk.remove(&path);
            Err(err)
        }
    }
}
