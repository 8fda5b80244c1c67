//! `GET /api/v2/interactions/{id}` and `GET /api/v2/interactions/{id}/events`.
//!
//! Records come from the projection; their payloads are read from the mapped segments.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use serde_json::value::RawValue;

use super::{ApiError, AppState};
use crate::auth::{hex, Principal};
use crate::engine::View;
use crate::event::{payload_of, Action};
use crate::projector::Record;

/// The record view of one interaction (SPEC §3).
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
    params(("id" = String, Path, description = "interaction_id")),
    responses((status = 200, body = RecordJson), (status = 401, body = super::ErrorJson), (status = 404, body = super::ErrorJson)),
    security(("bearer" = [])))]
pub(super) async fn one(
    State(state): State<AppState>,
    principal: Principal,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<RecordJson>, ApiError> {
    let Path(id) = id.map_err(bad_path)?;
    let view = state.engine.view();
    let record = visible(&view, &principal, &id)?;
    record_json(&view, record).map(Json)
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct EventsJson {
    interaction_id: String,
    events: Vec<EventJson>,
}

#[utoipa::path(get, path = "/api/v2/interactions/{id}/events", tag = "read",
    params(("id" = String, Path, description = "interaction_id")),
    responses((status = 200, body = EventsJson), (status = 401, body = super::ErrorJson), (status = 404, body = super::ErrorJson)),
    security(("bearer" = [])))]
pub(super) async fn events(
    State(state): State<AppState>,
    principal: Principal,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<EventsJson>, ApiError> {
    let Path(id) = id.map_err(bad_path)?;
    let view = state.engine.view();
    let record = visible(&view, &principal, &id)?;
    let mut events = Vec::with_capacity(record.event_count() as usize);
    for seq in view.projection.events_of(record) {
        let event = read(&view, seq, |e| EventJson {
            seq: e.seq,
            received_at: e.received_at_us as f64 / 1e6,
            key_id: hex(&e.key_id),
            event: raw(e.body),
        })?;
        events.push(event);
    }
    Ok(Json(EventsJson {
        interaction_id: id,
        events,
    }))
}

pub(super) fn record_json(view: &View, record: &Record) -> Result<RecordJson, ApiError> {
    let empty = || raw("{}");
    let payload = |seq: Option<u64>| -> Result<Option<(Action, Box<RawValue>)>, ApiError> {
        let Some(seq) = seq else { return Ok(None) };
        read(view, seq, |e| {
            (
                e.action,
                payload_of(e.body, e.action).map_or_else(empty, |p| raw(p.get())),
            )
        })
        .map(Some)
    };
    let request_data = payload(record.start_seq())?.map_or_else(empty, |(_, p)| p);
    let (mut result_data, mut error_data, mut cancel_data) = (empty(), empty(), empty());
    if let Some((action, data)) = payload(record.terminal_seq())? {
        match action {
            Action::Complete => result_data = data,
            Action::Error => error_data = data,
            Action::Cancelled => cancel_data = data,
            Action::Start | Action::Progress => {
                unreachable!("a terminal seq holds a terminal event")
            }
        }
    }
    let mut progress_updates = Vec::new();
    for seq in view.projection.events_of(record) {
        let update = read(view, seq, |e| {
            (e.action == Action::Progress).then(|| Progress {
                timestamp: e.timestamp,
                data: payload_of(e.body, e.action).map_or_else(empty, |p| raw(p.get())),
            })
        })?;
        progress_updates.extend(update);
    }
    Ok(RecordJson {
        interaction_id: view.projection.interaction_id(record).to_owned(),
        mcp_id: view.projection.mcp_name(record.mcp()).to_owned(),
        status: record.status().as_str(),
        start_time: record.start_time(),
        end_time: record.end_time(),
        processing_time: record.processing_time(),
        request_data,
        result_data,
        error_data,
        cancel_data,
        progress_updates,
        metadata: Metadata {
            received_at: record.received_at_us() as f64 / 1e6,
            key_id: hex(&view.projection.key_id(record)),
            first_seq: record.first_seq(),
            last_seq: record.last_seq(),
            event_count: record.event_count() as usize,
            conflicts: record.conflicts(),
        },
    })
}

/// Reads one event from the log; a frame that no longer decodes is a server fault.
fn read<R>(
    view: &View,
    seq: u64,
    f: impl FnOnce(&crate::event::StoredEvent<'_>) -> R,
) -> Result<R, ApiError> {
    match view.catalog.with_event(seq, f) {
        Some(Ok(value)) => Ok(value),
        Some(Err(reason)) => {
            tracing::error!(seq, %reason, "a stored event could not be read back");
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "unreadable_event",
                format!("event {seq} could not be read from storage"),
            ))
        }
        None => Err(ApiError::new(
            StatusCode::GONE,
            "event_not_retained",
            format!("event {seq} is no longer retained"),
        )),
    }
}

fn raw(json: &str) -> Box<RawValue> {
    RawValue::from_string(json.to_owned()).expect("stored JSON was validated on the way in")
}

/// The record, if it exists and the caller may read it. Another mcp_id's record is reported exactly
/// as an unknown one, so a writer cannot learn which ids others use.
fn visible<'v>(view: &'v View, principal: &Principal, id: &str) -> Result<&'v Record, ApiError> {
    view.projection
        .get(id)
        .filter(|r| principal.may_read(view.projection.mcp_name(r.mcp())))
        .ok_or_else(|| unknown(id))
}

fn unknown(id: &str) -> ApiError {
    ApiError::not_found(format!("no interaction {id:?}")).with_field("interaction_id")
}

fn bad_path(rejection: PathRejection) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_path", rejection.body_text())
        .with_field("interaction_id")
}
