//! `POST /api/v2/interactions` and `POST /api/v2/interactions/batch`.

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use super::admit::{Admission, Outcome, Partial};
use super::body::{utf8, BodyLimit};
use super::error::ErrorDetail;
use super::{ApiError, AppState, ItemError};
use crate::auth::Principal;
use crate::event;
use crate::refusal::Code;

/// The answer to one accepted event.
#[derive(Serialize, utoipa::ToSchema)]
pub struct AcceptedJson {
    /// Always `accepted`.
    status: &'static str,
    interaction_id: String,
    /// The event's seq (the first one's, for a retried `event_id`).
    seq: u64,
    /// Events queued ahead of this one, itself included.
    queue_position: usize,
    /// Present and true when the `event_id` was already stored and nothing was appended.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    duplicate: bool,
}

/// The answer to an accepted batch.
#[derive(Serialize, utoipa::ToSchema)]
pub struct BatchAcceptedJson {
    /// Always `accepted`.
    status: &'static str,
    /// Events in the batch.
    count: usize,
    /// Each event's seq, in batch order.
    seqs: Vec<u64>,
    /// Events whose `event_id` was already stored.
    duplicates: usize,
    /// Events queued ahead of the batch's, the batch included.
    queue_position: usize,
}

/// One event; answered once it is durable.
#[utoipa::path(post, path = "/api/v2/interactions", tag = "ingest",
    request_body(content = Object, description = "one event (see the Event schema)", content_type = "application/json"),
    responses((status = 200, body = AcceptedJson), (status = 400, body = super::ErrorJson), (status = 401, body = super::ErrorJson),
        (status = 403, body = super::ErrorJson), (status = 409, body = super::ErrorJson), (status = 413, body = super::ErrorJson), (status = 422, body = super::ErrorJson),
        (status = 503, body = super::ErrorJson), (status = 507, body = super::ErrorJson)),
    security(("bearer" = [])))]
pub(super) async fn one(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<AcceptedJson>, ApiError> {
    let limit = BodyLimit {
        bytes: state.limits.event_bytes_max,
        name: "event_bytes_max",
        code: Code::EventTooLarge,
    };
    let (admission, bytes) = Admission::begin(&state, &principal, &headers, body, limit).await?;
    let text = utf8(&bytes)?;
    let new = match admission.check([(0, text)]).pop().expect("one item") {
        Ok((_, new)) => new,
        Err(refused) => return Err(refused.into()),
    };
    let interaction_id = new.interaction_id().to_owned();
    let stored = admission.store_all(vec![Ok((0, new))]).await?;
    let ack = stored.acks[0];
    Ok(Json(AcceptedJson {
        status: "accepted",
        interaction_id,
        seq: ack.seq,
        queue_position: stored.queue_position,
        duplicate: ack.duplicate,
    }))
}

/// What partial mode answers for one event of a batch.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ItemResultJson {
    /// Position of the event in the batch, from 0.
    index: usize,
    /// `stored`, `duplicate` (its `event_id` was already stored with this body) or `error`.
    status: &'static str,
    /// The event's seq, unless it is an error.
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    /// The status the event alone would have been answered with: 400, 403, 409, 413 or 422.
    #[serde(skip_serializing_if = "Option::is_none")]
    http_status: Option<u16>,
    /// Why the event was not stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorDetail>,
}

/// The 207 answer of a batch in partial mode: one result per event, in batch order.
#[derive(Serialize, utoipa::ToSchema)]
pub struct BatchPartialJson {
    /// Always `partial`.
    status: &'static str,
    /// Events in the batch.
    count: usize,
    /// Events appended now.
    stored: usize,
    /// Events whose `event_id` was already stored with the same body.
    duplicates: usize,
    /// Events refused; nothing of them is stored.
    failed: usize,
    /// Events queued ahead of the batch's, the batch included (0 when nothing was submitted).
    queue_position: usize,
    /// One entry per event.
    results: Vec<ItemResultJson>,
}

/// A JSON array or NDJSON of events. By default all are stored in one group commit, or none;
/// with `?partial=true` the valid ones are stored and the answer is a 207 with a result per
/// event, so one bad event does not cost a batching client the rest.
#[utoipa::path(post, path = "/api/v2/interactions/batch", tag = "ingest",
    params(("partial" = Option<bool>, Query, description = "store the valid events and answer 207 with a result per event (default false: all or nothing)")),
    request_body(content = Vec<Object>, description = "a JSON array of events, or NDJSON", content_type = "application/json"),
    responses((status = 200, body = BatchAcceptedJson), (status = 207, body = BatchPartialJson), (status = 400, body = super::ErrorJson), (status = 401, body = super::ErrorJson),
        (status = 403, body = super::ErrorJson), (status = 409, body = super::ErrorJson), (status = 413, body = super::ErrorJson), (status = 422, body = super::ErrorJson),
        (status = 503, body = super::ErrorJson), (status = 507, body = super::ErrorJson)),
    security(("bearer" = [])))]
