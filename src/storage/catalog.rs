//! The read side of the log: every retained segment, mapped, with where its frames start.
//!
//! Readers find an event by seq with two lookups (segment by first seq, then the frame offset
//! in a sparse [`FrameIndex`]) and decode it from the mapping without copying. Only the writer changes the catalog, through
//! [`CatalogChange`] values it returns after each durable write.

use std::path::PathBuf;
use std::sync::Arc;

use memmap2::Mmap;

use super::format::{decode_at, frame_end, Decoded, Footer};
use super::repair::{Break, BreakKind};
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
    /// Where each frame starts; frame `i` holds seq `first_seq + i`.
    pub frames: FrameIndex,
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
        (!self.frames.is_empty()).then(|| self.first_seq + self.frames.len() - 1)
    }

    /// File offset of the frame holding `seq`: `None` if this segment does not hold it,
    /// `Some(Err(offset))` if the walk to it met an unreadable length prefix at `offset`.
    pub fn offset_of(&self, seq: u64) -> Option<Result<usize, usize>> {
        let index = seq.checked_sub(self.first_seq)?;
        self.frames
            .offset_of(index, &self.map[..self.data_len as usize])
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

/// Frames per offset a [`FrameIndex`] keeps.
pub const FRAME_INDEX_STRIDE: u64 = 16;

/// Where the frames of a segment start, kept sparse: the offset of every
/// [`FRAME_INDEX_STRIDE`]-th frame. A lookup walks the length prefixes of the frames after the
/// nearest kept offset, at most 15 steps through the mapped file, so the index costs a quarter
/// of a byte per event instead of four: at millions of events, the difference between meeting
/// the memory budget per interaction and not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FrameIndex {
    sampled: Vec<u32>,
    frames: u64,
}

impl FrameIndex {
    /// Number of frames.
    pub fn len(&self) -> u64 {
        self.frames
    }

    /// Whether the segment holds no frame.
    pub fn is_empty(&self) -> bool {
        self.frames == 0
    }

    /// Records the offset of the next frame.
    pub fn push(&mut self, offset: u32) {
        if self.frames.is_multiple_of(FRAME_INDEX_STRIDE) {
            self.sampled.push(offset);
        }
        self.frames += 1;
    }

    /// File offset of frame `index`, walking from the nearest kept offset through `data`, the
    /// segment's checked bytes. `None` past the last frame; `Some(Err(offset))` if the walk meets
    /// a length prefix at `offset` that is not a frame's (the bytes changed after they were
    /// checked), so that readers report damage rather than a missing event.
    pub fn offset_of(&self, index: u64, data: &[u8]) -> Option<Result<usize, usize>> {
        if index >= self.frames {
            return None;
        }
        let mut offset = self.sampled[(index / FRAME_INDEX_STRIDE) as usize] as usize;
        for _ in 0..index % FRAME_INDEX_STRIDE {
            match frame_end(data, offset) {
                Some(end) => offset = end,
                None => return Some(Err(offset)),
            }
        }
        Some(Ok(offset))
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
    /// The breaks `segments/repairs.jsonl` records, which say why seqs are missing.
    breaks: Vec<Break>,
}

impl Catalog {
    /// A catalog of the given segments, oldest first.
    pub fn new(segments: Vec<SegmentView>) -> Catalog {
        Catalog {
            segments,
            breaks: Vec::new(),
        }
    }

    /// Sets the recorded breaks (read at start; only start-up and the offline repair add any).
    pub fn set_breaks(&mut self, breaks: Vec<Break>) {
        self.breaks = breaks;
    }

    /// The seq the log gives next: one past the active segment's frames.
    pub fn next_seq(&self) -> u64 {
        self.segments
            .last()
            .map_or(1, |s| s.first_seq + s.frames.len())
    }

    /// The first seq at or after `seq` that the log holds or will give: `seq` itself unless it
    /// falls in a gap (before the oldest retained event, or in a recorded break), where no event
    /// is or ever will be.
    pub fn resume_at(&self, seq: u64) -> u64 {
        let index = self.segments.partition_point(|s| s.first_seq <= seq);
        if let Some(segment) = index.checked_sub(1).map(|i| &self.segments[i]) {
            let held = seq < segment.first_seq + segment.frames.len();
            // Held, or at or past the end of the log: not in a gap.
            if held || index == self.segments.len() {
                return seq;
            }
        }
        // Before the first segment, or after a sealed segment's frames: the next segment's first
        // seq (an empty active segment's is the seq the log gives next).
        self.segments.get(index).map_or(seq, |next| next.first_seq)
    }

    /// The lines that announce the gap between `after_seq` (the last seq a reader reached) and
    /// `next_seq` (the next one the log holds or will give), one per cause, in seq order.
    pub fn gaps(&self, after_seq: u64, next_seq: u64) -> Vec<Gap> {
        gaps(after_seq, next_seq, self.first_seq(), &self.breaks)
    }

