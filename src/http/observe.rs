//! Operators' endpoints: `/livez`, `/readyz`, `/metrics` (Prometheus text), and the middleware
//! that times every request.
//!
//! Labels only ever take values from fixed lists (route templates, methods, reasons, statuses), so
//! the number of series is bounded whatever clients send.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::fmt::Write as _;

use super::otlp::{SpanOutcome, SpanTally};
use super::refusal::{self, Reason};
use super::{AppState, Route};
use crate::clock::now_us;
use crate::projector::Status;
use crate::query;
use crate::refusal::Code;
use crate::telemetry::{family, TimingHistogram};

/// The label index of a request no route matched.
const UNMATCHED: usize = Route::ALL.len();
const METHODS: [&str; 3] = ["GET", "POST", "other"];

/// Request metrics of the HTTP layer.
#[derive(Debug)]
pub struct HttpTelemetry {
    requests: Vec<[TimingHistogram; 3]>,
    rejected: [AtomicU64; Reason::COUNTED.len()],
    otlp_spans: [AtomicU64; SpanOutcome::ALL.len()],
}

impl Default for HttpTelemetry {
    fn default() -> HttpTelemetry {
        HttpTelemetry {
            requests: (0..=Route::ALL.len()).map(|_| Default::default()).collect(),
            rejected: Default::default(),
            otlp_spans: Default::default(),
        }
    }
}

impl HttpTelemetry {
    /// Adds an OTLP request's spans.
    pub(super) fn count_spans(&self, tally: SpanTally) {
        for (counter, outcome) in self.otlp_spans.iter().zip(SpanOutcome::ALL) {
            counter.fetch_add(tally.of(outcome), Ordering::Relaxed);
        }
    }
}

/// Times a request and counts refused ingests.
pub(super) async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .and_then(|m| Route::of_path(m.as_str()));
    let ingest = route.is_some_and(|r| r.ingests(request.method()));
    let route = route.map_or(UNMATCHED, Route::index);
    let method = match *request.method() {
        Method::GET => 0,
        Method::POST => 1,
        _ => 2,
    };
    let started = Instant::now();
    let response = next.run(request).await;
    let telemetry = &state.telemetry;
    telemetry.requests[route][method].observe(started.elapsed());
    // Every refusal carries its code (see `error::refusal_headers`), whose row says its reason.
    let reason = response
        .extensions()
        .get::<Code>()
        .map(|code| refusal::answer(*code).reason);
    if let Some(at) = reason
        .filter(|_| ingest)
        .and_then(|reason| Reason::COUNTED.iter().position(|r| *r == reason))
    {
        telemetry.rejected[at].fetch_add(1, Ordering::Relaxed);
    }
    response
}

/// `GET /livez`: the process answers.
#[utoipa::path(get, path = "/livez", tag = "operate", responses((status = 200, description = "alive", body = String)))]
pub(super) async fn livez() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: 503 as soon as shutdown begins, or while the writer cannot store events; on a
/// cluster node also while it cannot write through the cluster, has not caught up with it, or its
/// rules are not the cluster's.
#[utoipa::path(get, path = "/readyz", tag = "operate",
    responses((status = 200, description = "ready", body = String),
        (status = 503, description = "draining, storage failing, or (cluster mode) halted, cut off from the stream, or catching up; the body says which", body = String)))]
