//! `POST /api/v2/interactions` and `POST /api/v2/interactions/batch`.

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Bytes;
use std::io::Read;

use serde::Serialize;

use super::error::ErrorDetail;
use super::{ApiError, AppState, ItemError};
use crate::auth::{Principal, Role};
use crate::engine::SubmitError;
use crate::event;

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
    // Before the body is read: a key over its rate costs the server as little as possible.
    state.rate_limits.check(&principal, 1)?;
    let bytes = read_body(
        &headers,
        body,
        state.limits.event_bytes_max,
        "event_bytes_max",
        state.limits.body_read_timeout,
    )
    .await?;
    super::still_accepted(&state, &principal)?;
    let text = utf8(&bytes)?;
    let valid = validate(text, &state.limits)?;
    if let Some(refusal) = write_refusal(&principal, &valid.mcp_id) {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", refusal).with_field("mcp_id"));
    }
    let new = state
        .redactor
        .new_event(&valid)
        .map_err(ApiError::invalid)?;
    let mut checked = vec![Ok((0, new))];
    refuse_past_events_max(&state, &mut checked);
    let new = match checked.pop().expect("one event") {
        Ok((_, new)) => new,
        Err((status, error)) => {
            return Err(ApiError {
                field: error.field,
                ..ApiError::new(status, error.code, error.message)
            })
        }
    };
    let interaction_id = new.interaction_id().to_owned();
    let (acks, position) = state.engine.submit(vec![new], principal.key_id).await?;
    let ack = acks[0];
    Ok(Json(AcceptedJson {
        status: "accepted",
        interaction_id,
        seq: ack.seq,
        queue_position: position,
        duplicate: ack.duplicate,
    }))
}

/// What partial mode answers for one event of a batch.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ItemResultJson {
    /// Position of the event in the batch, from 0.
    index: usize,
    /// `stored`, `duplicate` (its `event_id` was already stored with this body) or `error`.
    pub(super) status: &'static str,
    /// The event's seq, unless it is an error.
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    /// The status the event alone would have been answered with: 403, 409, 413 or 422.
    #[serde(skip_serializing_if = "Option::is_none")]
    http_status: Option<u16>,
    /// Why the event was not stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) error: Option<ErrorDetail>,
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
    pub(super) results: Vec<ItemResultJson>,
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
    let bytes = read_body(
        &headers,
        body,
        limits.batch_bytes_max,
        "batch_bytes_max",
        limits.body_read_timeout,
    )
    .await?;
    super::still_accepted(&state, &principal)?;
    let text = utf8(&bytes)?;
    if !declared_ndjson(&headers) && event::is_single_object(text) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "not_a_batch",
            "the body is one JSON object, not a batch: send a JSON array of events, NDJSON (as \
             Content-Type: application/x-ndjson when it is one line), or post a single event to \
             /api/v2/interactions",
        )
        .with_field("body"));
    }
    let items = event::split_batch(text).map_err(ApiError::invalid)?;
    if items.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "empty_batch",
            "the batch holds no events",
        ));
    }
    if items.len() > limits.batch_events_max {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch_too_large",
            format!(
                "the batch holds {} events; batch_events_max is {}",
                items.len(),
                limits.batch_events_max
            ),
        ));
    }
    // A batch costs as many tokens as it holds events, valid or not.
    state
        .rate_limits
        .check(&principal, u32::try_from(items.len()).unwrap_or(u32::MAX))?;
    let mut checked: Vec<Checked> = items
        .iter()
        .map(|item| check_item(item.index, item.text, &principal, &limits, &state.redactor))
        .collect();
    refuse_past_events_max(&state, &mut checked);
    if partial {
        if let Some(refusal) = role_refusal(&principal) {
            return Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", refusal));
        }
        let answer = store_partially(&state, &principal, checked).await?;
        return Ok((StatusCode::MULTI_STATUS, Json(answer)).into_response());
    }
    let stored = store_all_or_nothing(&state, &principal, checked).await;
    // A conflict names events by their place in the submission: in the body, NDJSON's are lines.
    let stored = stored.map_err(|err| match err {
        BatchRefusal::Submit(err) => ApiError::from(renumber(err, |i| items[i].index)),
        BatchRefusal::Api(err) => err,
    });
    Ok(Json(stored?).into_response())
}

