//! `POST /api/v2/interactions` and `POST /api/v2/interactions/batch`.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Bytes;
use std::io::Read;

use serde::Serialize;

use super::{ApiError, AppState, ItemError};
use crate::auth::{Principal, Role};
use crate::engine::NewEvent;
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
    let bytes = read_body(
        &headers,
        body,
        state.limits.event_bytes_max,
        "event_bytes_max",
        state.limits.body_read_timeout,
    )
    .await?;
    let text = utf8(&bytes)?;
    let valid = validate(text, &state.limits)?;
    if let Some(refusal) = write_refusal(&principal, &valid.mcp_id) {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", refusal).with_field("mcp_id"));
    }
    let new = NewEvent::from(&valid);
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

/// A JSON array or NDJSON of events; all are stored in one group commit, or none.
#[utoipa::path(post, path = "/api/v2/interactions/batch", tag = "ingest",
    request_body(content = Vec<Object>, description = "a JSON array of events, or NDJSON", content_type = "application/json"),
    responses((status = 200, body = BatchAcceptedJson), (status = 400, body = super::ErrorJson), (status = 401, body = super::ErrorJson),
        (status = 403, body = super::ErrorJson), (status = 409, body = super::ErrorJson), (status = 413, body = super::ErrorJson), (status = 422, body = super::ErrorJson),
        (status = 503, body = super::ErrorJson), (status = 507, body = super::ErrorJson)),
    security(("bearer" = [])))]
pub(super) async fn batch(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<BatchAcceptedJson>, ApiError> {
    let limits = state.limits;
    let bytes = read_body(
        &headers,
        body,
        limits.batch_bytes_max,
        "batch_bytes_max",
        limits.body_read_timeout,
    )
    .await?;
    let text = utf8(&bytes)?;
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
    let mut events = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    let mut forbidden = Vec::new();
    for (index, item) in items.iter().enumerate() {
        if item.len() > limits.event_bytes_max {
            errors.push(ItemError {
                index,
                code: "event_too_large",
                message: format!(
                    "the event is {} bytes; event_bytes_max is {}",
                    item.len(),
                    limits.event_bytes_max
                ),
                field: None,
            });
            continue;
        }
        match validate(item, &limits) {
            Ok(valid) => match write_refusal(&principal, &valid.mcp_id) {
                None => events.push(NewEvent::from(&valid)),
                Some(message) => forbidden.push(ItemError {
                    index,
                    code: "forbidden",
                    message,
                    field: Some("mcp_id".into()),
                }),
            },
            Err(invalid) => errors.push(ItemError {
                index,
                code: invalid.code,
                message: invalid.message,
                field: invalid.field,
            }),
        }
    }
    if errors.is_empty() && !forbidden.is_empty() {
        let message = format!(
            "{} of {} events are for an mcp_id this key may not write; nothing was stored",
            forbidden.len(),
            items.len()
        );
        return Err(ApiError {
            field: Some("mcp_id".into()),
            errors: forbidden,
            ..ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
        });
    }
    if !errors.is_empty() {
        let message = format!(
            "{} of {} events are invalid; nothing was stored",
            errors.len(),
            items.len()
        );
        return Err(ApiError {
            errors,
            ..ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_batch", message)
        });
    }
    let (acks, position) = state.engine.submit(events, principal.key_id).await?;
    let duplicates = acks.iter().filter(|a| a.duplicate).count();
    let seqs: Vec<u64> = acks.iter().map(|a| a.seq).collect();
    Ok(Json(BatchAcceptedJson {
        status: "accepted",
        count: seqs.len(),
        seqs,
        duplicates,
        queue_position: position,
    }))
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

/// Why `principal` may not post an event for `mcp_id`, if it may not.
fn write_refusal(principal: &Principal, mcp_id: &str) -> Option<String> {
    if principal.may_write(mcp_id) {
        return None;
    }
    Some(match principal.role {
        Role::Auditor => "an auditor key may not write events".to_owned(),
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
