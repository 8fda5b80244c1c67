//! History pages: filters by mcp_id, status and start time as bitmaps, newest start first, with
//! opaque cursors (sealed by [`CursorKey`]).

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
    /// Bytes of [`Position::to_bytes`].
    const BYTES: usize = 1 + 8 + 4;

    /// `started`, then `key` and `ordinal` little-endian.
    fn to_bytes(self) -> [u8; Position::BYTES] {
        let mut bytes = [0u8; Position::BYTES];
        bytes[0] = self.started;
        bytes[1..9].copy_from_slice(&self.key.to_le_bytes());
        bytes[9..].copy_from_slice(&self.ordinal.to_le_bytes());
        bytes
    }

    fn from_bytes(bytes: &[u8; Position::BYTES]) -> Option<Position> {
        let started = bytes[0];
        (started <= 1).then(|| Position {
            started,
            key: u64::from_le_bytes(bytes[1..9].try_into().expect("8 bytes")),
            ordinal: u32::from_le_bytes(bytes[9..].try_into().expect("4 bytes")),
        })
    }
}

/// Seals history positions into opaque cursors, and opens them.
///
/// A position holds a record's ordinal: its rank among every interaction the server holds, all
/// mcp_ids together. In clear text a writer key's cursor would tell it how many interactions the
/// others have started; so a cursor is encrypted and authenticated (a synthetic-IV construction
/// over HMAC-SHA256: `tag` = HMAC(key, "tag" ‖ position) cut to 16 bytes, the position XORed with
/// HMAC(key, "enc" ‖ tag), sent as hex of `tag ‖ ciphertext`). The same position always gives the
/// same cursor, which reveals nothing but that equality; any other text, a changed character
/// included, does not open. The key derives from the master secret, so a cursor stays valid
/// across restarts of the same data directory.
pub struct CursorKey([u8; 32]);

/// Bytes of a cursor's tag.
const CURSOR_TAG_BYTES: usize = 16;
/// Bytes of a sealed cursor, before hex.
const CURSOR_BYTES: usize = CURSOR_TAG_BYTES + Position::BYTES;

impl CursorKey {
    /// A key of 32 secret bytes.
    pub fn new(secret: [u8; 32]) -> CursorKey {
        CursorKey(secret)
    }

    /// The cursor text of `position`.
    pub fn seal(&self, position: Position) -> String {
        let plain = position.to_bytes();
        let tag = self.tag(&plain);
        let stream = self.stream(&tag);
        let mut sealed = [0u8; CURSOR_BYTES];
        sealed[..CURSOR_TAG_BYTES].copy_from_slice(&tag);
        for (i, byte) in plain.iter().enumerate() {
            sealed[CURSOR_TAG_BYTES + i] = byte ^ stream[i];
        }
        crate::hex::encode(&sealed)
    }

    /// The position sealed in `text`, or `None` when this key did not seal it.
    pub fn open(&self, text: &str) -> Option<Position> {
        let sealed: [u8; CURSOR_BYTES] = crate::hex::decode_array(text)?;
        let tag: [u8; CURSOR_TAG_BYTES] = sealed[..CURSOR_TAG_BYTES].try_into().expect("16");
        let stream = self.stream(&tag);
        let mut plain = [0u8; Position::BYTES];
        for (i, byte) in sealed[CURSOR_TAG_BYTES..].iter().enumerate() {
            plain[i] = byte ^ stream[i];
        }
        // Compared in constant time: no timing tells how much of a forged tag was right.
        let expected = self.tag(&plain);
        let differ = expected
            .iter()
            .zip(&tag)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if differ != 0 {
            return None;
        }
        Position::from_bytes(&plain)
    }

    fn tag(&self, plain: &[u8; Position::BYTES]) -> [u8; CURSOR_TAG_BYTES] {
        let full = self.mac(b"tag", plain);
        full[..CURSOR_TAG_BYTES].try_into().expect("32 bytes")
    }

    fn stream(&self, tag: &[u8; CURSOR_TAG_BYTES]) -> [u8; 32] {
        self.mac(b"enc", tag)
    }

    fn mac(&self, label: &[u8], data: &[u8]) -> [u8; 32] {
        use hmac::{Hmac, Mac};
        let mut mac =
            Hmac::<sha2::Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(label);
        mac.update(data);
        mac.finalize().into_bytes().into()
    }
}

const _: () = assert!(Position::BYTES <= 32, "one HMAC output covers a position");

impl std::fmt::Debug for CursorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CursorKey(..)")
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
    let position_of = |ordinal: u32| position_of(projection, ordinal);
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

/// Where record `ordinal` stands in history order: a page cut short continues after it.
pub fn position_of(projection: &Projection, ordinal: u32) -> Position {
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
