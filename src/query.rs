//! Queries over the projection: history pages, record counts, performance metrics.
//!
//! Pure functions of the view and a "now" passed in, so tests can pin the clock. Nothing here
//! knows HTTP; the handlers in `http/` shape the answers.

use roaring::RoaringBitmap;

use crate::projector::{start_key, Projection, Status};

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
                .filter(|&&(_, ordinal)| matches(ordinal))
                .map(|&(key, ordinal)| Position {
                    started: 1,
                    key,
                    ordinal,
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
) -> std::collections::btree_set::Range<'_, (u64, u32)> {
    use std::ops::Bound::{Excluded, Included};
    let lower = (low, 0);
    let mut upper = Included((high, u32::MAX));
    match after {
        Some(after) if after.started == 0 => upper = Excluded(lower), // all started ones came before
        Some(after) if (after.key, after.ordinal) <= (high, u32::MAX) => {
            upper = Excluded((after.key, after.ordinal))
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
    /// Active records whose first event was received longer than `stale_after` ago.
    pub stale: u64,
    /// Records with no start event yet.
    pub orphan: u64,
    /// Events kept but not applied (second starts and second terminal events).
    pub conflicts: u64,
}

/// Counts records by status; `stale_after_us` and `now_us` are server-clock microseconds.
pub fn record_counts(projection: &Projection, now_us: u64, stale_after_us: u64) -> RecordCounts {
    let indexes = projection.indexes();
    let count = |s: Status| indexes.by_status[s.index()].len();
    let cutoff = now_us.saturating_sub(stale_after_us);
    let stale = [Status::Started, Status::InProgress]
        .iter()
        .flat_map(|&s| indexes.by_status[s.index()].iter())
        .filter(|&ordinal| projection.record(ordinal).received_at_us() < cutoff)
        .count() as u64;
    RecordCounts {
        total: projection.records().len() as u64,
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

/// Latency histogram with logarithmic buckets: each bucket's upper bound is 5% above the one
/// before, from 1 ms up, so a percentile read from it is within one bucket (5%) of the truth.
const HISTOGRAM_RATIO: f64 = 1.05;
const HISTOGRAM_FIRST_S: f64 = 0.001;
const HISTOGRAM_BUCKETS: usize = 520; // 0.001 s × 1.05^519 ≈ 10^8 s

#[derive(Debug, Clone)]
struct Histogram {
    counts: Vec<u32>,
    total: u64,
    sum: f64,
    min: f64,
    max: f64,
}

impl Histogram {
    fn new() -> Histogram {
        Histogram {
            counts: vec![0; HISTOGRAM_BUCKETS],
            total: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }

    fn bucket(seconds: f64) -> usize {
        if seconds <= HISTOGRAM_FIRST_S {
            return 0;
        }
        let index = ((seconds / HISTOGRAM_FIRST_S).ln() / HISTOGRAM_RATIO.ln()).ceil() as usize;
        index.min(HISTOGRAM_BUCKETS - 1)
    }

    /// Upper bound of a bucket in seconds.
    fn upper(index: usize) -> f64 {
        HISTOGRAM_FIRST_S * HISTOGRAM_RATIO.powi(index as i32)
    }

    fn add(&mut self, seconds: f64) {
        // Negative processing times (client clocks) count as zero for the percentiles and keep
        // their value for min and the mean.
        self.counts[Histogram::bucket(seconds.max(0.0))] += 1;
        self.total += 1;
        self.sum += seconds;
        self.min = self.min.min(seconds);
        self.max = self.max.max(seconds);
    }

    fn percentile(&self, p: f64) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((p * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (index, &count) in self.counts.iter().enumerate() {
            seen += u64::from(count);
            if seen >= rank {
                // Never report past the largest value seen.
                return Some(Histogram::upper(index).min(self.max).max(self.min));
            }
        }
        Some(self.max)
    }

    fn mean(&self) -> Option<f64> {
        (self.total > 0).then(|| self.sum / self.total as f64)
    }
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

/// Computes metrics over interactions that started in `[now_s - range_s, now_s]`.
pub fn metrics(projection: &Projection, now_s: f64, range_s: u64, mcp_id: Option<&str>) -> Metrics {
    let width = bucket_seconds(range_s);
    let from_s = now_s - range_s as f64;
    let first_bucket = (from_s / width as f64).floor() as i64;
    let last_bucket = (now_s / width as f64).floor() as i64;
    let buckets = usize::try_from(last_bucket - first_bucket + 1).unwrap_or(1);
    let mut series: Vec<(SeriesBucket, Histogram)> = (0..buckets)
        .map(|i| {
            let start = ((first_bucket + i as i64) * width as i64) as f64;
            let bucket = SeriesBucket {
                start,
                completed: 0,
                failed: 0,
                cancelled: 0,
                avg_processing_time: None,
                max_processing_time: None,
            };
            (bucket, Histogram::new())
        })
        .collect();
    let mut overall = Histogram::new();
    let (mut completed, mut failed, mut cancelled) = (0u64, 0u64, 0u64);
    let mcp = match mcp_id {
        Some(name) => match projection.mcp_number(name) {
            Some(mcp) => Some(mcp),
            None => return summarize(0, 0, 0, &overall, width, series),
        },
        None => None,
    };
    let low = start_key(from_s.max(f64::MIN_POSITIVE));
    let high = if now_s > 0.0 { start_key(now_s) } else { 0 };
    for &(key, ordinal) in projection
        .indexes()
        .by_start
        .range((low, 0)..=(high, u32::MAX))
    {
        let record = projection.record(ordinal);
        if mcp.is_some_and(|m| m != record.mcp()) {
            continue;
        }
        let status = record.status();
        if status.is_active() {
            continue;
        }
        let start = f64::from_bits(key);
        let index = ((start / width as f64).floor() as i64 - first_bucket)
            .clamp(0, buckets as i64 - 1) as usize;
        let (bucket, histogram) = &mut series[index];
        match status {
            Status::Completed => {
                completed += 1;
                bucket.completed += 1;
            }
            Status::Failed => {
                failed += 1;
                bucket.failed += 1;
            }
            _ => {
                cancelled += 1;
                bucket.cancelled += 1;
                continue;
            }
        }
        if let Some(time) = record.processing_time() {
            overall.add(time);
            histogram.add(time);
        }
    }
    summarize(completed, failed, cancelled, &overall, width, series)
}

fn summarize(
    completed: u64,
    failed: u64,
    cancelled: u64,
    overall: &Histogram,
    width: u64,
    series: Vec<(SeriesBucket, Histogram)>,
) -> Metrics {
    let total = completed + failed + cancelled;
    let rate = |n: u64| {
        if total == 0 {
            0.0
        } else {
            n as f64 / total as f64
        }
    };
    Metrics {
        total_interactions: total,
        completed,
        failed,
        cancelled,
        success_rate: rate(completed),
        error_rate: rate(failed),
        latency: Latency::of(overall),
        bucket_seconds: width,
        series: series
            .into_iter()
            .map(|(mut bucket, histogram)| {
                bucket.avg_processing_time = histogram.mean();
                bucket.max_processing_time = (histogram.total > 0).then_some(histogram.max);
                bucket
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
            .map(|&o| projection.record(o).interaction_id().to_owned())
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
        assert_eq!(counts.stale, 2);
        assert_eq!(
            record_counts(&p, 12_000_000, 5_500_000).stale,
            1,
            "d was received at 6 s, e at 7 s"
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

    #[test]
    fn percentiles_are_within_one_bucket() {
        let mut h = Histogram::new();
        for i in 1..=1000 {
            h.add(i as f64 * 0.01);
        }
        for (p, exact) in [(0.5, 5.0), (0.95, 9.5), (0.99, 9.9)] {
            let got = h.percentile(p).unwrap();
            assert!(
                got >= exact && got <= exact * HISTOGRAM_RATIO,
                "p{p}: {got} vs {exact}"
            );
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
