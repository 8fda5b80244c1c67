//! The read side of the log: every retained segment, mapped, with the offset of each frame.
//!
//! Readers find an event by seq with two lookups (segment by first seq, then the frame offset)
//! and decode it from the mapping without copying. Only the writer changes the catalog, through
//! [`CatalogChange`] values it returns after each durable write.

use std::path::PathBuf;
use std::sync::Arc;

use memmap2::Mmap;

use super::format::{decode_at, Decoded, Footer};
use crate::event::StoredEvent;

/// One retained segment as readers see it.
#[derive(Debug)]
pub struct SegmentView {
    /// Seq of the first frame (and the file name).
    pub first_seq: u64,
    /// The segment file.
    pub path: PathBuf,
    /// The file mapped read-only. The active segment is mapped past its end so that it need not be
    /// remapped as it grows; only bytes below `data_len` are ever read.
    pub map: Arc<Mmap>,
    /// File offset of each frame; index `i` holds seq `first_seq + i`.
    pub offsets: Vec<u32>,
    /// Bytes of header and frames (the footer is not counted).
    pub data_len: u64,
    /// The footer, once the segment is sealed.
    pub footer: Option<Footer>,
    /// Newest server receive time of any frame, in microseconds (0 while empty).
    pub received_max_us: u64,
    /// Oldest server receive time of any frame, in microseconds (0 while empty).
    pub received_min_us: u64,
}

impl SegmentView {
    /// Seq of the last frame, if the segment holds any.
    pub fn last_seq(&self) -> Option<u64> {
        (!self.offsets.is_empty()).then(|| self.first_seq + self.offsets.len() as u64 - 1)
    }

    /// Size of the file in bytes, footer included.
    pub fn file_bytes(&self) -> u64 {
        self.data_len
            + if self.footer.is_some() {
                super::format::FOOTER_BYTES as u64
            } else {
                0
            }
    }
}

/// What the writer changed, for the catalog to mirror.
#[derive(Debug)]
pub enum CatalogChange {
    /// Frames appended to the active segment at these offsets, and its new data length.
    Appended {
        /// The new frames' offsets, in seq order.
        offsets: Vec<u32>,
        /// The active segment's data length after the write.
        data_len: u64,
        /// Receive time of the write, in microseconds.
        received_at_us: u64,
    },
    /// The active segment was mapped again with a larger length.
    Remapped(Arc<Mmap>),
    /// The active segment was sealed with this footer.
    Sealed(Footer),
    /// A new active segment was opened.
    Opened(SegmentView),
}

/// Every retained segment, oldest first; the last one is the active segment.
#[derive(Debug, Default)]
pub struct Catalog {
    segments: Vec<SegmentView>,
}

impl Catalog {
    /// A catalog of the given segments, oldest first.
    pub fn new(segments: Vec<SegmentView>) -> Catalog {
        Catalog { segments }
    }

    /// Every segment, oldest first.
    pub fn segments(&self) -> &[SegmentView] {
        &self.segments
    }

    /// Seq of the oldest retained event.
    pub fn first_seq(&self) -> Option<u64> {
        self.segments
            .iter()
            .find(|s| !s.offsets.is_empty())
            .map(|s| s.first_seq)
    }

    /// Seq of the newest event.
    pub fn last_seq(&self) -> Option<u64> {
        self.segments.iter().rev().find_map(SegmentView::last_seq)
    }

    /// Total bytes of all segment files.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(SegmentView::file_bytes).sum()
    }

    /// Decodes the event at `seq` from its mapping and hands it to `f`.
    ///
    /// Returns `None` when the seq is not retained. A frame that fails to decode here was valid
    /// when it was written or recovered, so that is reported as `Some(Err(..))` with its place.
    pub fn with_event<R>(
        &self,
        seq: u64,
        f: impl FnOnce(&StoredEvent<'_>) -> R,
    ) -> Option<Result<R, String>> {
        let index = self
            .segments
            .partition_point(|s| s.first_seq <= seq)
            .checked_sub(1)?;
        let segment = &self.segments[index];
        let offset = *segment
            .offsets
            .get(usize::try_from(seq - segment.first_seq).ok()?)? as usize;
        let data = &segment.map[..segment.data_len as usize];
        Some(match decode_at(data, offset) {
            Decoded::Frame { frame, .. } if frame.seq == seq => Ok(f(&frame)),
            other => Err(format!(
                "{} offset {offset}: expected seq {seq}, found {other:?}",
                segment.path.display()
            )),
        })
    }

    /// Removes the `count` oldest segments from the catalog and returns their paths. The caller
    /// deletes the files (see `retention::delete`); mappings close when the last reader lets go.
    pub fn drop_oldest(&mut self, count: usize) -> Vec<PathBuf> {
        assert!(
            count < self.segments.len(),
            "the active segment is never dropped"
        );
        self.segments.drain(..count).map(|s| s.path).collect()
    }

    /// Hands every retained event to `each`, in seq order.
    pub fn for_each_event(&self, mut each: impl FnMut(&StoredEvent<'_>)) -> Result<(), String> {
        for segment in &self.segments {
            let data = &segment.map[..segment.data_len as usize];
            for (i, &offset) in segment.offsets.iter().enumerate() {
                match decode_at(data, offset as usize) {
                    Decoded::Frame { frame, .. } if frame.seq == segment.first_seq + i as u64 => {
                        each(&frame)
                    }
                    other => {
                        return Err(format!(
                            "{} offset {offset}: {other:?}",
                            segment.path.display()
                        ))
                    }
                }
            }
        }
        Ok(())
    }

    /// Mirrors one change made by the writer.
    pub fn apply(&mut self, change: CatalogChange) {
        match change {
            CatalogChange::Opened(view) => self.segments.push(view),
            CatalogChange::Appended {
                offsets,
                data_len,
                received_at_us,
            } => {
                let active = self.active_mut();
                if active.offsets.is_empty() {
                    active.received_min_us = received_at_us;
                }
                active.received_max_us = active.received_max_us.max(received_at_us);
                active.offsets.extend(offsets);
                active.data_len = data_len;
            }
            CatalogChange::Remapped(map) => self.active_mut().map = map,
            CatalogChange::Sealed(footer) => self.active_mut().footer = Some(footer),
        }
    }

    fn active_mut(&mut self) -> &mut SegmentView {
        self.segments
            .last_mut()
            .expect("the log always has an active segment")
    }
}
