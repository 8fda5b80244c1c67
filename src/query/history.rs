//! History pages: filters by mcp_id, status and start time as bitmaps, newest start first, with
//! opaque cursors.

use roaring::RoaringBitmap;

use crate::projector::{start_key, Projection, Status, TimeKey};

/// Most records one history page may hold.
pub const HISTORY_LIMIT_MAX: usize = 1000;
/// Records in a history page when the caller does not say.
pub const HISTORY_LIMIT_DEFAULT: usize = 100;
/// Below this many candidates, a filtered history query sorts the candidates instead of scanning
/// the time index.
const SMALL_CANDIDATES: u64 = 4096;

/// A position in history order, as carried by an opaque cursor: newest start first, then records
/// with no start yet, newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    /// 1 for records with a start time, 0 for records without (they sort after).
    started: u8,
    /// The start-time key (0 without a start).
    key: u64,
    /// The record ordinal, breaking ties.
    ordinal: u32,
}

impl Position {
    /// The cursor text: opaque to clients, stable across restarts of the same log.
    pub fn encode(self) -> String {
        format!("{:x}.{:x}.{:x}", self.started, self.key, self.ordinal)
    }

    /// Parses a cursor made by [`Position::encode`].
    pub fn decode(text: &str) -> Option<Position> {
        let mut parts = text.split('.');
        let started = u8::from_str_radix(parts.next()?, 16)
            .ok()
            .filter(|&s| s <= 1)?;
        let key = u64::from_str_radix(parts.next()?, 16).ok()?;
        let ordinal = u32::from_str_radix(parts.next()?, 16).ok()?;
        parts.next().is_none().then_some(Position {
            started,
            key,
            ordinal,
        })
    }
}

/// What a history page asks for.
#[derive(Debug, Clone, Default)]
pub struct HistoryQuery {
    /// Only this mcp_id.
    pub mcp_id: Option<String>,
    /// Only this status.
    pub status: Option<Status>,
    /// Only records that started at or after this time (seconds); excludes records with no start.
    pub since: Option<f64>,
    /// Only records that started at or before this time (seconds); excludes records with no start.
    pub until: Option<f64>,
    /// Page size, 1..=HISTORY_LIMIT_MAX.
    pub limit: usize,
    /// Matching records to skip (after the cursor, if there is one).
    pub offset: usize,
    /// Continue after this position.
    pub after: Option<Position>,
}

/// One page of history.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryPage {
    /// Record ordinals, in history order.
    pub ordinals: Vec<u32>,
    /// Where the next page starts, if there are more records.
    pub next: Option<Position>,
}

/// Runs a history query.
pub fn history(projection: &Projection, query: &HistoryQuery) -> HistoryPage {
    assert!(query.limit >= 1 && query.limit <= HISTORY_LIMIT_MAX);
    let indexes = projection.indexes();
    let filter = match filter_bitmap(projection, query) {
        Ok(filter) => filter,
        Err(Empty) => {
            return HistoryPage {
                ordinals: Vec::new(),
                next: None,
            }
        }
    };
    let timed = query.since.is_some() || query.until.is_some();
    let low = query
        .since
        .map_or(0, |s| start_key(s.max(f64::MIN_POSITIVE)));
    let high = query
        .until
        .map_or(u64::MAX, |u| if u > 0.0 { start_key(u) } else { 0 });
    let position_of = |ordinal: u32| -> Position {
        match projection.record(ordinal).start_time() {
            Some(start) => Position {
                started: 1,
                key: start_key(start),
                ordinal,
            },
            None => Position {
                started: 0,
                key: 0,
                ordinal,
            },
        }
    };
    let in_range = |p: &Position| {
        (!timed || (p.started == 1 && low <= p.key && p.key <= high))
            && query.after.is_none_or(|after| *p < after)
    };
    let wanted = query.offset + query.limit + 1;
    let mut page: Vec<Position> = match &filter {
        Some(bitmap) if bitmap.len() <= SMALL_CANDIDATES => {
            let mut candidates: Vec<Position> =
                bitmap.iter().map(position_of).filter(in_range).collect();
            candidates.sort_unstable_by(|a, b| b.cmp(a));
            candidates.truncate(wanted);
            candidates
        }
        _ => {
            let matches = |ordinal: u32| filter.as_ref().is_none_or(|b| b.contains(ordinal));
            let started = started_range(indexes, low, high, query.after)
                .rev()
                .filter(|entry| matches(entry.ordinal()))
                .map(|entry| Position {
                    started: 1,
                    key: entry.key(),
                    ordinal: entry.ordinal(),
                });
            let orphans = indexes
                .orphans
                .iter()
                .rev()
                .filter(|&ordinal| !timed && matches(ordinal))
                .map(|ordinal| Position {
                    started: 0,
                    key: 0,
                    ordinal,
                })
                .filter(|p| query.after.is_none_or(|after| *p < after));
            started.chain(orphans).take(wanted).collect()
        }
    };
    let more = page.len() > query.offset + query.limit;
    page.truncate(query.offset + query.limit);
    let ordinals: Vec<u32> = page.iter().skip(query.offset).map(|p| p.ordinal).collect();
    let next = if more { page.last().copied() } else { None };
    HistoryPage { ordinals, next }
}

struct Empty;

/// The started records with a start key in `[low, high]` and before `after` in history order.
fn started_range(
    indexes: &crate::projector::Indexes,
    low: u64,
    high: u64,
    after: Option<Position>,
) -> std::collections::btree_set::Range<'_, TimeKey> {
    use std::ops::Bound::{Excluded, Included};
    let lower = TimeKey::new(low, 0);
    let mut upper = Included(TimeKey::new(high, u32::MAX));
    match after {
        Some(after) if after.started == 0 => upper = Excluded(lower), // all started ones came before
        Some(after) if (after.key, after.ordinal) <= (high, u32::MAX) => {
            upper = Excluded(TimeKey::new(after.key, after.ordinal))
        }
        _ => {}
    }
    let empty = match upper {
        Included(u) => u < lower,
        Excluded(u) => u <= lower,
        std::ops::Bound::Unbounded => false,
    };
    if empty {
        // `range` panics on an inverted range; this one is empty by construction.
        return indexes.by_start.range((Included(lower), Excluded(lower)));
    }
    indexes.by_start.range((Included(lower), upper))
}

/// The bitmap of records passing the mcp_id and status filters: `Ok(None)` for no filter,
/// `Err(Empty)` when nothing can match.
fn filter_bitmap(
    projection: &Projection,
    query: &HistoryQuery,
) -> Result<Option<RoaringBitmap>, Empty> {
    let indexes = projection.indexes();
    let by_mcp = match &query.mcp_id {
        Some(mcp_id) => {
            let mcp = projection.mcp_number(mcp_id).ok_or(Empty)?;
            Some(&indexes.by_mcp[mcp as usize])
        }
        None => None,
    };
    let by_status = query.status.map(|s| &indexes.by_status[s.index()]);
    Ok(match (by_mcp, by_status) {
        (Some(a), Some(b)) => Some(a & b),
        (Some(a), None) | (None, Some(a)) => Some(a.clone()),
        (None, None) => None,
    })
}
