//! `POST /v1/traces`: the OTLP/HTTP trace receiver. MCP tool-call spans become interactions
//! (the rules are in `otlp::map_span` and README.md); other spans are counted and dropped.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use prost::Message;

use super::ingest::{check_item, read_body, store_partially, Checked};
use super::{ApiError, AppState};
use crate::auth::{Principal, Role};
use crate::otlp::{self, Encoding, Mapped};

/// What became of the spans of requests, for `/metrics`.
pub const SPAN_OUTCOMES: [&str; 4] = ["stored", "duplicate", "rejected", "ignored"];

/// An OTLP `ExportTraceServiceRequest`, protobuf or JSON; answered with an
/// `ExportTraceServiceResponse` in the same encoding.
#[utoipa::path(post, path = "/v1/traces", tag = "ingest",
    request_body(content = Vec<u8>, description = "an OTLP ExportTraceServiceRequest (application/x-protobuf or application/json)", content_type = "application/x-protobuf"),
    responses((status = 200, description = "an ExportTraceServiceResponse; partial_success counts rejected spans", content_type = "application/x-protobuf"),
        (status = 400, body = super::ErrorJson), (status = 401, body = super::ErrorJson), (status = 403, body = super::ErrorJson),
        (status = 413, body = super::ErrorJson), (status = 415, body = super::ErrorJson), (status = 503, body = super::ErrorJson),
        (status = 507, body = super::ErrorJson)),
    security(("bearer" = [])))]
pub(super) async fn traces(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let encoding = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(Encoding::of_content_type);
    let Some(encoding) = encoding else {
        return ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "OTLP/HTTP takes Content-Type application/x-protobuf or application/json",
        )
        .with_field("content-type")
        .into_response();
    };
    match receive(&state, &principal, &headers, body, encoding).await {
        Ok(response) => response,
        Err(err) => refusal(err, encoding),
    }
}

async fn receive(
    state: &AppState,
    principal: &Principal,
    headers: &HeaderMap,
    body: Body,
    encoding: Encoding,
) -> Result<Response, ApiError> {
    if principal.role == Role::Auditor {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "an auditor key may not write events",
        ));
    }
    let limits = state.limits;
    let bytes = read_body(
        headers,
        body,
        otlp::BODY_BYTES_MAX,
        "the OTLP body limit",
        limits.body_read_timeout,
    )
    .await?;
    let export = otlp::split(&bytes, encoding).map_err(|err| {
        let status = match err {
            otlp::ExportError::Malformed { .. } => StatusCode::BAD_REQUEST,
            otlp::ExportError::TooManySpans { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        };
        ApiError::new(status, "bad_export", err.to_string()).with_field("body")
    })?;

    // Map span by span: only one span is decoded at a time.
    let mut tally = [0u64; SPAN_OUTCOMES.len()];
    let mut refusals: Vec<String> = Vec::new();
    // Each tool call's event bodies, and which span they came from.
    let mut bodies: Vec<(usize, String)> = Vec::new();
    let mut spans = 0;
    for resource in &export.resources {
        let service_name = resource.service_name();
        for raw in &resource.spans {
            let mapped = raw.decode().and_then(|span| {
                let mcp_id = match &principal.mcp_id {
                    Some(bound) => Some(bound.to_string()),
                    None => service_name.clone()?,
                };
                otlp::map_span(&span, mcp_id.as_deref())
            });
            match mapped {
                Ok(Mapped::Ignored) => tally[3] += 1,
                Ok(Mapped::ToolCall(events)) => {
                    bodies.extend(events.into_iter().map(|e| (spans, e.body)));
                    spans += 1;
                }
                Err(reason) => {
                    tally[2] += 1;
                    refusals.push(reason);
                }
            }
        }
    }
    drop(export);

    // Every event is checked as a client's would be; a span with a refused event is refused
    // whole, so no half of a span is stored.
    let checked: Vec<Checked<'_>> = bodies
        .iter()
        .enumerate()
        .map(|(index, (_, body))| check_item(index, body, principal, &limits))
        .collect();
    let mut refused_span = vec![None; spans];
    for ((span, _), item) in bodies.iter().zip(&checked) {
        if let Err((_, error)) = item {
            refused_span[*span].get_or_insert_with(|| error.message.clone());
        }
    }
    if !bodies.is_empty() {
        // The tool calls' events, as a batch's would be.
        state
            .rate_limits
            .check(principal, u32::try_from(bodies.len()).unwrap_or(u32::MAX))?;
    }
    let mut kept = Vec::with_capacity(checked.len());
    let mut kept_span = Vec::with_capacity(checked.len());
    for ((span, _), item) in bodies.iter().zip(checked) {
        if refused_span[*span].is_none() {
            kept.push(item);
            kept_span.push(*span);
        }
    }
    // Submitted in batch-sized parts, so a large export never needs more of the queue than a
    // batch does; a part refused whole (a full queue) fails the request, and the exporter's
    // retry finds the parts already stored as duplicates.
    let mut outcome = vec![None::<&'static str>; spans];
    let mut kept_span = kept_span.into_iter();
    let mut kept = kept.into_iter().peekable();
    while kept.peek().is_some() {
        let part: Vec<Checked<'_>> = kept.by_ref().take(limits.batch_events_max).collect();
        let answer = store_partially(state, principal, part).await?;
        for (result, span) in answer.results.into_iter().zip(kept_span.by_ref()) {
            let slot = &mut outcome[span];
            match (result.status, &result.error) {
                ("error", Some(error)) => {
                    refused_span[span].get_or_insert_with(|| error.message.clone());
                }
                ("stored", _) => *slot = Some("stored"),
                (_, _) => {
                    slot.get_or_insert("duplicate");
                }
            }
        }
    }
    for (span, refused) in refused_span.into_iter().enumerate() {
        match refused {
            Some(reason) => {
                tally[2] += 1;
                refusals.push(reason);
            }
            None if outcome[span] == Some("stored") => tally[0] += 1,
            None => tally[1] += 1,
        }
    }
    state.telemetry.count_spans(tally);

    let [stored, duplicate, rejected, ignored] = tally;
    if rejected > 0 && stored + duplicate + ignored == 0 {
        // Nothing of the request was taken: a permanent refusal, which OTLP answers with 400.
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_spans",
            summary(rejected, &refusals),
        )
        .with_field("body"));
    }
    let message = if rejected > 0 {
        summary(rejected, &refusals)
    } else {
        String::new()
    };
    let body = otlp::response(encoding, rejected, message);
    Ok(([(header::CONTENT_TYPE, encoding.content_type())], body).into_response())
}

/// Most refusal reasons an answer quotes; the count says how many there were.
const REASONS_QUOTED_MAX: usize = 3;

fn summary(rejected: u64, refusals: &[String]) -> String {
    let shown: Vec<&str> = refusals
        .iter()
        .take(REASONS_QUOTED_MAX)
        .map(String::as_str)
        .collect();
    format!("{rejected} span(s) refused: {}", shown.join("; "))
}

/// A refusal in the request's encoding: OTLP/HTTP answers a protobuf request with a protobuf
/// `google.rpc.Status`; a JSON request gets mcplog's JSON error.
fn refusal(err: ApiError, encoding: Encoding) -> Response {
    if encoding == Encoding::Json {
        return err.into_response();
    }
    let status = otlp::RpcStatus::for_http(err.status.as_u16(), err.message);
    let mut response = (
        err.status,
        [(header::CONTENT_TYPE, encoding.content_type())],
        status.encode_to_vec(),
    )
        .into_response();
    if let Some(seconds) = err.retry_after_s {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}