pub(super) async fn readyz(State(state): State<AppState>) -> (StatusCode, String) {
    let unavailable = |why: &str| (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n"));
    if *state.draining.borrow() {
        return unavailable("shutting down");
    }
    if let Err(why) = state.engine.cluster_readiness(state.ready_lag_groups) {
        return unavailable(&why.to_string());
    }
    if !state.engine.writer_running() || state.engine.storage_failure().is_some() {
        return unavailable("storage unavailable");
    }
    if let Some(why) = state.engine.cluster_refusal() {
        return unavailable(&format!("rules differ from the cluster's: {why}"));
    }
    (StatusCode::OK, "ready\n".to_owned())
}

/// `GET /metrics`: Prometheus text format. Public unless `api.metrics_auth` is set; then an auditor
/// or admin key is needed (the figures are server-wide, which a writer does not see elsewhere).
#[utoipa::path(get, path = "/metrics", tag = "operate",
    responses((status = 200, description = "Prometheus text exposition format 0.0.4", body = String, content_type = "text/plain"),
        (status = 401, description = "with metrics_auth: no, unknown, expired, disabled or revoked key", body = super::ErrorJson),
        (status = 403, description = "with metrics_auth: a writer key", body = super::ErrorJson)),
    security((), ("bearer" = [])))]
pub(super) async fn metrics(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
) -> Result<Response, super::ApiError> {
    if state.metrics_auth {
        let caller = super::authenticate(&headers, &state)?;
        if caller.role == crate::auth::Role::Writer {
            return Err(super::ApiError::forbidden(
                "/metrics is server-wide: it needs an auditor or admin key",
                "authorization",
            ));
        }
    }
    Ok(render_metrics(&state))
}

fn render_metrics(state: &AppState) -> Response {
    let mut out = String::with_capacity(16 * 1024);
    ingest_metrics(&mut out, state);
    request_durations(&mut out, &state.telemetry);
    if let Some(report) = state.engine.replica_progress() {
        cluster_metrics(&mut out, &report, state.engine.stream_first_position());
    }
    storage_metrics(&mut out, state);
    let content_type = [(
        header::CONTENT_TYPE,
        "text/plain; version=0.0.4; charset=utf-8",
    )];
    (content_type, out).into_response()
}

/// What ingest took and refused, and what its commits cost.
fn ingest_metrics(out: &mut String, state: &AppState) {
    let engine = &state.engine;
    let ingested = engine.counters().requests_processed.load(Ordering::Relaxed);
    single(
        out,
        "mcplog_events_ingested_total",
        "counter",
        "Events acknowledged as durable since start.",
        ingested,
    );
    family(
        out,
        "mcplog_ingest_rejected_total",
        "counter",
        "Ingest requests refused, by reason.",
    );
    for (reason, n) in Reason::COUNTED.iter().zip(&state.telemetry.rejected) {
        let (reason, n) = (reason.label(), n.load(Ordering::Relaxed));
        let _ = writeln!(
            out,
            "mcplog_ingest_rejected_total{{reason=\"{reason}\"}} {n}"
        );
    }
    family(
        out,
        "mcplog_otlp_spans_total",
        "counter",
        "Spans received on /v1/traces, by outcome: stored, duplicate (stored before), rejected, or ignored (not an MCP tool call).",
    );
    for (outcome, n) in SpanOutcome::ALL.iter().zip(&state.telemetry.otlp_spans) {
        let (outcome, n) = (outcome.label(), n.load(Ordering::Relaxed));
        let _ = writeln!(out, "mcplog_otlp_spans_total{{outcome=\"{outcome}\"}} {n}");
    }
    single(
        out,
        "mcplog_keys_previous_secret_total",
        "counter",
        "Requests accepted with a key signed by a previous master secret (security.previous_master_secrets); once it stops growing, the previous secret can be removed.",
        state.keys.previous_secret_uses(),
    );
    family(
        out,
        "mcplog_fsync_seconds",
        "histogram",
        "Time of each group commit: one write and one fdatasync.",
    );
    engine
        .fsync_seconds()
        .render(out, "mcplog_fsync_seconds", "");
}

