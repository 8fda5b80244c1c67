//! Queries over the projection: history pages, record counts, performance metrics.
//!
//! Pure functions of the view and a "now" passed in, so tests can pin the clock. Nothing here
//! knows HTTP; the handlers in `http/` shape the answers.

use roaring::RoaringBitmap;

use crate::latency::{Histogram, Rollup};
use crate::projector::{start_key, Projection, Status, TimeKey, ROLLUP_SECONDS};

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

/// Record counts for the stats endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RecordCounts {
    /// Every record.
    pub total: u64,
    /// Started or in progress.
    pub active: u64,
    /// Status `started`.
    pub started: u64,
    /// Status `in_progress`.
    pub in_progress: u64,
    /// Status `completed`.
    pub completed: u64,
    /// Status `failed`.
    pub failed: u64,
    /// Status `cancelled`.
    pub cancelled: u64,
    /// Active records that started (or, with no start event, were first received) longer than
    /// `stale_after` ago.
    pub stale: u64,
    /// Records with no start event yet.
    pub orphan: u64,
    /// Events kept but not applied (second starts and second terminal events).
    pub conflicts: u64,
}

/// When an active interaction began, for `stale`: its start time, or without a start event its
/// first receive time. A backfilled start two hours old is stale at once, whenever it arrived.
fn active_since_us(record: &crate::projector::Record) -> u64 {
    record
        .start_time()
        .map_or(record.received_at_us(), |start| (start * 1e6) as u64)
}

/// Counts records by status; `stale_after_us` and `now_us` are server-clock microseconds.
pub fn record_counts(projection: &Projection, now_us: u64, stale_after_us: u64) -> RecordCounts {
    let indexes = projection.indexes();
    let count = |s: Status| indexes.by_status[s.index()].len();
    let cutoff = now_us.saturating_sub(stale_after_us);
    let stale = [Status::Started, Status::InProgress]
        .iter()
        .flat_map(|&s| indexes.by_status[s.index()].iter())
        .filter(|&ordinal| active_since_us(projection.record(ordinal)) < cutoff)
        .count() as u64;
    RecordCounts {
        total: projection.record_count() as u64,
        active: count(Status::Started) + count(Status::InProgress),
        started: count(Status::Started),
        in_progress: count(Status::InProgress),
        completed: count(Status::Completed),
        failed: count(Status::Failed),
        cancelled: count(Status::Cancelled),
        stale,
        orphan: indexes.orphans.len(),
        conflicts: projection.conflicts_total(),
    }
}

/// Record counts and mean processing time of one mcp_id's records only (what a writer key sees).
/// Walks that mcp_id's records.
pub fn record_counts_of(
    projection: &Projection,
    mcp_id: &str,
    now_us: u64,
    stale_after_us: u64,
) -> (RecordCounts, Option<f64>) {
    let mut counts = RecordCounts::default();
    let (mut sum, mut timed) = (0.0, 0u64);
    let Some(mcp) = projection.mcp_number(mcp_id) else {
        return (counts, None);
    };
    let cutoff = now_us.saturating_sub(stale_after_us);
    for ordinal in &projection.indexes().by_mcp[mcp as usize] {
        let record = projection.record(ordinal);
        counts.total += 1;
        counts.conflicts += u64::from(record.conflicts());
        counts.orphan += u64::from(record.start_time().is_none());
        match record.status() {
            Status::Started => counts.started += 1,
            Status::InProgress => counts.in_progress += 1,
            Status::Completed => counts.completed += 1,
            Status::Failed => counts.failed += 1,
            Status::Cancelled => counts.cancelled += 1,
        }
        if record.status().is_active() && active_since_us(record) < cutoff {
            counts.stale += 1;
        }
        if let (Status::Completed | Status::Failed, Some(time)) =
            (record.status(), record.processing_time())
        {
            sum += time;
            timed += 1;
        }
    }
    counts.active = counts.started + counts.in_progress;
    (counts, (timed > 0).then(|| sum / timed as f64))
}

