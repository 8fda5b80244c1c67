//! `GET /api/v2/interactions` (history), `/api/v2/interactions/stats` and
//! `/api/v2/performance/metrics`.

use axum::extract::{Query, State};
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::records::{record_parts, Parts, RecordJson};
use super::{ApiError, AppState};
use crate::auth::Principal;
use crate::clock::now_us;
use crate::projector::Status;
use crate::query::{self, HistoryQuery, HISTORY_LIMIT_DEFAULT, HISTORY_LIMIT_MAX};
use crate::scope::Scope;

/// Raw query parameters, in order.
type Params = Query<Vec<(String, String)>>;

/// One page of history.
#[derive(Serialize, ToSchema)]
pub struct HistoryJson {
    /// Full records, newest start first; records with no start event yet come last.
    interactions: Vec<RecordJson>,
    /// Records in this page.
    count: usize,
    /// The page size used.
    limit: usize,
    /// Records skipped.
    offset: usize,
    /// Pass as `cursor` for the next page; null on the last page.
    next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/v2/interactions", tag = "read",
    params(
        ("mcp_id" = Option<String>, Query, description = "only this mcp_id"),
        ("status" = Option<String>, Query, description = "started, in_progress, completed, failed or cancelled"),
        ("since" = Option<f64>, Query, description = "only interactions that started at or after (seconds)"),
        ("until" = Option<f64>, Query, description = "only interactions that started at or before (seconds)"),
        ("limit" = Option<usize>, Query, description = "1 to 1000, default 100"),
        ("offset" = Option<usize>, Query, description = "records to skip"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page"),
    ),
    responses((status = 200, body = HistoryJson), (status = 400, body = super::ErrorJson), (status = 401, body = super::ErrorJson)),
    security(("bearer" = [])))]
pub(super) async fn history(
    State(state): State<AppState>,
    principal: Principal,
    Query(params): Params,
) -> Result<axum::response::Response, ApiError> {
    let params = super::checked_params(
        params,
        &[
            "mcp_id", "status", "since", "until", "limit", "offset", "cursor",
        ],
    )?;
    let mut query = history_query(&state, &params)?;
    match principal.scope().narrow(query.mcp_id.as_deref()) {
        Scope::All => {}
        Scope::Only(mcp_id) => query.mcp_id = Some(mcp_id.to_owned()),
        // Another mcp_id's history looks exactly like an unknown mcp_id's: empty.
        Scope::Nothing => {
            return Ok(Json(HistoryJson {
                interactions: Vec::new(),
                count: 0,
                limit: query.limit,
                offset: query.offset,
                next_cursor: None,
            })
            .into_response())
        }
    }
    history_page(&state, &query)
}

/// A history query from its checked parameters.
fn history_query(state: &AppState, params: &[(String, String)]) -> Result<HistoryQuery, ApiError> {
    let mut query = HistoryQuery {
        limit: HISTORY_LIMIT_DEFAULT,
        ..HistoryQuery::default()
    };
    for (name, value) in params {
        match name.as_str() {
            "mcp_id" => query.mcp_id = Some(value.clone()),
            "status" => {
                query.status = Some(Status::from_name(value).ok_or_else(|| {
                    ApiError::bad_parameter("status", format!("unknown status {value:?}; expected started, in_progress, completed, failed or cancelled"))
                })?)
            }
            "since" => query.since = Some(seconds_param("since", value)?),
            "until" => query.until = Some(seconds_param("until", value)?),
            "limit" => {
                query.limit = value
                    .parse()
                    .ok()
                    .filter(|l| (1..=HISTORY_LIMIT_MAX).contains(l))
                    .ok_or_else(|| ApiError::bad_parameter("limit", format!("limit must be a whole number from 1 to {HISTORY_LIMIT_MAX}, got {value:?}")))?
            }
            "offset" => {
                query.offset = value
                    .parse()
                    .ok()
                    .filter(|&o: &usize| o <= 1_000_000)
                    .ok_or_else(|| ApiError::bad_parameter("offset", format!("offset must be a whole number up to 1000000, got {value:?}")))?
            }
            "cursor" => {
                query.after = Some(state.cursors.open(value).ok_or_else(|| ApiError::bad_parameter("cursor", "not a cursor this server gave out: pass a page's next_cursor unchanged"))?)
            }
            other => return Err(ApiError::bad_parameter(other, format!("unknown query parameter {other:?}"))),
        }
    }
    Ok(query)
}