/// Whether the client declared its body NDJSON (`Content-Type: application/x-ndjson`).
fn declared_ndjson(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/x-ndjson"))
}

/// A conflict's indexes (its own and an earlier event's) mapped through `index_of`.
fn renumber(err: SubmitError, index_of: impl Fn(usize) -> usize) -> SubmitError {
    match err {
        SubmitError::Conflict(mut conflicts) => {
            for conflict in &mut conflicts {
                conflict.index = index_of(conflict.index);
                if let crate::engine::Holder::Earlier(earlier) = conflict.holder {
                    conflict.holder = crate::engine::Holder::Earlier(index_of(earlier));
                }
            }
            SubmitError::Conflict(conflicts)
        }
        other => other,
    }
}

/// Why an all-or-nothing batch stored nothing: a refusal already answered, or the engine's.
enum BatchRefusal {
    Api(ApiError),
    Submit(SubmitError),
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

/// One event of a batch after the checks that need no storage: valid, writable by the key and
/// redacted (with its index in the batch), or refused with the status it would get alone.
pub(super) type Checked = Result<(usize, event::NewEvent), (StatusCode, ItemError)>;

pub(super) fn check_item(
    index: usize,
    item: &str,
    principal: &Principal,
    limits: &super::Limits,
    redactor: &crate::redact::Redactor,
) -> Checked {
    if item.len() > limits.event_bytes_max {
        let message = format!(
            "the event is {} bytes; event_bytes_max is {}",
            item.len(),
            limits.event_bytes_max
        );
        let error = ItemError {
            index,
            code: "event_too_large",
            message,
            field: None,
        };
        return Err((StatusCode::PAYLOAD_TOO_LARGE, error));
    }
    let invalid = |err: ApiError| {
        let error = ItemError {
            index,
            code: err.code,
            message: err.message,
            field: err.field,
        };
        (StatusCode::UNPROCESSABLE_ENTITY, error)
    };
    let valid = validate(item, limits).map_err(invalid)?;
    if let Some(message) = write_refusal(principal, &valid.mcp_id) {
        let error = ItemError {
            index,
            code: "forbidden",
            message,
            field: Some("mcp_id".into()),
        };
        return Err((StatusCode::FORBIDDEN, error));
    }
    let new = redactor
        .new_event(&valid)
        .map_err(|err| invalid(ApiError::invalid(err)))?;
    Ok((index, new))
}

/// Refuses (409 `interaction_full`) each event that would take its interaction past
/// `interaction_events_max`, counting what is stored and the request's earlier events. An event
/// whose `event_id` is stored already is left to planning (a duplicate is answered as one, never
/// refused as full). Checked against the view when the request is checked: requests for one
/// interaction in flight at once may together pass the cap by their own events, at most.
pub(super) fn refuse_past_events_max(state: &AppState, checked: &mut [Checked]) {
    let max = state.limits.interaction_events_max as u64;
    let view = state.engine.view();
    let mut added: std::collections::HashMap<(String, String), u64> = Default::default();
    for item in checked.iter_mut() {
        let Ok((index, new)) = item else { continue };
        let index = *index;
        let (mcp_id, interaction_id) = (new.mcp_id(), new.interaction_id());
        let known = new
            .event_id()
            .is_some_and(|event_id| view.projection.event_id_entry(mcp_id, event_id).is_some());
        if known {
            continue;
        }
        let stored = view
            .projection
            .get(mcp_id, interaction_id)
            .map_or(0, |record| u64::from(record.event_count()));
        let count = added
            .entry((mcp_id.to_owned(), interaction_id.to_owned()))
            .or_insert(0);
        if stored + *count < max {
            *count += 1;
            continue;
        }
        let interaction_id = interaction_id.to_owned();
        let error = ItemError {
            index,
            code: "interaction_full",
            message: format!(
                "interaction {interaction_id:?} holds {stored} events; interaction_events_max is {max}"
            ),
            field: Some("interaction_id".to_owned()),
        };
        *item = Err((StatusCode::CONFLICT, error));
    }
}

/// The default mode: any refused event refuses the batch (422 listing the invalid ones, else 403
/// listing the forbidden ones), and a conflict refuses it whole too; nothing is stored then.
async fn store_all_or_nothing(
    state: &AppState,
    principal: &Principal,
    checked: Vec<Checked>,
) -> Result<BatchAcceptedJson, BatchRefusal> {
    let count = checked.len();
    let mut events = Vec::with_capacity(count);
    let mut errors = Vec::new();
    let mut forbidden = Vec::new();
    for item in checked {
        match item {
            Ok((_, new)) => events.push(new),
            Err((StatusCode::FORBIDDEN, error)) => forbidden.push(error),
            Err((_, error)) => errors.push(error),
        }
    }
    if !errors.is_empty() {
        let message = format!(
            "{} of {count} events are invalid; nothing was stored",
            errors.len()
        );
        return Err(BatchRefusal::Api(ApiError {
            errors,
            ..ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_batch", message)
        }));
    }
    if !forbidden.is_empty() {
        let message = format!(
            "{} of {count} events are for an mcp_id this key may not write; nothing was stored",
            forbidden.len()
        );
        return Err(BatchRefusal::Api(ApiError {
            field: Some("mcp_id".into()),
            errors: forbidden,
            ..ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
        }));
    }
    let (acks, position) = state
        .engine
        .submit(events, principal.key_id)
        .await
        .map_err(BatchRefusal::Submit)?;
    let duplicates = acks.iter().filter(|a| a.duplicate).count();
    let seqs: Vec<u64> = acks.iter().map(|a| a.seq).collect();
    Ok(BatchAcceptedJson {
        status: "accepted",
        count: seqs.len(),
        seqs,
        duplicates,
        queue_position: position,
    })
}

/// Partial mode: the valid events are submitted as one group; an event whose `event_id`
/// conflicts is answered 409 and the rest submitted again. Each round drops at least one
/// event, so there are at most as many rounds as events, and a conflict stores nothing, so
/// what is stored is exactly what the answer says. A failure of the whole submission (queue
/// full, storage, shutdown) fails the request: nothing of it is stored.
pub(super) async fn store_partially(
    state: &AppState,
    principal: &Principal,
    checked: Vec<Checked>,
) -> Result<BatchPartialJson, ApiError> {
    let count = checked.len();
    let mut results: Vec<Option<ItemResultJson>> = Vec::with_capacity(count);
    // (position in `results`, batch index, event) of every event still to submit.
    let mut pending = Vec::new();
    for (position, item) in checked.into_iter().enumerate() {
        match item {
            Ok((index, new)) => {
                pending.push((position, index, new));
                results.push(None);
            }
            Err((status, error)) => results.push(Some(item_error(status, error))),
        }
    }
    let mut queue_position = 0;
    while !pending.is_empty() {
        let events = pending.iter().map(|(_, _, new)| new.clone()).collect();
        match state.engine.submit(events, principal.key_id).await {
            Ok((acks, position)) => {
                queue_position = position;
                for ((position, index, _), ack) in pending.iter().zip(acks) {
                    results[*position] = Some(ItemResultJson {
                        index: *index,
                        status: if ack.duplicate { "duplicate" } else { "stored" },
                        seq: Some(ack.seq),
                        http_status: None,
                        error: None,
                    });
                }
                break;
            }
            Err(SubmitError::Conflict(conflicts)) if !conflicts.is_empty() => {
                for conflict in &conflicts {
                    let (position, index, _) = pending[conflict.index];
                    let error = ItemError {
                        index,
                        code: "conflict",
                        message: conflict.describe(|earlier| pending[earlier].1),
                        field: Some(conflict.field.to_owned()),
                    };
                    results[position] = Some(item_error(StatusCode::CONFLICT, error));
                }
                let mut position = 0;
                pending.retain(|_| {
                    position += 1;
                    !conflicts.iter().any(|c| c.index == position - 1)
                });
            }
            Err(err) => return Err(err.into()),
        }
    }
    let results: Vec<ItemResultJson> = results
        .into_iter()
        .map(|result| result.expect("every event is answered: refused, stored or conflicting"))
        .collect();
    let tally = |status: &str| results.iter().filter(|r| r.status == status).count();
    Ok(BatchPartialJson {
        status: "partial",
        count,
        stored: tally("stored"),
        duplicates: tally("duplicate"),
        failed: tally("error"),
        queue_position,
        results,
    })
}

fn item_error(status: StatusCode, error: ItemError) -> ItemResultJson {
    ItemResultJson {
        index: error.index,
        status: "error",
        seq: None,
        http_status: Some(status.as_u16()),
        error: Some(ErrorDetail {
            code: error.code.to_owned(),
            message: error.message,
            field: error.field,
            errors: Vec::new(),
        }),
    }
}

/// Validates an event and checks its timestamp against the server's clock.
fn validate<'a>(text: &'a str, limits: &super::Limits) -> Result<event::ValidEvent<'a>, ApiError> {
    let valid = event::validate(text).map_err(ApiError::invalid)?;
    let now_s = crate::clock::now_us() as f64 / 1e6;
    event::check_clock(valid.timestamp, now_s, limits.clock_skew_max.as_secs_f64())
        .map_err(ApiError::invalid)?;
    Ok(valid)
}