/// Mean processing time of completed and failed records, in seconds.
pub fn average_processing_time(projection: &Projection) -> Option<f64> {
    let indexes = projection.indexes();
    (indexes.processing_count > 0)
        .then(|| indexes.processing_sum_s / indexes.processing_count as f64)
}

/// Parses a metrics time range: `1h`, `24h`, `7d`, `30d`, or `<n>` followed by `s`, `m`, `h` or
/// `d`, with n ≥ 1. Returns seconds.
pub fn parse_time_range(text: &str) -> Option<u64> {
    let unit = text.chars().last()?;
    let digits = &text[..text.len() - unit.len_utf8()];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.starts_with('0') {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let seconds = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return None,
    };
    n.checked_mul(seconds).filter(|&s| s <= 10 * 366 * 86_400)
}

/// Processing-time statistics over a set of finished records.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Latency {
    /// Mean, seconds.
    pub avg: Option<f64>,
    /// Smallest, seconds.
    pub min: Option<f64>,
    /// Largest, seconds.
    pub max: Option<f64>,
    /// Median, within one histogram bucket (5%).
    pub p50: Option<f64>,
    /// 95th percentile, within one bucket.
    pub p95: Option<f64>,
    /// 99th percentile, within one bucket.
    pub p99: Option<f64>,
}

impl Latency {
    fn of(histogram: &Histogram) -> Latency {
        let some = histogram.total > 0;
        Latency {
            avg: histogram.mean(),
            min: some.then_some(histogram.min),
            max: some.then_some(histogram.max),
            p50: histogram.percentile(0.50),
            p95: histogram.percentile(0.95),
            p99: histogram.percentile(0.99),
        }
    }
}

/// One bucket of the metrics series.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesBucket {
    /// Start of the bucket, seconds since the epoch (aligned to the bucket width).
    pub start: f64,
    /// Completed interactions that started in the bucket.
    pub completed: u64,
    /// Failed ones.
    pub failed: u64,
    /// Cancelled ones.
    pub cancelled: u64,
    /// Mean processing time of completed and failed ones.
    pub avg_processing_time: Option<f64>,
    /// Largest processing time of completed and failed ones.
    pub max_processing_time: Option<f64>,
}

/// Performance metrics over finished interactions that started in a range.
#[derive(Debug, Clone, PartialEq)]
pub struct Metrics {
    /// Finished (completed, failed, cancelled) interactions that started in the range.
    pub total_interactions: u64,
    /// Completed ones.
    pub completed: u64,
    /// Failed ones.
    pub failed: u64,
    /// Cancelled ones: neither success nor error.
    pub cancelled: u64,
    /// completed / total.
    pub success_rate: f64,
    /// failed / total.
    pub error_rate: f64,
    /// Processing times of completed and failed interactions.
    pub latency: Latency,
    /// Width of the series buckets, seconds.
    pub bucket_seconds: u64,
    /// Counts and latency per bucket, oldest first, covering the whole range.
    pub series: Vec<SeriesBucket>,
}

/// The series bucket width for a range: the smallest of a minute, an hour, 6 hours, a day or a week
/// that gives at most 200 buckets (an hour for 24h and 7d, so charts show interactions per hour).
pub fn bucket_seconds(range_s: u64) -> u64 {
    [60, 3600, 21_600, 86_400, 604_800]
        .into_iter()
        .find(|w| range_s.div_ceil(*w) <= 200)
        .unwrap_or_else(|| range_s.div_ceil(200))
}

/// Below this many records, metrics for one mcp_id walk its bitmap rather than the time index.
const MCP_WALK_MAX: u64 = 500_000;

/// Sums of one series bucket.
#[derive(Debug, Clone, Copy, Default)]
struct BucketSums {
    completed: u64,
    failed: u64,
    cancelled: u64,
    timed: u64,
    sum: f64,
    max: f64,
}

/// Accumulates metrics from records and from hourly roll-ups.
struct Accumulator {
    width_s: u64,
    first_bucket: i64,
    buckets: Vec<BucketSums>,
    overall: Histogram,
}