/// The page `query` asks for, as `HistoryJson`'s shape written in pieces. A page ends early,
/// with a cursor to go on from, once its records hold `HISTORY_PAGE_EVENTS_MAX` events: what a
/// page holds in memory is bounded by events (a few words each), whatever `limit` says.
fn history_page(
    state: &AppState,
    query: &HistoryQuery,
) -> Result<axum::response::Response, ApiError> {
    let view = state.engine.view();
    let page = query::history(&view.projection, query);
    let mut parts = Parts::default();
    parts.text("{\"interactions\":[");
    let (mut count, mut events) = (0usize, 0u64);
    let mut next = page.next;
    for (n, &ordinal) in page.ordinals.iter().enumerate() {
        let record = view.projection.record(ordinal);
        if n > 0 {
            parts.text(",");
        }
        record_parts(&view, record, &mut parts)?;
        count += 1;
        events += u64::from(record.event_count());
        if events >= HISTORY_PAGE_EVENTS_MAX && n + 1 < page.ordinals.len() {
            next = Some(query::position_of(&view.projection, ordinal));
            break;
        }
    }
    drop(view);
    parts.text("],\"count\":");
    parts.json(&count);
    parts.text(",\"limit\":");
    parts.json(&query.limit);
    parts.text(",\"offset\":");
    parts.json(&query.offset);
    parts.text(",\"next_cursor\":");
    parts.json(&next.map(|next| state.cursors.seal(next)));
    parts.text("}");
    Ok(parts.into_response())
}

/// Events whose records fill a history page: once a page's records hold this many, it ends there
/// and `next_cursor` goes on (so a page may hold fewer than `limit` records). With the few words
/// a read keeps per event, a page holds at most a few MB whatever its records' payloads weigh.
pub const HISTORY_PAGE_EVENTS_MAX: u64 = 100_000;

/// The reference's `stats` object.
#[derive(Serialize, ToSchema)]
pub struct ApiCounters {
    /// Events handed to ingest since start.
    requests_received: u64,
    /// Events acknowledged as stored since start.
    requests_processed: u64,
    /// Events refused after validation (queue full, conflict, storage failure) since start.
    requests_failed: u64,
    /// Events accepted and not yet durable.
    queue_size: usize,
}

/// Records by status.
#[derive(Serialize, ToSchema)]
pub struct RecordCountsJson {
    total: u64,
    active: u64,
    started: u64,
    in_progress: u64,
    completed: u64,
    failed: u64,
    cancelled: u64,
    /// Active interactions that started (or, with no start event yet, were first received)
    /// longer than `stale_after` ago.
    stale: u64,
    /// Interactions with no start event yet.
    orphan: u64,
    /// Events kept but not applied: second starts and second terminal events.
    conflicts: u64,
}

/// What the log holds.
#[derive(Serialize, ToSchema)]
pub struct StorageJson {
    segments: usize,
    bytes: u64,
    first_seq: Option<u64>,
    last_seq: Option<u64>,
    /// Server receive time of the oldest retained event, seconds.
    oldest_event_time: Option<f64>,
}

/// `GET /api/v2/interactions/stats`. A writer key sees its own mcp_id's records only, and none
/// of the server-wide figures (request counters, queue, storage), which would tell it how much
/// the other mcp_ids write.
#[derive(Serialize, ToSchema)]
pub struct StatsJson {
    /// Server-wide request counters; absent for a writer key.
    #[serde(skip_serializing_if = "Option::is_none")]
    stats: Option<ApiCounters>,
    timestamp: f64,
    /// Events accepted and not yet durable, server-wide; absent for a writer key.
    #[serde(skip_serializing_if = "Option::is_none")]
    queue_size: Option<usize>,
    records: RecordCountsJson,
    /// Mean processing time of completed and failed interactions, seconds.
    average_processing_time: Option<f64>,
    /// What the log holds, server-wide; absent for a writer key.
    #[serde(skip_serializing_if = "Option::is_none")]
    storage: Option<StorageJson>,
}

#[utoipa::path(get, path = "/api/v2/interactions/stats", tag = "read",
    responses((status = 200, body = StatsJson), (status = 400, body = super::ErrorJson), (status = 401, body = super::ErrorJson),
        (status = 503, body = super::ErrorJson)),
    security(("bearer" = [])))]
pub(super) async fn stats(State(state): State<AppState>, principal: Principal) -> Json<StatsJson> {
    use std::sync::atomic::Ordering::Relaxed;
    let engine = &state.engine;
    let now = now_us();
    let view = engine.view();
    let scope = principal.scope();
    let (counts, average_processing_time) = match scope {
        Scope::All => (
            query::record_counts(&view.projection, now, state.stale_after_us),
            query::average_processing_time(&view.projection),
        ),
        Scope::Only(own) => {
            query::record_counts_of(&view.projection, own, now, state.stale_after_us)
        }
        Scope::Nothing => (query::RecordCounts::default(), None),
    };
    let server_wide = scope == Scope::All;
    let catalog = &view.catalog;
    let counters = engine.counters();
    let queue_size = engine.queue_size();
    Json(StatsJson {
        stats: server_wide.then(|| ApiCounters {
            requests_received: counters.requests_received.load(Relaxed),
            requests_processed: counters.requests_processed.load(Relaxed),
            requests_failed: counters.requests_failed.load(Relaxed),
            queue_size,
        }),
        timestamp: now as f64 / 1e6,
        queue_size: server_wide.then_some(queue_size),
        records: RecordCountsJson {
            total: counts.total,
            active: counts.active,
            started: counts.started,
            in_progress: counts.in_progress,
            completed: counts.completed,
            failed: counts.failed,
            cancelled: counts.cancelled,
            stale: counts.stale,
            orphan: counts.orphan,
            conflicts: counts.conflicts,
        },
        average_processing_time,
        storage: server_wide.then(|| StorageJson {
            segments: catalog.segments().len(),
            bytes: catalog.bytes(),
            first_seq: catalog.first_seq(),
            last_seq: catalog.last_seq(),
            oldest_event_time: catalog
                .segments()
                .iter()
                .find(|s| !s.frames.is_empty())
                .map(|s| s.received_min_us as f64 / 1e6),
        }),
    })
}

