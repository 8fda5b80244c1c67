//! `GET /api/v2/interactions/{id}` and `GET /api/v2/interactions/{id}/events`.
//!
//! Records come from the projection; their payloads are read from the mapped segments.

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use hyper::body::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;

use super::{ApiError, AppState};
use crate::auth::{hex, Principal};
use crate::engine::View;
use crate::event::{payload_of, Action};
use crate::projector::Record;
use crate::refusal::Code;
use crate::scope::Scope;

/// The record view of one interaction: the fold of its events (`projector`).
#[derive(Serialize, utoipa::ToSchema)]
pub struct RecordJson {
    interaction_id: String,
    mcp_id: String,
    status: &'static str,
    start_time: Option<f64>,
    end_time: Option<f64>,
    processing_time: Option<f64>,
    #[schema(value_type = Object)]
    request_data: Box<RawValue>,
    #[schema(value_type = Object)]
    result_data: Box<RawValue>,
    #[schema(value_type = Object)]
    error_data: Box<RawValue>,
    #[schema(value_type = Object)]
    cancel_data: Box<RawValue>,
    progress_updates: Vec<Progress>,
    metadata: Metadata,
}

#[derive(Serialize, utoipa::ToSchema)]
struct Progress {
    timestamp: f64,
    #[schema(value_type = Object)]
    data: Box<RawValue>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct Metadata {
    received_at: f64,
    key_id: String,
    first_seq: u64,
    last_seq: u64,
    event_count: usize,
    conflicts: u32,
}

/// `EventJson` but its `event`, in its order.
#[derive(Serialize)]
struct EventHead {
    seq: u64,
    received_at: f64,
    key_id: String,
}

/// One stored event as the API shows it: what the server knows, and the client's event verbatim.
#[derive(Serialize, utoipa::ToSchema)]
pub struct EventJson {
    seq: u64,
    received_at: f64,
    key_id: String,
    /// The client's event, byte for byte.
    #[schema(value_type = Object)]
    event: Box<RawValue>,
}

#[utoipa::path(get, path = "/api/v2/interactions/{id}", tag = "read",
    params(("id" = String, Path, description = "interaction_id"),
        ("mcp_id" = Option<String>, Query, description = "the interaction's mcp_id: needed by an auditor or admin when several mcp_ids use the id"),
        ("min_seq" = Option<u64>, Query, description = "read-your-writes: a seq a write was answered with. Beyond this server's log: 409 min_seq_ahead at once; on a cluster node, waited for (at most 5s), then 503 not_yet_applied")),
    responses((status = 200, body = RecordJson), (status = 400, body = super::ErrorJson), (status = 401, body = super::ErrorJson), (status = 404, body = super::ErrorJson),
        (status = 409, description = "ambiguous_id: several mcp_ids use this id, name one with ?mcp_id=; min_seq_ahead: min_seq is beyond every seq this single node has stored", body = super::ErrorJson), (status = 503, body = super::ErrorJson)),
    security(("bearer" = [])))]
pub(super) async fn one(
    State(state): State<AppState>,
    principal: Principal,
    id: Result<Path<String>, PathRejection>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let Path(id) = id.map_err(bad_path)?;
    let asked = record_params(&state, &principal, params).await?;
    let view = state.engine.view();
    let record = visible(&view, &principal, &id, asked.as_deref())?;
    let mut parts = Parts::default();
    record_parts(&view, record, &mut parts)?;
    Ok(parts.into_response())
}

/// A JSON answer as pieces: the small ones written here, the stored payloads as
/// [`bytes::Bytes`] into the segments' mappings. A read holds a few words per piece and no copy
/// of any payload, however large the record: its memory is bounded by its number of events
/// (`interaction_events_max`), not their bytes.
#[derive(Default)]
pub(super) struct Parts {
    pieces: Vec<Bytes>,
    /// Text written since the last stored piece.
    text: String,
}

impl Parts {
    pub(super) fn text(&mut self, text: &str) {
        self.text.push_str(text);
    }

    /// A value as serde_json writes it (strings escaped, numbers as `RecordJson` has them).
    pub(super) fn json(&mut self, value: &impl Serialize) {
        let text = serde_json::to_string(value).expect("plain values serialize");
        self.text.push_str(&text);
    }

    pub(super) fn stored(&mut self, bytes: Bytes) {
        self.flush();
        self.pieces.push(bytes);
    }

    fn flush(&mut self) {
        if !self.text.is_empty() {
            self.pieces
                .push(Bytes::from(std::mem::take(&mut self.text)));
        }
    }

