//! Performance metrics over a time range: hourly roll-ups for whole hours, record scans for the
//! edges, 5%-bucket percentiles, a time series.

use crate::latency::{Histogram, Rollup};
use crate::projector::{start_key, Projection, Status, TimeKey, ROLLUP_SECONDS};
use crate::scope::Scope;

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
pub fn metrics(projection: &Projection, now_s: f64, range_s: u64, scope: Scope<'_>) -> Metrics {
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
    match scope {
        Scope::Nothing => {}
        Scope::Only(name) => {
            if let Some(mcp) = projection.mcp_number(name) {
                acc.add_mcp(projection, mcp, from_s, now_s);
            }
        }
        Scope::All if width_s.is_multiple_of(ROLLUP_SECONDS) => {
            acc.add_by_hours(projection, from_s, now_s);
        }
        Scope::All => acc.add_started(projection, from_s, now_s, true),
    }
    summarize(acc)
}

impl Accumulator {
    /// Every record that started in `[from, to)`, or `[from, to]` when `inclusive`, read from
    /// the time index.
    fn add_started(&mut self, projection: &Projection, from: f64, to: f64, inclusive: bool) {
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
        for entry in projection.indexes().by_start.range((Included(low), high)) {
            self.add_record(projection.record(entry.ordinal()));
        }
    }

    /// The records of one mcp_id that started in `[from_s, now_s]`: its bitmap walked while it
    /// is small, else the time index scanned for it.
    fn add_mcp(&mut self, projection: &Projection, mcp: u32, from_s: f64, now_s: f64) {
        let indexes = projection.indexes();
        let members = &indexes.by_mcp[mcp as usize];
        if members.len() <= MCP_WALK_MAX {
            for ordinal in members {
                let record = projection.record(ordinal);
                if record
                    .start_time()
                    .is_some_and(|start| from_s <= start && start <= now_s)
                {
                    self.add_record(record);
                }
            }
            return;
        }
        let low = TimeKey::new(start_key(from_s.max(f64::MIN_POSITIVE)), 0);
        let high = TimeKey::new(start_key(now_s.max(f64::MIN_POSITIVE)), u32::MAX);
        for entry in indexes.by_start.range(low..=high) {
            let record = projection.record(entry.ordinal());
            if record.mcp() == mcp {
                self.add_record(record);
            }
        }
    }

    /// Every record that started in `[from_s, now_s]`: the whole hours from the hourly
    /// roll-ups, the partial hours at either end record by record.
    fn add_by_hours(&mut self, projection: &Projection, from_s: f64, now_s: f64) {
        let hour_s = ROLLUP_SECONDS as f64;
        let first_whole = (from_s / hour_s).ceil() as i64;
        let end_whole = (now_s / hour_s).floor() as i64;
        if first_whole >= end_whole {
            self.add_started(projection, from_s, now_s, true);
            return;
        }
        self.add_started(projection, from_s, first_whole as f64 * hour_s, false);
        for (&hour, rollup) in projection.indexes().hourly.range(first_whole..end_whole) {
            self.add_rollup(hour, rollup);
        }
        self.add_started(projection, end_whole as f64 * hour_s, now_s, true);
    }
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
