//! The secondary indexes the queries use, kept by the fold as records change.

use std::collections::{BTreeMap, BTreeSet};

use roaring::RoaringBitmap;

use super::{Record, Status};
use crate::latency::Rollup;

/// The secondary indexes the queries use, all of record ordinals.
#[derive(Debug, Default)]
pub struct Indexes {
    /// Records per interned mcp_id.
    pub by_mcp: Vec<RoaringBitmap>,
    /// Records per status, indexed by [`Status::index`].
    pub by_status: [RoaringBitmap; Status::COUNT],
    /// Records with no start event yet: reported as orphans, listed after all started ones.
    pub orphans: RoaringBitmap,
    /// Started records ordered by `(start_time, ordinal)`; the key is the bits of the positive
    /// `f64` start time, which order as the numbers do.
    pub by_start: BTreeSet<TimeKey>,
    /// Sum and count of processing times of completed and failed records with both times.
    pub processing_sum_s: f64,
    /// See `processing_sum_s`.
    pub processing_count: u64,
    /// Finished interactions by hour of start time (`floor(start / 3600)`), so metrics over long
    /// ranges add up hours instead of visiting every record.
    pub hourly: BTreeMap<i64, Rollup>,
}

/// Seconds in one roll-up.
pub const ROLLUP_SECONDS: u64 = 3600;

/// An entry of the time index: a start key and a record ordinal, ordered by key, then ordinal.
/// Three `u32`s rather than a `(u64, u32)`, which pads to 16 bytes: the index holds one per
/// started interaction, and four bytes each is about seven per interaction in B-tree nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimeKey {
    // Field order is the ordering: the key's high half, its low half, then the ordinal.
    key_high: u32,
    key_low: u32,
    ordinal: u32,
}

impl TimeKey {
    /// The entry for a start key (see [`start_key`]) and an ordinal.
    pub fn new(key: u64, ordinal: u32) -> TimeKey {
        TimeKey {
            key_high: (key >> 32) as u32,
            key_low: key as u32,
            ordinal,
        }
    }

    /// The start key.
    pub fn key(self) -> u64 {
        u64::from(self.key_high) << 32 | u64::from(self.key_low)
    }

    /// The record's ordinal.
    pub fn ordinal(self) -> u32 {
        self.ordinal
    }
}

/// The start-time key of the time index.
pub fn start_key(start_time: f64) -> u64 {
    debug_assert!(start_time > 0.0, "validation keeps timestamps positive");
    start_time.to_bits()
}

impl Indexes {
    /// Mirrors one record's change. `before` is `None` for a record the event created, else its
    /// status and start time before the event.
    pub(super) fn update(
        &mut self,
        ordinal: u32,
        record: &Record,
        before: Option<(Status, Option<f64>)>,
    ) {
        match before {
            None => {
                let mcp = record.mcp as usize;
                if self.by_mcp.len() <= mcp {
                    self.by_mcp.resize_with(mcp + 1, RoaringBitmap::new);
                }
                self.by_mcp[mcp].insert(ordinal);
                self.by_status[record.status.index()].insert(ordinal);
                match record.start_time() {
                    Some(start) => {
                        self.by_start
                            .insert(TimeKey::new(start_key(start), ordinal));
                    }
                    None => {
                        self.orphans.insert(ordinal);
                    }
                }
            }
            Some((old_status, old_start)) => {
                if old_status != record.status {
                    self.by_status[old_status.index()].remove(ordinal);
                    self.by_status[record.status.index()].insert(ordinal);
                }
                if old_start.is_none() {
                    if let Some(start) = record.start_time() {
                        self.orphans.remove(ordinal);
                        self.by_start
                            .insert(TimeKey::new(start_key(start), ordinal));
                    }
                }
            }
        }
        let finished = |status: Status, start: Option<f64>| !status.is_active() && start.is_some();
        let was_finished = before.is_some_and(|(status, start)| finished(status, start));
        if !was_finished && finished(record.status, record.start_time()) {
            // Both the start and the first terminal event are final, so this happens once.
            self.count_finished(record);
        }
    }

    fn count_finished(&mut self, record: &Record) {
        let start = record.start_time().expect("finished records have started");
        let hour = (start / ROLLUP_SECONDS as f64).floor() as i64;
        let rollup = self.hourly.entry(hour).or_default();
        match record.status {
            Status::Completed => rollup.completed += 1,
            Status::Failed => rollup.failed += 1,
            _ => {
                rollup.cancelled += 1;
                return;
            }
        }
        if let Some(time) = record.processing_time() {
            rollup.add_time(time);
            self.processing_sum_s += time;
            self.processing_count += 1;
        }
    }
}