    pub(super) fn into_response(mut self) -> Response {
        self.flush();
        let body = Body::from_stream(futures_util::stream::iter(
            self.pieces
                .into_iter()
                .map(Ok::<_, std::convert::Infallible>),
        ));
        ([(header::CONTENT_TYPE, "application/json")], body).into_response()
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct EventsJson {
    interaction_id: String,
    events: Vec<EventJson>,
}

#[utoipa::path(get, path = "/api/v2/interactions/{id}/events", tag = "read",
    params(("id" = String, Path, description = "interaction_id"),
        ("mcp_id" = Option<String>, Query, description = "the interaction's mcp_id: needed by an auditor or admin when several mcp_ids use the id"),
        ("min_seq" = Option<u64>, Query, description = "read-your-writes: a seq a write was answered with. Beyond this server's log: 409 min_seq_ahead at once; on a cluster node, waited for (at most 5s), then 503 not_yet_applied")),
    responses((status = 200, body = EventsJson), (status = 400, body = super::ErrorJson), (status = 401, body = super::ErrorJson), (status = 404, body = super::ErrorJson),
        (status = 409, description = "ambiguous_id: several mcp_ids use this id, name one with ?mcp_id=; min_seq_ahead: min_seq is beyond every seq this single node has stored", body = super::ErrorJson), (status = 410, body = super::ErrorJson), (status = 503, body = super::ErrorJson)),
    security(("bearer" = [])))]
pub(super) async fn events(
    State(state): State<AppState>,
    principal: Principal,
    id: Result<Path<String>, PathRejection>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let Path(id) = id.map_err(bad_path)?;
    let asked = record_params(&state, &principal, params).await?;
    let view = state.engine.view();
    let record = visible(&view, &principal, &id, asked.as_deref())?;
    // The shape of `EventsJson`, written in pieces.
    let mut parts = Parts::default();
    parts.text("{\"interaction_id\":");
    parts.json(&id);
    parts.text(",\"events\":[");
    for (n, seq) in view.projection.events_of(record).enumerate() {
        let (head, body) = read_shared(&view, seq, |e, share| {
            // A body that is not JSON (altered under its checksum) is unreadable, not served.
            serde_json::from_str::<serde::de::IgnoredAny>(e.body).ok()?;
            let head = serde_json::to_string(&EventHead {
                seq: e.seq,
                received_at: e.received_at_us as f64 / 1e6,
                key_id: hex(&e.key_id),
            })
            .expect("plain values serialize");
            Some((head, share(e.body)))
        })?;
        if n > 0 {
            parts.text(",");
        }
        // `{"seq":..,"received_at":..,"key_id":"..",` then `"event":<stored bytes>}`.
        parts.text(&head[..head.len() - 1]);
        parts.text(",\"event\":");
        parts.stored(body);
        parts.text("}");
    }
    parts.text("]}");
    Ok(parts.into_response())
}

/// Writes `record` as `RecordJson` into `parts`: its payloads as stored pieces.
pub(super) fn record_parts(
    view: &View,
    record: &Record,
    parts: &mut Parts,
) -> Result<(), ApiError> {
    let payloads = record_payloads(view, record)?;
    // Field by field in `RecordJson`'s order, scalars as serde_json writes them.
    parts.text("{\"interaction_id\":");
    parts.json(&view.projection.interaction_id(record));
    parts.text(",\"mcp_id\":");
    parts.json(&view.projection.mcp_name(record.mcp()));
    parts.text(",\"status\":");
    parts.json(&record.status().as_str());
    parts.text(",\"start_time\":");
    parts.json(&record.start_time());
    parts.text(",\"end_time\":");
    parts.json(&record.end_time());
    parts.text(",\"processing_time\":");
    parts.json(&record.processing_time());
    for (name, payload) in [
        ("request_data", payloads.request_data),
        ("result_data", payloads.result_data),
        ("error_data", payloads.error_data),
        ("cancel_data", payloads.cancel_data),
    ] {
        parts.text(&format!(",\"{name}\":"));
        parts.stored(payload);
    }
    parts.text(",\"progress_updates\":[");
    for (n, (timestamp, payload)) in payloads.progress_updates.into_iter().enumerate() {
        parts.text(if n == 0 {
            "{\"timestamp\":"
        } else {
            ",{\"timestamp\":"
        });
        parts.json(&timestamp);
        parts.text(",\"data\":");
        parts.stored(payload);
        parts.text("}");
    }
    parts.text("],\"metadata\":");
    parts.json(&Metadata {
        received_at: record.received_at_us() as f64 / 1e6,
        key_id: hex(&view.projection.key_id(record)),
        first_seq: record.first_seq(),
        last_seq: record.last_seq(),
        event_count: record.event_count() as usize,
        conflicts: record.conflicts(),
    });
    parts.text("}");
    Ok(())
}