impl Accumulator {
    fn bucket_of(&mut self, start_s: f64) -> &mut BucketSums {
        let index = (start_s / self.width_s as f64).floor() as i64 - self.first_bucket;
        let last = self.buckets.len() as i64 - 1;
        &mut self.buckets[index.clamp(0, last) as usize]
    }

    fn add_record(&mut self, record: &crate::projector::Record) {
        let Some(start) = record.start_time() else {
            return;
        };
        let time = record.processing_time();
        let bucket = self.bucket_of(start);
        match record.status() {
            Status::Completed => bucket.completed += 1,
            Status::Failed => bucket.failed += 1,
            Status::Cancelled => {
                bucket.cancelled += 1;
                return;
            }
            Status::Started | Status::InProgress => return,
        }
        if let Some(time) = time {
            bucket.timed += 1;
            bucket.sum += time;
            bucket.max = if bucket.timed == 1 {
                time
            } else {
                bucket.max.max(time)
            };
            self.overall.add(time);
        }
    }

    fn add_rollup(&mut self, hour: i64, rollup: &Rollup) {
        let bucket = self.bucket_of((hour * ROLLUP_SECONDS as i64) as f64);
        bucket.completed += rollup.completed;
        bucket.failed += rollup.failed;
        bucket.cancelled += rollup.cancelled;
        if rollup.timed > 0 {
            bucket.max = if bucket.timed == 0 {
                rollup.max
            } else {
                bucket.max.max(rollup.max)
            };
            bucket.timed += rollup.timed;
            bucket.sum += rollup.sum;
            self.overall.merge(rollup);
        }
    }
}

/// Computes metrics over interactions that started in `[now_s - range_s, now_s]`.
///
/// Without an mcp_id and with buckets of whole hours, whole hours come from the projection's
/// hourly roll-ups and only the two partial hours at the ends are read record by record. For one
/// mcp_id, its bitmap is walked while it is small; otherwise the time index is scanned.
pub fn metrics(projection: &Projection, now_s: f64, range_s: u64, mcp_id: Option<&str>) -> Metrics {
    let width_s = bucket_seconds(range_s);
    let from_s = now_s - range_s as f64;
    let first_bucket = (from_s / width_s as f64).floor() as i64;
    let last_bucket = (now_s / width_s as f64).floor() as i64;
    let count = usize::try_from(last_bucket - first_bucket + 1).unwrap_or(1);
    let mut acc = Accumulator {
        width_s,
        first_bucket,
        buckets: vec![BucketSums::default(); count],
        overall: Histogram::default(),
    };
    let indexes = projection.indexes();
    let in_range = |start: f64| from_s <= start && start <= now_s;
    // Records that started in [from, to), or [from, to] when `inclusive`.
    let scan = |acc: &mut Accumulator, from: f64, to: f64, inclusive: bool| {
        use std::ops::Bound::{Excluded, Included};
        if to < from || to <= 0.0 {
            return;
        }
        let low = TimeKey::new(start_key(from.max(f64::MIN_POSITIVE)), 0);
        let high = if inclusive {
            Included(TimeKey::new(start_key(to), u32::MAX))
        } else {
            Excluded(TimeKey::new(start_key(to), 0))
        };
        let empty = match high {
            Included(h) => h < low,
            _ => TimeKey::new(start_key(to), 0) <= low,
        };
        if empty {
            return;
        }
        for entry in indexes.by_start.range((Included(low), high)) {
            acc.add_record(projection.record(entry.ordinal()));
        }
    };
    match mcp_id {
        Some(name) => {
            if let Some(mcp) = projection.mcp_number(name) {
                let members = &indexes.by_mcp[mcp as usize];
                if members.len() <= MCP_WALK_MAX {
                    for ordinal in members {
                        let record = projection.record(ordinal);
                        if record.start_time().is_some_and(in_range) {
                            acc.add_record(record);
                        }
                    }
                } else {
                    let low = TimeKey::new(start_key(from_s.max(f64::MIN_POSITIVE)), 0);
                    let high = TimeKey::new(start_key(now_s.max(f64::MIN_POSITIVE)), u32::MAX);
                    for entry in indexes.by_start.range(low..=high) {
                        let record = projection.record(entry.ordinal());
                        if record.mcp() == mcp {
                            acc.add_record(record);
                        }
                    }
                }
            }
        }
        None if width_s.is_multiple_of(ROLLUP_SECONDS) => {
            let hour_s = ROLLUP_SECONDS as f64;
            let first_whole = (from_s / hour_s).ceil() as i64;
            let end_whole = (now_s / hour_s).floor() as i64;
            if first_whole < end_whole {
                scan(&mut acc, from_s, first_whole as f64 * hour_s, false);
                for (&hour, rollup) in indexes.hourly.range(first_whole..end_whole) {
                    acc.add_rollup(hour, rollup);
                }
                scan(&mut acc, end_whole as f64 * hour_s, now_s, true);
            } else {
                scan(&mut acc, from_s, now_s, true);
            }
        }
        None => scan(&mut acc, from_s, now_s, true),
    }
    summarize(acc)
}