pub(super) async fn batch(
    State(state): State<AppState>,
    principal: Principal,
    Query(params): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let partial = partial_param(params)?;
    let limits = state.limits;
    let limit = BodyLimit {
        bytes: limits.batch_bytes_max,
        name: "batch_bytes_max",
        code: Code::BodyTooLarge,
    };
    let (mut admission, bytes) =
        Admission::begin(&state, &principal, &headers, body, limit).await?;
    let text = utf8(&bytes)?;
    let items = split(text, &headers, limits.batch_events_max)?;
    // A batch costs as many tokens as it holds events, valid or not.
    admission.charge(items.len())?;
    let checked = admission.check(items.iter().map(|item| (item.index, item.text)));
    if partial {
        let answer = admission.store_partially(checked).await?;
        return Ok((StatusCode::MULTI_STATUS, Json(partial_json(answer))).into_response());
    }
    let stored = admission.store_all(checked).await?;
    let seqs: Vec<u64> = stored.acks.iter().map(|a| a.seq).collect();
    Ok(Json(BatchAcceptedJson {
        status: "accepted",
        count: seqs.len(),
        duplicates: stored.acks.iter().filter(|a| a.duplicate).count(),
        seqs,
        queue_position: stored.queue_position,
    })
    .into_response())
}

/// A batch body's events: a JSON array or NDJSON, with at least one event and at most `max`.
fn split<'t>(
    text: &'t str,
    headers: &HeaderMap,
    max: usize,
) -> Result<Vec<event::BatchItem<'t>>, ApiError> {
    if !declared_ndjson(headers) && event::is_single_object(text) {
        return Err(ApiError::new(
            Code::NotABatch,
            "the body is one JSON object, not a batch: send a JSON array of events, NDJSON (as \
             Content-Type: application/x-ndjson when it is one line), or post a single event to \
             /api/v2/interactions",
        )
        .with_field("body"));
    }
    let items = event::split_batch(text, max)?;
    if items.is_empty() {
        return Err(ApiError::new(Code::EmptyBatch, "the batch holds no events").with_field("body"));
    }
    Ok(items)
}

/// The 207 answer of a partial batch.
fn partial_json(partial: Partial) -> BatchPartialJson {
    let (mut stored, mut duplicates, mut failed) = (0, 0, 0);
    let results: Vec<ItemResultJson> = partial
        .outcomes
        .into_iter()
        .map(|(index, outcome)| match outcome {
            Outcome::Stored(seq) => {
                stored += 1;
                ItemResultJson::ok(index, "stored", seq)
            }
            Outcome::Duplicate(seq) => {
                duplicates += 1;
                ItemResultJson::ok(index, "duplicate", seq)
            }
            Outcome::Refused(error) => {
                failed += 1;
                ItemResultJson::refused(error)
            }
        })
        .collect();
    BatchPartialJson {
        status: "partial",
        count: results.len(),
        stored,
        duplicates,
        failed,
        queue_position: partial.queue_position,
        results,
    }
}

/// Whether the client declared its body NDJSON (`Content-Type: application/x-ndjson`).
fn declared_ndjson(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/x-ndjson"))
}

/// The `partial` parameter: `true` or `false`, at most once; no other parameter is taken.
fn partial_param(params: Vec<(String, String)>) -> Result<bool, ApiError> {
    let params = super::checked_params(params, &["partial"])?;
    match params.first().map(|(_, value)| value.as_str()) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(ApiError::bad_parameter(
            "partial",
            format!("partial must be true or false, not {other:?}"),
        )),
    }
}

impl ItemResultJson {
    fn ok(index: usize, status: &'static str, seq: u64) -> ItemResultJson {
        ItemResultJson {
            index,
            status,
            seq: Some(seq),
            http_status: None,
            error: None,
        }
    }

    fn refused(error: ItemError) -> ItemResultJson {
        ItemResultJson {
            index: error.index,
            status: "error",
            seq: None,
            http_status: Some(error.status().as_u16()),
            error: Some(ErrorDetail {
                code: error.code,
                message: error.message,
                field: error.field,
                errors: Vec::new(),
            }),
        }
    }
}