/// One bucket of the metrics series.
#[derive(Serialize, ToSchema)]
pub struct BucketJson {
    /// Bucket start, seconds since the epoch.
    start: f64,
    completed: u64,
    failed: u64,
    cancelled: u64,
    avg_processing_time: Option<f64>,
    max_processing_time: Option<f64>,
}

/// `GET /api/v2/performance/metrics`: finished interactions that started in the range.
#[derive(Serialize, ToSchema)]
pub struct MetricsJson {
    time_range: String,
    mcp_id: Option<String>,
    timestamp: f64,
    total_interactions: u64,
    completed: u64,
    failed: u64,
    cancelled: u64,
    success_rate: f64,
    error_rate: f64,
    avg_processing_time: Option<f64>,
    min_processing_time: Option<f64>,
    max_processing_time: Option<f64>,
    /// Within 5% (one histogram bucket).
    p50_processing_time: Option<f64>,
    p95_processing_time: Option<f64>,
    p99_processing_time: Option<f64>,
    bucket_seconds: u64,
    series: Vec<BucketJson>,
}

#[utoipa::path(get, path = "/api/v2/performance/metrics", tag = "read",
    params(
        ("time_range" = Option<String>, Query, description = "1h, 24h (default), 7d, 30d or <n>[smhd]"),
        ("mcp_id" = Option<String>, Query, description = "only this mcp_id"),
    ),
    responses((status = 200, body = MetricsJson), (status = 400, body = super::ErrorJson), (status = 401, body = super::ErrorJson)),
    security(("bearer" = [])))]
pub(super) async fn metrics(
    State(state): State<AppState>,
    principal: Principal,
    Query(params): Params,
) -> Result<Json<MetricsJson>, ApiError> {
    let params = super::checked_params(params, &["time_range", "mcp_id"])?;
    let mut time_range = "24h".to_owned();
    let mut mcp_id = None;
    for (name, value) in params {
        match name.as_str() {
            "time_range" => time_range = value,
            "mcp_id" => mcp_id = Some(value),
            other => {
                return Err(ApiError::bad_parameter(
                    other,
                    format!("unknown query parameter {other:?}"),
                ))
            }
        }
    }
    let range_s = query::parse_time_range(&time_range).ok_or_else(|| {
        ApiError::bad_parameter(
            "time_range",
            format!(
                "time_range {time_range:?} is not 1h, 24h, 7d, 30d or <n> followed by s, m, h or d"
            ),
        )
    })?;
    let now_s = now_us() as f64 / 1e6;
    // A writer's metrics are its own mcp_id's; asking for another gives what an unknown mcp_id
    // gives (all zeros).
    let scope = principal.scope().narrow(mcp_id.as_deref());
    let view = state.engine.view();
    let m = query::metrics(&view.projection, now_s, range_s, scope);
    drop(view);
    Ok(Json(MetricsJson {
        time_range,
        mcp_id,
        timestamp: now_s,
        total_interactions: m.total_interactions,
        completed: m.completed,
        failed: m.failed,
        cancelled: m.cancelled,
        success_rate: m.success_rate,
        error_rate: m.error_rate,
        avg_processing_time: m.latency.avg,
        min_processing_time: m.latency.min,
        max_processing_time: m.latency.max,
        p50_processing_time: m.latency.p50,
        p95_processing_time: m.latency.p95,
        p99_processing_time: m.latency.p99,
        bucket_seconds: m.bucket_seconds,
        series: m
            .series
            .into_iter()
            .map(|b| BucketJson {
                start: b.start,
                completed: b.completed,
                failed: b.failed,
                cancelled: b.cancelled,
                avg_processing_time: b.avg_processing_time,
                max_processing_time: b.max_processing_time,
            })
            .collect(),
    }))
}

fn seconds_param(field: &str, value: &str) -> Result<f64, ApiError> {
    value
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| {
            ApiError::bad_parameter(
                field,
                format!("{field} must be a number of seconds since the Unix epoch, got {value:?}"),
            )
        })
}