fn summarize(acc: Accumulator) -> Metrics {
    let (completed, failed, cancelled) = acc.buckets.iter().fold((0, 0, 0), |(c, f, x), b| {
        (c + b.completed, f + b.failed, x + b.cancelled)
    });
    let total = completed + failed + cancelled;
    let rate = |n: u64| {
        if total == 0 {
            0.0
        } else {
            n as f64 / total as f64
        }
    };
    let width_s = acc.width_s;
    Metrics {
        total_interactions: total,
        completed,
        failed,
        cancelled,
        success_rate: rate(completed),
        error_rate: rate(failed),
        latency: Latency::of(&acc.overall),
        bucket_seconds: width_s,
        series: acc
            .buckets
            .iter()
            .enumerate()
            .map(|(i, b)| SeriesBucket {
                start: ((acc.first_bucket + i as i64) * width_s as i64) as f64,
                completed: b.completed,
                failed: b.failed,
                cancelled: b.cancelled,
                avg_processing_time: (b.timed > 0).then(|| b.sum / b.timed as f64),
                max_processing_time: (b.timed > 0).then_some(b.max),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Action, StoredEvent};

    /// Folds `(interaction, mcp, action, timestamp)` events with seqs in order.
    fn projection(events: &[(&str, &str, Action, f64)]) -> Projection {
        let mut projection = Projection::new();
        for (i, &(id, mcp, action, timestamp)) in events.iter().enumerate() {
            projection.apply(&StoredEvent {
                seq: i as u64 + 1,
                write_index: 0,
                received_at_us: (i as u64 + 1) * 1_000_000,
                key_id: [0; 8],
                action,
                timestamp,
                interaction_id: id,
                mcp_id: mcp,
                event_id: None,
                body: "{}",
            });
        }
        projection
    }

    fn ids(projection: &Projection, page: &HistoryPage) -> Vec<String> {
        page.ordinals
            .iter()
            .map(|&o| projection.interaction_id(projection.record(o)).to_owned())
            .collect()
    }

    fn fixture() -> Projection {
        use Action::*;
        projection(&[
            ("a", "m1", Start, 100.0),
            ("b", "m2", Start, 300.0),
            ("c", "m1", Start, 200.0),
            ("a", "m1", Complete, 101.5),
            ("b", "m2", Error, 304.0),
            ("d", "m1", Progress, 50.0), // orphan
            ("e", "m1", Start, 400.0),
            ("c", "m1", Cancelled, 210.0),
        ])
    }

    #[test]
    fn history_is_newest_start_first_then_orphans() {
        let p = fixture();
        let q = HistoryQuery {
            limit: 10,
            ..HistoryQuery::default()
        };
        assert_eq!(ids(&p, &history(&p, &q)), ["e", "b", "c", "a", "d"]);
        let q = HistoryQuery {
            limit: 10,
            mcp_id: Some("m1".into()),
            ..HistoryQuery::default()
        };
        assert_eq!(ids(&p, &history(&p, &q)), ["e", "c", "a", "d"]);
        let q = HistoryQuery {
            limit: 10,
            status: Some(Status::Completed),
            ..HistoryQuery::default()
        };
        assert_eq!(ids(&p, &history(&p, &q)), ["a"]);
        let q = HistoryQuery {
            limit: 10,
            since: Some(150.0),
            until: Some(350.0),
            ..HistoryQuery::default()
        };
        assert_eq!(ids(&p, &history(&p, &q)), ["b", "c"]);
        let q = HistoryQuery {
            limit: 10,
            mcp_id: Some("nobody".into()),
            ..HistoryQuery::default()
        };
        assert!(history(&p, &q).ordinals.is_empty());
        let q = HistoryQuery {
            limit: 2,
            offset: 1,
            ..HistoryQuery::default()
        };
        assert_eq!(ids(&p, &history(&p, &q)), ["b", "c"]);
    }

    #[test]
    fn cursors_walk_everything_once_with_and_without_filters() {
        let p = fixture();
        for query in [
            HistoryQuery {
                limit: 1,
                ..HistoryQuery::default()
            },
            HistoryQuery {
                limit: 2,
                mcp_id: Some("m1".into()),
                ..HistoryQuery::default()
            },
            HistoryQuery {
                limit: 1,
                since: Some(1.0),
                ..HistoryQuery::default()
            },
        ] {
            let everything = history(
                &p,
                &HistoryQuery {
                    limit: 1000,
                    ..query.clone()
                },
            )
            .ordinals;
            let mut walked = Vec::new();
            let mut after = None;
            loop {
                let page = history(
                    &p,
                    &HistoryQuery {
                        after,
                        ..query.clone()
                    },
                );
                walked.extend(page.ordinals);
                match page.next {
                    Some(next) => after = Some(Position::decode(&next.encode()).unwrap()),
                    None => break,
                }
            }
            assert_eq!(walked, everything, "{query:?}");
        }
    }

    #[test]
    fn counts_and_stale_records() {
        let p = fixture();
        let counts = record_counts(&p, 100_000_000, 1_000_000);
        assert_eq!(counts.total, 5);
        assert_eq!(
            (counts.completed, counts.failed, counts.cancelled),
            (1, 1, 1)
        );
        assert_eq!(counts.active, 2); // d in progress (orphan), e started
        assert_eq!(counts.orphan, 1);
        // d (no start) was received at 6 s; e started at 400 s by its own timestamp.
        assert_eq!(counts.stale, 1, "at 100 s only d is older than 1 s");
        assert_eq!(record_counts(&p, 12_000_000, 5_500_000).stale, 1);
        assert_eq!(
            record_counts(&p, 500_000_000, 50_000_000).stale,
            2,
            "at 500 s e's start (400 s) is older than 50 s, whenever it arrived"
        );
        assert_eq!(average_processing_time(&p), Some((1.5 + 4.0) / 2.0));
    }

    #[test]
    fn metrics_over_a_range() {
        let p = fixture();
        let m = metrics(&p, 500.0, 500, None);
        assert_eq!(m.total_interactions, 3);
        assert_eq!((m.completed, m.failed, m.cancelled), (1, 1, 1));
        assert!((m.success_rate - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(m.latency.min, Some(1.5));
        assert_eq!(m.latency.max, Some(4.0));
        assert_eq!(m.latency.avg, Some(2.75));
        assert_eq!(m.bucket_seconds, 60);
        assert_eq!(
            m.series
                .iter()
                .map(|b| b.completed + b.failed + b.cancelled)
                .sum::<u64>(),
            3
        );
        let only_m2 = metrics(&p, 500.0, 500, Some("m2"));
        assert_eq!((only_m2.total_interactions, only_m2.failed), (1, 1));
        let recent = metrics(&p, 500.0, 250, None);
        assert_eq!(recent.total_interactions, 1, "only b started after 250");
    }

    /// Roll-ups, bitmap walks and scans all agree with counting record by record.
    #[test]
    fn every_metrics_path_agrees_with_brute_force() {
        use Action::*;
        let mut events = Vec::new();
        let names: Vec<String> = (0..600).map(|i| format!("r{i}")).collect();
        let now = 1_763_900_000.0;
        for (i, name) in names.iter().enumerate() {
            // Spread over 40 days, at odd offsets so hour edges are crossed.
            let start = now - 40.0 * 86_400.0 + i as f64 * 5_799.3;
            let mcp = ["m0", "m1", "m2"][i % 3];
            let end = [Complete, Error, Cancelled, Complete][i % 4];
            events.push((name.as_str(), mcp, Start, start));
            if i % 7 != 0 {
                events.push((
                    name.as_str(),
                    mcp,
                    end,
                    start + (i % 13) as f64 * 0.7 + 0.01,
                ));
            }
        }
        let p = projection(&events);
        for (range, mcp) in [
            (30 * 86_400, None),
            (7 * 86_400, None),
            (86_400, None),
            (3600, None),
            (6 * 3600, None),
            (30 * 86_400, Some("m1")),
            (5 * 3600, Some("m2")),
        ] {
            let m = metrics(&p, now, range, mcp);
            let finished: Vec<&crate::projector::Record> = p
                .records()
                .filter(|r| {
                    r.start_time()
                        .is_some_and(|s| now - range as f64 <= s && s <= now)
                })
                .filter(|r| mcp.is_none_or(|name| p.mcp_name(r.mcp()) == name))
                .filter(|r| !r.status().is_active())
                .collect();
            let count = |s: Status| finished.iter().filter(|r| r.status() == s).count() as u64;
            assert_eq!(
                (m.completed, m.failed, m.cancelled),
                (
                    count(Status::Completed),
                    count(Status::Failed),
                    count(Status::Cancelled)
                ),
                "{range} {mcp:?}"
            );
            let times: Vec<f64> = finished
                .iter()
                .filter(|r| r.status() != Status::Cancelled)
                .filter_map(|r| r.processing_time())
                .collect();
            let min = times.iter().copied().fold(f64::INFINITY, f64::min);
            let max = times.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            if times.is_empty() {
                assert_eq!(
                    (m.latency.min, m.latency.max, m.latency.avg),
                    (None, None, None)
                );
            } else {
                assert_eq!(m.latency.min, Some(min), "{range} {mcp:?}");
                assert_eq!(m.latency.max, Some(max), "{range} {mcp:?}");
                let avg = times.iter().sum::<f64>() / times.len() as f64;
                assert!(
                    (m.latency.avg.unwrap() - avg).abs() < 1e-9,
                    "{range} {mcp:?}"
                );
            }
            for bucket in &m.series {
                let end = bucket.start + m.bucket_seconds as f64;
                let here = finished
                    .iter()
                    .filter(|r| {
                        let s = r.start_time().unwrap();
                        bucket.start <= s && s < end
                    })
                    .count() as u64;
                assert_eq!(
                    bucket.completed + bucket.failed + bucket.cancelled,
                    here,
                    "{range} {mcp:?} bucket {}",
                    bucket.start
                );
            }
        }
    }

    #[test]
    fn time_ranges() {
        assert_eq!(parse_time_range("1h"), Some(3600));
        assert_eq!(parse_time_range("24h"), Some(86_400));
        assert_eq!(parse_time_range("7d"), Some(604_800));
        assert_eq!(parse_time_range("30d"), Some(2_592_000));
        assert_eq!(parse_time_range("90s"), Some(90));
        assert_eq!(parse_time_range("15m"), Some(900));
        for bad in [
            "",
            "h",
            "0h",
            "1w",
            "1.5h",
            "-1h",
            "01h",
            "24",
            "1hh",
            "99999999999d",
        ] {
            assert_eq!(parse_time_range(bad), None, "{bad}");
        }
        assert_eq!(bucket_seconds(3600), 60);
        assert_eq!(bucket_seconds(86_400), 3600);
        assert_eq!(bucket_seconds(2_592_000), 21_600);
    }
}