    /// Every segment, oldest first.
    pub fn segments(&self) -> &[SegmentView] {
        &self.segments
    }

    /// Seq of the oldest retained event.
    pub fn first_seq(&self) -> Option<u64> {
        self.segments
            .iter()
            .find(|s| !s.frames.is_empty())
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
        let offset = match segment.offset_of(seq)? {
            Ok(offset) => offset,
            Err(at) => {
                return Some(Err(format!(
                    "{} offset {at}: no frame length where the frames before seq {seq} should be",
                    segment.path.display()
                )))
            }
        };
        let data = &segment.map[..segment.data_len as usize];
        Some(match decode_at(data, offset) {
            Decoded::Frame { frame, .. } if frame.seq == seq => Ok(f(&frame)),
            other => Err(format!(
                "{} offset {offset}: expected seq {seq}, found {other:?}",
                segment.path.display()
            )),
        })
    }

    /// Like [`Catalog::with_event`], and `f` is also given a `share` function that turns any text
    /// borrowed from the event (its body, a payload within it) into [`bytes::Bytes`] pointing
    /// into the segment's mapping: no copy, and the mapping stays open while the bytes live, even
    /// if retention drops the segment meanwhile. Reads hand stored payloads to the connection
    /// this way, so a reader holds no copy of them.
    pub fn with_event_shared<R>(
        &self,
        seq: u64,
        f: impl FnOnce(&StoredEvent<'_>, &dyn Fn(&str) -> bytes::Bytes) -> R,
    ) -> Option<Result<R, String>> {
        let index = self
            .segments
            .partition_point(|s| s.first_seq <= seq)
            .checked_sub(1)?;
        let map = &self.segments[index].map;
        let base = map.as_ptr() as usize;
        let share = |text: &str| {
            let start = (text.as_ptr() as usize)
                .checked_sub(base)
                .expect("text borrowed from this mapping");
            let end = start + text.len();
            assert!(end <= map.len(), "text borrowed from this mapping");
            bytes::Bytes::from_owner(MappedSlice {
                map: Arc::clone(map),
                start,
                end,
            })
        };
        self.with_event(seq, |event| f(event, &share))
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
            // The first frame's offset is always kept, so no walk can fail here.
            let Some(Ok(mut offset)) = segment.offset_of(segment.first_seq) else {
                continue;
            };
            for seq in segment.first_seq..segment.first_seq + segment.frames.len() {
                match decode_at(data, offset) {
                    Decoded::Frame { frame, end } if frame.seq == seq => {
                        each(&frame);
                        offset = end;
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
                if active.frames.is_empty() {
                    active.received_min_us = received_at_us;
                }
                active.received_max_us = active.received_max_us.max(received_at_us);
                for offset in offsets {
                    active.frames.push(offset);
                }
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

/// Why seqs are missing from a log, as replay's gap lines and `mcplog-seg dump` say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GapReason {
    /// Before the oldest retained event: retention deleted them (or the log, a copy or a
    /// restored backup, begins later).
    Retention,
    /// `mcplog-seg repair` quarantined the bytes that held them.
    Repair,
    /// Start-up cut bytes at the end of the log that may have held them (a torn write or
    /// damage to the last write); they are never given again.
    Cut,
}

/// Seqs after `after_seq` and before `next_seq` that no event holds, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Gap {
    /// The last seq before the missing ones.
    pub after_seq: u64,
    /// The first seq after them.
    pub next_seq: u64,
    /// Why they are missing.
    pub reason: GapReason,
}

impl Gap {
    /// The NDJSON line: `{"gap":{"after_seq":89,"next_seq":101,"reason":"repair"}}` and a
    /// line break.
    pub fn line(&self) -> String {
        format!("{}\n", serde_json::json!({ "gap": self }))
    }
}

/// The gaps between `after_seq` and `next_seq`: the missing seqs split into runs of one cause, a
/// recorded break's kind where one covers them (the latest record wins), else retention when they
/// lie before the oldest retained event (`first_retained`), else repair (start-up accepts no other
/// gap inside the log than a recorded one).
pub fn gaps(
    after_seq: u64,
    next_seq: u64,
    first_retained: Option<u64>,
    breaks: &[Break],
) -> Vec<Gap> {
    let mut out: Vec<Gap> = Vec::new();
    let mut seq = after_seq.saturating_add(1);
    while seq < next_seq {
        // The cause at `seq`, and how far it reaches.
        let covering = breaks.iter().rev().find(|b| b.missing().contains(&seq));
        let (reason, end) = match covering {
            Some(b) => (
                match b.kind {
                    BreakKind::Repair => GapReason::Repair,
                    BreakKind::Cut => GapReason::Cut,
                },
                b.missing().end,
            ),
            None => {
                // Up to the next record's start, or the end.
                let next_record = breaks
                    .iter()
                    .map(|b| b.missing().start)
                    .filter(|&start| start > seq)
                    .min()
                    .unwrap_or(u64::MAX);
                let reason = if first_retained.is_none_or(|first| seq < first) {
                    GapReason::Retention
                } else {
                    GapReason::Repair
                };
                (reason, next_record)
            }
        };
        let end = end.min(next_seq);
        match out.last_mut() {
            Some(last) if last.reason == reason => last.next_seq = end,
            _ => out.push(Gap {
                after_seq: seq - 1,
                next_seq: end,
                reason,
            }),
        }
        seq = end;
    }
    out
}

/// A range of a segment's mapping, owned: what [`Catalog::with_event_shared`] hands out.
struct MappedSlice {
    map: Arc<Mmap>,
    start: usize,
    end: usize,
}

impl AsRef<[u8]> for MappedSlice {
    fn as_ref(&self) -> &[u8] {
        &self.map[self.start..self.end]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Action;
    use crate::storage::format::encode_frame;
    use proptest::prelude::*;

    /// A header's worth of zeros and then one frame per size: the bytes, each frame's offset, and
    /// the sparse index of them.
    fn frames_of(sizes: &[usize]) -> (Vec<u8>, Vec<usize>, FrameIndex) {
        let mut bytes = vec![0u8; 68];
        let mut dense = Vec::new();
        let mut index = FrameIndex::default();
        for (i, &size) in sizes.iter().enumerate() {
            let body = "x".repeat(size);
            dense.push(bytes.len());
            index.push(bytes.len() as u32);
            let frame = StoredEvent {
                seq: i as u64 + 1,
                write_index: 0,
                received_at_us: 0,
                key_id: [0; 8],
                action: Action::Progress,
                timestamp: 1.0,
                interaction_id: "i",
                mcp_id: "m",
                event_id: None,
                body: &body,
            };
            encode_frame(&frame, &mut bytes);
        }
        (bytes, dense, index)
    }

    proptest! {
        /// The sparse index finds every frame where a dense list of offsets says it is.
        #[test]
        fn sparse_offsets_match_dense_ones(sizes in proptest::collection::vec(0usize..300, 0..100)) {
            let (bytes, dense, index) = frames_of(&sizes);
            prop_assert_eq!(index.len(), sizes.len() as u64);
            for (i, &offset) in dense.iter().enumerate() {
                prop_assert_eq!(index.offset_of(i as u64, &bytes), Some(Ok(offset)));
            }
            prop_assert_eq!(index.offset_of(sizes.len() as u64, &bytes), None);
        }
    }

    fn record(after_seq: u64, first_seq: u64, kind: BreakKind) -> Break {
        Break {
            repaired_at_us: 1,
            first_seq,
            after_seq,
            prev_hash: None,
            kept_hash: None,
            quarantine: None,
            reason: String::new(),
            kind,
            cut: None,
        }
    }

    #[test]
    fn gaps_split_by_cause_in_seq_order() {
        let gap = |after_seq, next_seq, reason| Gap {
            after_seq,
            next_seq,
            reason,
        };
        let repaired = [record(50, 61, BreakKind::Repair)];
        // Before the retained log: retention up to the recorded repair, then the repair.
        assert_eq!(
            gaps(0, 61, Some(61), &repaired),
            [
                gap(0, 51, GapReason::Retention),
                gap(50, 61, GapReason::Repair)
            ]
        );
        // From inside a recorded cut, and a record that skips nothing covers nothing.
        let cut = [
            record(89, 101, BreakKind::Cut),
            record(120, 121, BreakKind::Cut),
        ];
        assert_eq!(gaps(95, 101, Some(1), &cut), [gap(95, 101, GapReason::Cut)]);
        assert_eq!(gaps(0, 1, Some(1), &cut), []);
        assert_eq!(gaps(100, 101, Some(1), &cut), []);
        // Every missing seq is in exactly one line, and the lines chain.
        let lines = gaps(0, 130, Some(130), &cut);
        assert_eq!(lines.first().map(|g| g.after_seq), Some(0));
        assert_eq!(lines.last().map(|g| g.next_seq), Some(130));
        assert!(lines
            .windows(2)
            .all(|w| w[0].next_seq == w[1].after_seq + 1));
        assert_eq!(
            gap(89, 101, GapReason::Repair).line(),
            "{\"gap\":{\"after_seq\":89,\"next_seq\":101,\"reason\":\"repair\"}}\n"
        );
    }

    #[test]
    fn a_damaged_length_on_the_walk_is_reported_where_it_is() {
        let (mut bytes, dense, index) = frames_of(&[10; 20]);
        // Frame 17 is walked through on the way to 18 (16 is the kept offset before it).
        bytes[dense[17]..dense[17] + 4].fill(0);
        assert_eq!(index.offset_of(18, &bytes), Some(Err(dense[17])));
        assert_eq!(
            index.offset_of(16, &bytes),
            Some(Ok(dense[16])),
            "kept offsets need no walk"
        );
        assert_eq!(
            index.offset_of(17, &bytes),
            Some(Ok(dense[17])),
            "the walk stops before it"
        );
    }
}
