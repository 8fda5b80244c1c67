//! Record counts by status, stale and orphan records, and the mean processing time.

use crate::projector::{Projection, Status};

/// Record counts: the `records` of `/api/v2/interactions/stats`, `mcplog_records` in `/metrics`,
/// and `mcplog-seg stats`, all from here and all in this shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
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