/// Reads a whole body, gunzipping it if it says `Content-Encoding: gzip`, and refuses it with 413
/// once it passes `limit` bytes. The limit applies to the decompressed bytes, so a small gzip bomb
/// is refused as soon as it expands past the limit, without inflating the rest.
pub(super) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    limit_name: &str,
    timeout: std::time::Duration,
) -> Result<Bytes, ApiError> {
    if headers.get_all(header::CONTENT_ENCODING).iter().count() > 1 {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_encoding",
            "Content-Encoding is given more than once; send one: identity or gzip",
        )
        .with_field("content-encoding"));
    }
    let gzip = match headers.get(header::CONTENT_ENCODING) {
        None => false,
        Some(value) => match value.to_str().map(str::trim) {
            Ok(v) if v.eq_ignore_ascii_case("identity") => false,
            Ok(v) if v.eq_ignore_ascii_case("gzip") => true,
            _ => {
                let shown = String::from_utf8_lossy(value.as_bytes()).into_owned();
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_encoding",
                    format!("Content-Encoding {shown:?} is not supported; send identity or gzip"),
                )
                .with_field("content-encoding"));
            }
        },
    };
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body exceeds {limit_name} ({limit} bytes)"),
        )
    };
    // Compressed bytes are never more than the limit plus gzip's framing on incompressible data.
    let wire_limit = if gzip {
        limit + limit / 64 + 1024
    } else {
        limit
    };
    let collected = tokio::time::timeout(timeout, Limited::new(body, wire_limit).collect())
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!("the request body did not arrive within body_read_timeout ({timeout:?})"),
            )
            .with_field("body")
        })?;
    let raw = match collected {
        Ok(collected) => collected.to_bytes(),
        Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => return Err(too_large()),
        Err(err) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "unreadable_body",
                format!("the request body could not be read: {err}"),
            ))
        }
    };
    if !gzip {
        return Ok(raw);
    }
    // Inflating is CPU work of up to `limit` bytes: on the blocking pool, so that the async
    // workers go on answering other requests meanwhile.
    let inflated = tokio::task::spawn_blocking(move || {
        let mut inflated = Vec::new();
        // Every member of a multi-member gzip stream, not just the first (and nothing is dropped).
        let mut decoder = flate2::read::MultiGzDecoder::new(&raw[..]).take(limit as u64 + 1);
        decoder.read_to_end(&mut inflated).map(|_| inflated)
    })
    .await
    .map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "inflating failed",
        )
    })?
    .map_err(|err| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_gzip",
            format!("the gzip body does not decompress: {err}"),
        )
        .with_field("content-encoding")
    })?;
    if inflated.len() > limit {
        return Err(too_large());
    }
    Ok(Bytes::from(inflated))
}

const AUDITOR_MAY_NOT_WRITE: &str = "an auditor key may not write events";

/// Why `principal` may post no event at all, if it may not.
pub(super) fn role_refusal(principal: &Principal) -> Option<String> {
    (principal.role == Role::Auditor).then(|| AUDITOR_MAY_NOT_WRITE.to_owned())
}

/// Why `principal` may not post an event for `mcp_id`, if it may not.
fn write_refusal(principal: &Principal, mcp_id: &str) -> Option<String> {
    if principal.may_write(mcp_id) {
        return None;
    }
    Some(match principal.role {
        Role::Auditor => AUDITOR_MAY_NOT_WRITE.to_owned(),
        _ => format!(
            "this key may write events of mcp_id {:?} only, not {mcp_id:?}",
            principal.mcp_id.as_deref().unwrap_or_default()
        ),
    })
}

fn utf8(bytes: &[u8]) -> Result<&str, ApiError> {
    std::str::from_utf8(bytes).map_err(|err| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "not_utf8",
            format!("the request body is not UTF-8: {err}"),
        )
    })
}