/// A record's payloads, each shared from its stored event (`{}` where the client sent none).
struct Payloads {
    request_data: Bytes,
    result_data: Bytes,
    error_data: Bytes,
    cancel_data: Bytes,
    progress_updates: Vec<(f64, Bytes)>,
}

/// Reads `record`'s payloads from its stored events.
fn record_payloads(view: &View, record: &Record) -> Result<Payloads, ApiError> {
    // The payload field of a stored body, shared, or `None` in the outer option when the client
    // sent none (`{}`); `None` overall when the body is not JSON.
    let data = |body: &str, action: Action, share: &dyn Fn(&str) -> Bytes| match payload_of(
        body, action,
    ) {
        Ok(Some(payload)) => Some(Some(share(payload.get()))),
        Ok(None) => Some(None),
        Err(_) => None,
    };
    let empty = || Bytes::from_static(b"{}");
    // One pass over the record's events, each frame decoded and each body parsed once: the
    // start and first terminal events give their payloads, progress events their updates.
    let (start_seq, terminal_seq) = (record.start_seq(), record.terminal_seq());
    let mut payloads = Payloads {
        request_data: empty(),
        result_data: empty(),
        error_data: empty(),
        cancel_data: empty(),
        progress_updates: Vec::new(),
    };
    for seq in view.projection.events_of(record) {
        let wanted = Some(seq) == start_seq || Some(seq) == terminal_seq;
        let read = read_shared(view, seq, |e, share| {
            if !wanted && e.action != Action::Progress {
                return Some(None);
            }
            let payload = data(e.body, e.action, share)?.unwrap_or_else(empty);
            Some(Some((e.action, e.timestamp, payload)))
        })?;
        let Some((action, timestamp, payload)) = read else {
            continue;
        };
        match action {
            Action::Start if Some(seq) == start_seq => payloads.request_data = payload,
            Action::Progress => payloads.progress_updates.push((timestamp, payload)),
            Action::Complete if Some(seq) == terminal_seq => payloads.result_data = payload,
            Action::Error if Some(seq) == terminal_seq => payloads.error_data = payload,
            Action::Cancelled if Some(seq) == terminal_seq => payloads.cancel_data = payload,
            // A second start or terminal event: kept in the log, not applied.
            _ => {}
        }
    }
    Ok(payloads)
}

/// Reads stored event `seq` through `f`, which answers `None` when the event's body is not JSON
/// (altered after its checksum was made): reported as unreadable, never served as if empty. As
/// `Catalog::with_event_shared`, with the event's text shareable as [`Bytes`] into its mapping.
fn read_shared<R>(
    view: &View,
    seq: u64,
    f: impl FnOnce(&crate::event::StoredEvent<'_>, &dyn Fn(&str) -> Bytes) -> Option<R>,
) -> Result<R, ApiError> {
    let read = view.catalog.with_event_shared(seq, f).map(|read| {
        read.and_then(|value| value.ok_or_else(|| "the stored body is not JSON".into()))
    });
    unreadable_or_gone(seq, read)
}

/// A read's outcome: the value, a 500 for an event that cannot be read, a 410 for one no longer
/// retained.
fn unreadable_or_gone<R>(seq: u64, read: Option<Result<R, String>>) -> Result<R, ApiError> {
    match read {
        Some(Ok(value)) => Ok(value),
        Some(Err(reason)) => {
            tracing::error!(seq, %reason, "a stored event could not be read back");
            Err(ApiError::new(
                Code::UnreadableEvent,
                format!("event {seq} could not be read from storage"),
            ))
        }
        None => Err(ApiError::new(
            Code::EventNotRetained,
            format!("event {seq} is no longer retained"),
        )),
    }
}

/// The record of `id` the caller may read. An interaction is (mcp_id, interaction_id):
/// - a writer reads its own mcp_id's; another mcp_id's record is reported exactly as an unknown
///   one, so a writer cannot learn which ids others use;
/// - an auditor or admin names the mcp_id with `?mcp_id=`, or leaves it out when only one mcp_id
///   uses the id; when several do, the answer is 409 listing them.
fn visible<'v>(
    view: &'v View,
    principal: &Principal,
    id: &str,
    asked: Option<&str>,
) -> Result<&'v Record, ApiError> {
    let projection = &view.projection;
    match principal.scope().narrow(asked) {
        Scope::Only(mcp_id) => projection.get(mcp_id, id),
        Scope::Nothing => None,
        Scope::All => {
            let mut found = projection.get_any(id);
            let first = found.next();
            let rest: Vec<&Record> = found.collect();
            if let (Some(first), false) = (first, rest.is_empty()) {
                let mut owners: Vec<&str> = std::iter::once(first)
                    .chain(rest)
                    .map(|r| projection.mcp_name(r.mcp()))
                    .collect();
                owners.sort_unstable();
                let shown = owners.len().min(AMBIGUOUS_MCP_IDS_SHOWN);
                return Err(ApiError::new(
                    Code::AmbiguousId,
                    format!(
                        "interaction id {id:?} is used by {} mcp_ids ({}{}); name one with ?mcp_id=",
                        owners.len(),
                        owners[..shown].join(", "),
                        if shown < owners.len() { ", ..." } else { "" }
                    ),
                )
                .with_field("mcp_id"));
            }
            first
        }
    }
    .ok_or_else(|| unknown(id))
}