/// A cluster node's place in the stream.
fn cluster_metrics(out: &mut String, report: &crate::engine::replica::Report, stream_first: u64) {
    single(
        out,
        "mcplog_cluster_applied_position",
        "gauge",
        "Cluster mode: stream position of the last group this node applied.",
        report.applied.position,
    );
    single(
        out,
        "mcplog_cluster_applied_seq",
        "gauge",
        "Cluster mode: the last seq this node applied.",
        report.applied.next_seq - 1,
    );
    single(
        out,
        "mcplog_cluster_stream_first_position",
        "gauge",
        "Cluster mode: the stream's first position, as this node saw it at start and after each trim it made with retention (0: not yet looked at).",
        stream_first,
    );
    single(
        out,
        "mcplog_cluster_lag_groups",
        "gauge",
        "Cluster mode: groups the stream held beyond the last one read, when it was read.",
        report.pending,
    );
    family(
        out,
        "mcplog_cluster_publish_retries_total",
        "counter",
        "Cluster mode: groups offered to the stream again, by reason: moved (another node's group came first; planned again) or unavailable (no answer or no majority).",
    );
    for (reason, n) in [("moved", report.moved), ("unavailable", report.unavailable)] {
        let _ = writeln!(
            out,
            "mcplog_cluster_publish_retries_total{{reason=\"{reason}\"}} {n}"
        );
    }
    single(
        out,
        "mcplog_cluster_skipped_messages_total",
        "counter",
        "Cluster mode: messages of the stream skipped, never applied, as not authenticated groups.",
        report.skipped,
    );
    single(
        out,
        "mcplog_cluster_rules_differ",
        "gauge",
        "Cluster mode: 1 while this node's rules differ from the cluster's and it refuses every write.",
        u64::from(report.rules_differ.is_some()),
    );
    single(
        out,
        "mcplog_cluster_halted",
        "gauge",
        "Cluster mode: 1 once the follower halted on a group that does not continue this node's history.",
        u64::from(report.halted.is_some()),
    );
}

/// The queue, the segments and the records.
fn storage_metrics(out: &mut String, state: &AppState) {
    let engine = &state.engine;
    single(
        out,
        "mcplog_queue_events",
        "gauge",
        "Events accepted and not yet durable.",
        engine.queue_size() as u64,
    );
    let view = engine.view();
    let catalog = &view.catalog;
    single(
        out,
        "mcplog_segments",
        "gauge",
        "Segment files retained.",
        catalog.segments().len() as u64,
    );
    single(
        out,
        "mcplog_storage_bytes",
        "gauge",
        "Bytes of segment files retained.",
        catalog.bytes(),
    );
    single(
        out,
        "mcplog_last_seq",
        "gauge",
        "Seq of the newest durable event.",
        catalog.last_seq().unwrap_or(0),
    );
    let counts = query::record_counts(&view.projection, now_us(), state.stale_after_us);
    drop(view);
    family(
        out,
        "mcplog_records",
        "gauge",
        "Interaction records by status.",
    );
    let by_status = [
        counts.started,
        counts.in_progress,
        counts.completed,
        counts.failed,
        counts.cancelled,
    ];
    for (status, n) in Status::ALL.iter().zip(by_status) {
        let _ = writeln!(out, "mcplog_records{{status=\"{}\"}} {n}", status.as_str());
    }
    single(
        out,
        "mcplog_records_stale",
        "gauge",
        "Active records that started longer than stale_after ago.",
        counts.stale,
    );
    single(
        out,
        "mcplog_records_orphan",
        "gauge",
        "Records with no start event yet.",
        counts.orphan,
    );
}

/// One family with a single unlabelled sample.
fn single(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    family(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

/// `mcplog_http_request_duration_seconds`, by route template and method.
fn request_durations(out: &mut String, telemetry: &HttpTelemetry) {
    family(
        out,
        "mcplog_http_request_duration_seconds",
        "histogram",
        "HTTP request latency by route template and method.",
    );
    for (route, histograms) in telemetry.requests.iter().enumerate() {
        let name = Route::ALL.get(route).map_or("unmatched", |r| r.path());
        for (method, histogram) in histograms.iter().enumerate() {
            if histogram.count() > 0 {
                let labels = format!("route=\"{name}\",method=\"{}\"", METHODS[method]);
                histogram.render(out, "mcplog_http_request_duration_seconds", &labels);
            }
        }
    }
}