/// Most mcp_ids named in an ambiguous-id answer.
const AMBIGUOUS_MCP_IDS_SHOWN: usize = 20;

/// The record endpoints' parameters: `mcp_id`, and `min_seq`, checked (and on a cluster node
/// waited for) before the view is read.
async fn record_params(
    state: &AppState,
    principal: &Principal,
    params: Vec<(String, String)>,
) -> Result<Option<String>, ApiError> {
    let mut mcp_id = None;
    for (name, value) in super::checked_params(params, &["mcp_id", "min_seq"])? {
        if name == "min_seq" {
            let seq = value.parse::<u64>().map_err(|_| {
                ApiError::bad_parameter("min_seq", format!("{value:?} is not a seq"))
            })?;
            wait_for_seq(state, principal, seq).await?;
        } else {
            mcp_id = Some(value);
        }
    }
    Ok(mcp_id)
}

/// The longest a cluster node's read waits for `min_seq`.
pub(super) const MIN_SEQ_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(5);

/// Read-your-writes: returns once this node holds seq `seq` (durable and folded).
///
/// A single node announces a seq as durable before it answers the write that carries it, so a
/// `min_seq` beyond its log was never acknowledged by it: 409 `min_seq_ahead` at once, since
/// waiting cannot help unless others happen to write. A cluster node may trail the node that
/// answered the write: it waits at most [`MIN_SEQ_WAIT_MAX`], then answers 503
/// `not_yet_applied`. Neither answer tells a writer key how far the log goes: the position of the
/// whole log is the other mcp_ids' volume.
pub(super) async fn wait_for_seq(
    state: &AppState,
    principal: &Principal,
    seq: u64,
) -> Result<(), ApiError> {
    let mut durable = state.engine.subscribe_durable();
    if !state.cluster_node {
        let last = *durable.borrow();
        if seq <= last {
            return Ok(());
        }
        return Err(ApiError::new(
            Code::MinSeqAhead,
            format!(
                "min_seq {seq} is beyond every seq this server has stored{}; pass a seq it \
                 answered a write with",
                log_end(principal, last)
            ),
        )
        .with_field("min_seq"));
    }
    let reached = tokio::time::timeout(MIN_SEQ_WAIT_MAX, durable.wait_for(|&last| last >= seq))
        .await
        .is_ok_and(|waited| waited.is_ok());
    if reached {
        return Ok(());
    }
    let last = *durable.borrow();
    let message = format!(
        "this node does not hold seq {seq} yet{} (waited {}s)",
        log_end(principal, last),
        MIN_SEQ_WAIT_MAX.as_secs()
    );
    Err(ApiError::new(Code::NotYetApplied, message).with_field("min_seq"))
}

/// ` (it holds seqs up to N)` for a key that reads the whole log; nothing for a writer key.
fn log_end(principal: &Principal, last: u64) -> String {
    if principal.scope() == Scope::All {
        format!(" (it holds seqs up to {last})")
    } else {
        String::new()
    }
}

fn unknown(id: &str) -> ApiError {
    ApiError::not_found(format!("no interaction {id:?}")).with_field("interaction_id")
}

fn bad_path(rejection: PathRejection) -> ApiError {
    ApiError::new(Code::BadPath, rejection.body_text()).with_field("interaction_id")
}
